# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Constants shared by every part of the engine.

Layer 0 (leaf helpers): imports nothing from the engine.

The engine (everything under module_utils) uses only the Python standard
library, so the same files serve the modules, the boot-time restore service
and the tests.  tests/unit/test_layers.py lists the engine's layers: a file
imports only from layers below its own.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

# Kept equal to galaxy.yml's version by tests/unit/test_common.py.
COLLECTION_VERSION = "0.2.0"

# Where pins live (bpffs, RAM): one directory per policy.
BPFFS_MOUNT = "/sys/fs/bpf"
BPFFS_ROOT = os.path.join(BPFFS_MOUNT, "ebpf_oom")

# What survives a reboot: each policy's object and record, for the restore service.
STATE_DIR = "/var/lib/ebpf-oom"

# Content-addressed compiler output and generated vmlinux.h files.
CACHE_DIR = os.environ.get("EBPF_OOM_CACHE", "/var/cache/ebpf-oom")

# The running kernel's BTF.
BTF_VMLINUX = "/sys/kernel/btf/vmlinux"

# Return values of bpf_oom_evaluate_task (bpf/include/ebpf_oom.h has the C side).
NO_BPF_POLICY = 0
BPF_EVAL_ABORT = 1
BPF_EVAL_NEXT = 2
BPF_EVAL_SELECT = 3

# Kernel symbols the hook backend needs, as found in /sys/kernel/btf/vmlinux.
HOOK_FUNC = "bpf_oom_evaluate_task"
NAME_FUNC = "bpf_set_policy_name"
NAME_KFUNC = "set_oom_policy_name"
STRUCT_OPS_SUCCESSOR = "bpf_oom_ops"
# The section of a program on the hook (bpf/include/ebpf_oom.h's EBPF_OOM_HOOK).
HOOK_SECTION = "fmod_ret/" + HOOK_FUNC

# Metadata the compiler embeds in .rodata (readable by bpftool and by verify).
META_PREFIX = "bpf_metadata_"
META_SOURCE_SHA256 = "bpf_metadata_ebpf_oom_src_sha256"
META_VERSION = "bpf_metadata_ebpf_oom_version"
META_POLICY = "bpf_metadata_ebpf_oom_policy"
