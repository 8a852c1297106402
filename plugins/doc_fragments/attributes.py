# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The attributes every module of ebpf.oom shares, written once.

A module extends ansible.builtin.action_common_attributes (the descriptions),
ebpf.oom.attributes (full check mode, POSIX hosts) and one of
ebpf.oom.attributes.diff (it shows what it changes) or ebpf.oom.attributes.info
(it changes nothing, so there is no diff); its own `attributes` add details.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    support: full
  platform:
    platforms: posix
"""

    DIFF = r"""
options: {}
attributes:
  diff_mode:
    support: full
"""

    INFO = r"""
options: {}
attributes:
  diff_mode:
    support: none
"""
