# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for ebpf.oom.compile: sends the collection's bundled headers along.

The module runs where the task runs; the headers under the collection's
bpf/include (the minimal CO-RE vmlinux.h, ebpf_oom.h) are only on the
controller, so their text goes with the module arguments (they are small)
and the module stores them in its cache.  A task delegated to localhost
compiles on the controller, where `vmlinux: auto` means the bundled header
(a CO-RE object built once serves every kernel).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible import constants as C
from ansible_collections.ebpf.oom.plugins.plugin_utils.action import ModuleAction
from ansible_collections.ebpf.oom.plugins.plugin_utils.bundled import bundled_headers


class ActionModule(ModuleAction):

    MODULE = "ebpf.oom.compile"

    def execute(self, args, task_vars):
        args["_bundled_headers"] = bundled_headers()
        if args.get("vmlinux", "auto") == "auto" and self._task.delegate_to in C.LOCALHOST:
            args["vmlinux"] = "bundled"
        return super(ActionModule, self).execute(args, task_vars)
