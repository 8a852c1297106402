# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the collection brings along, on the controller: the policy schema, its BPF
headers (sent with ebpf.oom.compile) and the generic program, compiled here once for
ebpf.oom.policy.

Controller side (plugin_utils): used by the action plugins and the tests; imports the
engine's compiler.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import contextlib
import fcntl
import os

from ansible.errors import AnsibleError
from ansible_collections.ebpf.oom.plugins.module_utils import abi, common, compiler
from ansible_collections.ebpf.oom.plugins.module_utils.errors import CompileError
from ansible_collections.ebpf.oom.plugins.module_utils.observer import OBSERVER_SOURCE, OBSERVER_VARIANTS

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BPF_DIR = os.path.join(COLLECTION_ROOT, "bpf")
INCLUDE_DIR = os.path.join(BPF_DIR, "include")
BUNDLED_VMLINUX = os.path.join(INCLUDE_DIR, "vmlinux.h")
# The host command the role installs beside the engine (ebpf.oom.host sends it).
HOST_COMMAND = os.path.join(COLLECTION_ROOT, "roles", "bpf_oom", "files", "ebpf-oom")


def bundled_headers(directory=INCLUDE_DIR):
    """{file name: text} of the *.h files in the collection's bpf/include."""
    headers = {}
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            if name.endswith(".h"):
                with open(os.path.join(directory, name)) as f:
                    headers[name] = f.read()
    return headers


def controller_cache():
    """The compiler cache on the controller: CACHE_DIR when writable, else ~/.cache/ebpf-oom."""
    if os.access(common.CACHE_DIR, os.W_OK):
        return common.CACHE_DIR
    return os.path.join(os.path.expanduser("~"), ".cache", "ebpf-oom")


@contextlib.contextmanager
def one_at_a_time(cache_dir, name):
    """The cache directory, made if missing, with the lock ``name`` held: the hosts of one run
    (forks) wait for one compile of an object instead of each compiling it."""
    if not os.path.isdir(cache_dir):
        os.makedirs(cache_dir, 0o755)
    with open(os.path.join(cache_dir, name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield cache_dir


def compile_generic(cache_dir=None):
    """The generic program's object on the controller (compiled once per source)."""
    try:
        with one_at_a_time(cache_dir or controller_cache(), "generic") as cache:
            built = compiler.compile_object(src=os.path.join(COLLECTION_ROOT, abi.GENERIC_SOURCE),
                                            include_dirs=[BPF_DIR], vmlinux=BUNDLED_VMLINUX, cache_dir=cache)
    except CompileError as e:
        raise AnsibleError("ebpf.oom.policy: compiling %s on the controller failed: %s\n%s"
                           % (abi.GENERIC_SOURCE, e.message, e.log_tail))
    return built["object"]


def observer_builds(cache_dir=None):
    """[{variant, content (base64)}] of the observer's builds, compiled here once."""
    out = []
    with one_at_a_time(cache_dir or controller_cache(), "observer") as cache:
        for variant, defines in OBSERVER_VARIANTS:
            try:
                built = compiler.compile_object(src=os.path.join(BPF_DIR, OBSERVER_SOURCE), defines=defines,
                                                include_dirs=[BPF_DIR], vmlinux=BUNDLED_VMLINUX,
                                                cache_dir=cache)
            except CompileError as e:
                raise AnsibleError("ebpf.oom.observer: compiling the %s build of %s on the controller "
                                   "failed: %s\n%s" % (variant, OBSERVER_SOURCE, e.message, e.log_tail))
            with open(built["object"], "rb") as f:
                out.append({"variant": variant, "content": base64.b64encode(f.read()).decode("ascii")})
    return out
