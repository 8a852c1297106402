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

_ATTRIBUTES = r"""
options: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: %s
  platform:
    platforms: posix
"""


class ModuleDocFragment(object):

    # A module that shows in diff mode what it changes.
    DOCUMENTATION = _ATTRIBUTES % "full"

    # A module that changes nothing.
    INFO = _ATTRIBUTES % "none"
