# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for ebpf.oom.observer: the observer is compiled here and sent with the task.

Unless the task names `objects` on the host, each build of bpf/observer.bpf.c
(observer.OBSERVER_VARIANTS: tp_btf, then the raw_tp fallback) is compiled on the
controller against the collection's bundled CO-RE vmlinux.h (once: the compiler's
content-addressed cache; a lock keeps the hosts of one run from compiling it side
by side) and goes to the module as `builds`, base64 in its arguments: no file
transfer, one round trip to the host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.ebpf.oom.plugins.plugin_utils.action import ModuleAction
from ansible_collections.ebpf.oom.plugins.plugin_utils.bundled import observer_builds


class ActionModule(ModuleAction):

    MODULE = "ebpf.oom.observer"

    def execute(self, args, task_vars):
        if args.get("state", "present") == "present" and not args.get("objects"):
            args["builds"] = observer_builds()
        return super(ActionModule, self).execute(args, task_vars)
