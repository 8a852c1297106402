# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The attributes every module of ebpf.oom shares, written once.

A module extends ansible.builtin.action_common_attributes (the descriptions) and
ebpf.oom.attributes (full check mode, full diff mode, POSIX hosts), or
ebpf.oom.attributes.info when it changes nothing (so it has no diff); its own
`attributes` add details.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # A module that can change the host: it shows in diff mode what it changes.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: linux
"""

    # A module that changes nothing.
    INFO = r"""
options: {}
attributes:
  check_mode:
    details: The module never changes anything; check mode runs it the same way.
    support: full
  diff_mode:
    details: Nothing changes, so there is nothing to show.
    support: none
  platform:
    platforms: linux
"""
