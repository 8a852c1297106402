#!/usr/bin/env python3
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How long ebpf.oom.explain takes on a host with many tasks: one run of the task
iterator; the whole explanation of a document (load the generic program privately,
which the verifier checks, iterate, rank, name the cgroups); and of a loaded policy
(`--policy`: its own pinned iterator, nothing loaded), with 1,000 and 10,000 extra
idle processes on this host.

  benchmarks/explain_time.py [--tasks 1000,10000] [--runs 5]

Runs on this machine (root, kernel BTF, task iterators; no hook needed). The idle
processes come from benchmarks/select_latency/tasks.c (built here with gcc) and are
killed at the end. The loaded policy lives under a bpffs root and a state dir of the
benchmark's own, removed at the end. Prints medians; the goals at 10,000 tasks: under
0.5 s for a document, 0.1 s for a loaded policy, a few ms for the iterator. Nothing is
asserted.
"""

import argparse
import ctypes
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

from conftest import COLLECTIONS  # noqa: E402,F401  (makes ansible_collections.ebpf.oom importable)  # pylint: disable=unused-import
from ansible_collections.ebpf.oom.plugins.module_utils import (  # noqa: E402
    abi, cgrouprules, explain, loader, renderer)
from ansible_collections.ebpf.oom.plugins.plugin_utils.bundled import compile_generic  # noqa: E402

RECORD = ctypes.sizeof(abi.Task)
DOCUMENT = {"name": "bench", "rules": [
    {"match": {"comm": "postgres"}, "action": "protect"},
    {"match": {"cgroup": "/batch.slice"}, "action": "prefer", "tier": 1},
    {"match": {"comm_prefix": "lang-"}, "action": "prefer", "tier": 2},
]}


def timed(fn, runs):
    took = []
    for _run in range(runs):
        start = time.perf_counter()
        fn()
        took.append(time.perf_counter() - start)
    return statistics.median(took)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="1000,10000")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="explain-time-") as work:
        os.environ["EBPF_OOM_BPFFS_ROOT"] = "/sys/fs/bpf/ebpf_oom_explain_time_%d" % os.getpid()
        os.environ["EBPF_OOM_STATE_DIR"] = os.path.join(work, "state")
        obj = compile_generic(cache_dir=os.path.join(work, "cache"))
        try:
            measure(args, work, obj)
        finally:
            loader.remove(DOCUMENT["name"])
            os.rmdir(os.environ["EBPF_OOM_BPFFS_ROOT"])


def load(obj):
    """The document, loaded as the backends load it (its iterator pinned), minus the hook."""
    rendered = renderer.render(DOCUMENT)
    loader.apply(DOCUMENT["name"], obj, globals=rendered.globals, maps=rendered.maps,
                 persist=False, document=DOCUMENT,
                 programs=list(abi.CGROUP_PROGRAMS) + [abi.TASKS_PROGRAM],
                 after_attach=lambda map_fd: cgrouprules.sync(map_fd(abi.LIVE_MAP),
                                                              rendered.cgroup_rules))


def measure(args, work, obj):
    """Print one line per task count."""
    tasks = os.path.join(work, "tasks")
    subprocess.run(["gcc", "-O2", "-o", tasks, os.path.join(HERE, "select_latency", "tasks.c")],
                   check=True)
    load(obj)
    imagined = explain.Imagined(None)
    print("%8s %8s %14s %14s %14s" % ("extra", "records", "iterator ms", "explain ms",
                                      "--policy ms"))
    for count in (int(n) for n in args.tasks.split(",")):
        idle = subprocess.Popen([tasks, "sleep", str(count)], stdout=subprocess.PIPE,
                                start_new_session=True)
        try:
            assert idle.stdout.readline().strip() == b"ready"
            with explain.iterator(obj, imagined, document=DOCUMENT) as link:
                records = len(link.read_iter()) // RECORD
                iterate = timed(link.read_iter, args.runs)
            whole = timed(lambda: explain.explain(obj, document=DOCUMENT), args.runs)
            loaded = timed(lambda: explain.explain(obj, name=DOCUMENT["name"]), args.runs)
            print("%8d %8d %14.1f %14.1f %14.1f" % (count, records, iterate * 1000,
                                                    whole * 1000, loaded * 1000), flush=True)
        finally:
            os.killpg(idle.pid, signal.SIGKILL)
            idle.wait()


if __name__ == "__main__":
    main()
