# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Print how long the engine takes to load, attach and pin one policy on this host.

A benchmark, not a test: it prints figures and asserts nothing.  The policy is the
host test program (bpf/testing/counter.bpf.c: two tp_btf programs, two maps),
since this host's kernel refuses fmod_ret; a real policy has the same shape (two
programs, a few maps).  Everything happens in a private bpffs mounted on a
temporary directory and unmounted at the end.  Needs root, clang and kernel BTF.

Figures (seconds, median/min/max of --runs):
  create     loader.apply of a new policy: open, load (verifier), attach, pin links
             and maps, write the record (goal <= 0.3)
  unchanged  the same apply again (idempotence check against the kernel)
  replace    apply of a changed object: load, attach, pin, atomic rename, old gone
  remove     loader.remove until the kernel has freed every link, program and map
  cold       a new python process that imports the engine and creates the policy
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "plugins"))

from module_utils import compiler, loader  # noqa: E402  (path set up above)

GOAL_CREATE = 0.3
SOURCE = os.path.join(REPO, "bpf", "testing", "counter.bpf.c")
COLD = ("import sys, time\n"
        "t = time.perf_counter()\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from module_utils import loader\n"
        "loader.apply('cold', sys.argv[2], persist=False)\n"
        "print(time.perf_counter() - t)\n")


def build(clang, out, variant):
    path = os.path.join(out, "policy%d.o" % variant)
    argv = [clang] + list(compiler.CFLAGS) + ["-DVARIANT=%d" % variant, "-I",
                                              os.path.join(REPO, "bpf", "include"), "-c", SOURCE, "-o", path]
    subprocess.run(argv, check=True)
    return path


def timed(func, *args, **kwargs):
    start = time.perf_counter()
    func(*args, **kwargs)
    return time.perf_counter() - start


def show(name, values, goal=None):
    line = "%-10s median %.4f  min %.4f  max %.4f  (n=%d)" % (
        name, statistics.median(values), min(values), max(values), len(values))
    if goal is not None:
        verdict = "met" if statistics.median(values) <= goal else "NOT met"
        line += "  goal <= %.2f: %s" % (goal, verdict)
    print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ebpf-oom-bench-") as tmp:
        mount = os.path.join(tmp, "bpffs")
        os.mkdir(mount)
        os.environ["EBPF_OOM_BPFFS_ROOT"] = os.path.join(mount, "ebpf_oom")
        os.environ["EBPF_OOM_STATE_DIR"] = os.path.join(tmp, "state")
        clang = compiler.find_clang()
        first, second = build(clang, tmp, 1), build(clang, tmp, 2)
        figures = {"create": [], "unchanged": [], "replace": [], "remove": [], "cold": []}
        try:
            loader.apply("warmup", first)   # parses vmlinux BTF once, as a module run would
            loader.remove("warmup")
            for _run in range(args.runs):
                figures["create"].append(timed(loader.apply, "bench", first))
                figures["unchanged"].append(timed(loader.apply, "bench", first))
                figures["replace"].append(timed(loader.apply, "bench", second))
                figures["remove"].append(timed(loader.remove, "bench"))
            for _run in range(max(3, args.runs // 4)):
                out = subprocess.run([sys.executable, "-c", COLD, os.path.join(REPO, "plugins"),
                                      first], check=True, capture_output=True, text=True)
                figures["cold"].append(float(out.stdout))
                loader.remove("cold")
        finally:
            for name in ("bench", "cold", "warmup"):
                loader.remove(name)
            if os.path.ismount(mount):
                subprocess.run(["umount", mount], check=True)
    print("load+attach+pin of one policy (%s, 2 tp_btf programs, 2 maps), seconds:"
          % os.path.relpath(SOURCE, REPO))
    show("create", figures["create"], GOAL_CREATE)
    for name in ("unchanged", "replace", "remove", "cold"):
        show(name, figures[name], GOAL_CREATE if name == "cold" else None)


if __name__ == "__main__":
    main()
