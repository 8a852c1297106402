# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The option of the modules whose action plugin sends the generic program, written once."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options:
  object_sha256:
    description:
      - The sha256 the object must have. The object is then trusted by its content, whoever owns
        the file, and a private copy made by the module is loaded; without it the object must be
        owned by root and writable by no one else.
      - The action plugin sets it for the generic program it sends, a file owned by the
        connecting user when the module runs with C(become).
    type: str
"""
