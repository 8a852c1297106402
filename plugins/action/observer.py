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

import base64
import fcntl
import os

from ansible.errors import AnsibleError
from ansible_collections.ebpf.oom.plugins.module_utils import compiler
from ansible_collections.ebpf.oom.plugins.module_utils.errors import CompileError
from ansible_collections.ebpf.oom.plugins.module_utils.observer import OBSERVER_SOURCE, OBSERVER_VARIANTS
from ansible_collections.ebpf.oom.plugins.plugin_utils.action import ModuleAction
from ansible_collections.ebpf.oom.plugins.plugin_utils.bundled import BPF_DIR, BUNDLED_VMLINUX, controller_cache


def builds(cache_dir=None):
    """[{variant, content (base64)}] of the observer's builds, compiled here once."""
    cache_dir = cache_dir or controller_cache()
    if not os.path.isdir(cache_dir):
        os.makedirs(cache_dir, 0o755)
    out = []
    with open(os.path.join(cache_dir, "observer.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for variant, defines in OBSERVER_VARIANTS:
            try:
                built = compiler.compile_object(src=os.path.join(BPF_DIR, OBSERVER_SOURCE), defines=defines,
                                                include_dirs=[BPF_DIR], vmlinux=BUNDLED_VMLINUX,
                                                cache_dir=cache_dir)
            except CompileError as e:
                raise AnsibleError("ebpf.oom.observer: compiling the %s build of %s on the controller "
                                   "failed: %s\n%s" % (variant, OBSERVER_SOURCE, e.message, e.log_tail))
            with open(built["object"], "rb") as f:
                out.append({"variant": variant, "content": base64.b64encode(f.read()).decode("ascii")})
    return out


class ActionModule(ModuleAction):

    MODULE = "ebpf.oom.observer"

    def execute(self, args, task_vars):
        if args.get("state", "present") == "present" and not args.get("objects"):
            args["builds"] = builds()
        return super(ActionModule, self).execute(args, task_vars)
