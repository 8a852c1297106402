"""Guest side of benchmarks/select_latency (run as root in a hook-kernel guest).

  guest.py --tasks N --runs R

With engine_base/ebpf_oom_engine_base and baseline.bpf.o beside it (run --baseline REV),
the mode `baseline` loads that revision's generic program the way it loaded it.

Beside it: engine/ebpf_oom_engine (plugins/module_utils), generic.bpf.o,
floor.bpf.o, bench.bpf.o and the static `tasks` binary. Starts N idle
processes in the memory cgroup /lang-bench/idle, then R times per mode, in
turn, runs a hog in /lang-bench/hog until the OOM killer kills it; the probe
(bench.bpf.o) records each victim selection's duration. Modes: `none` (no
policy attached), `floor` (a program that returns NO_BPF_POLICY: the hook's
own cost) and `generic` (the generic program with the document below).
Prints one JSON line: {"tasks": N, "none": [ns...], "floor": [...], "generic": [...]}.

After each load one OOM runs unmeasured: under TCG the first run of newly loaded
code (the JIT image, the trampoline) includes its translation, a cost real
hardware does not have and an OOM long after the load does not pay.

The idle cgroup is created first, so the kernel scans the idle tasks before
the hog: every idle task gets NO_BPF_POLICY from the policy and is then judged
by oom_badness() too, the expensive order for the policy.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "engine"))

from ebpf_oom_engine import backends, libbpf, loader  # noqa: E402

CGROUP = "/sys/fs/cgroup"
ROOT = os.path.join(CGROUP, "lang-bench")
HEADROOM = 96 << 20  # bytes the hog gets before the OOM
POLICY = "lang-bench"
MODES = ("none", "floor", "baseline", "generic")
PROBE = "lang-probe"
SYSCTLS = {"/proc/sys/vm/oom_dump_tasks": "0", "/proc/sys/kernel/printk": "1"}
DOCUMENT = {
    "name": POLICY,
    "rules": [
        {"match": {"comm": "postgres"}, "action": "protect"},
        {"match": {"cgroup": "/lang-bench/hog"}, "action": "prefer", "tier": 1},
        {"match": {"cgroup": "/lang-bench/web"}, "action": "prefer", "tier": 2},
    ],
}


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def read(path):
    with open(path) as f:
        return f.read().strip()


def joiner(cgroup):
    return lambda: write(os.path.join(cgroup, "cgroup.procs"), "0")


def remove_cgroup(path, timeout=120):
    """rmdir, retried while killed tasks are still leaving the cgroup."""
    deadline = time.monotonic() + timeout
    while os.path.isdir(path):
        try:
            os.rmdir(path)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def probe_count():
    fd = libbpf.obj_get(os.path.join(loader.policy_dir(PROBE), "map_bench_count"))
    try:
        return int.from_bytes(libbpf.map_lookup(fd, bytes(4), 8), "little")
    finally:
        os.close(fd)


def probe_samples(first, last):
    fd = libbpf.obj_get(os.path.join(loader.policy_dir(PROBE), "map_bench_samples"))
    try:
        return [int.from_bytes(libbpf.map_lookup(fd, (i % 256).to_bytes(4, "little"), 8), "little")
                for i in range(first, last)]
    finally:
        os.close(fd)


def hog_once():
    """Run the hog until the OOM killer kills it; the new selection times."""
    before = probe_count()
    hog = subprocess.run([os.path.join(HERE, "tasks"), "hog"], preexec_fn=joiner(os.path.join(ROOT, "hog")),
                         check=False)
    if hog.returncode != -9:
        raise SystemExit("the hog ended with %s, not SIGKILL" % hog.returncode)
    return probe_samples(before, probe_count())


def baseline_engine():
    """The engine of the revision to compare with (engine_base/), or None."""
    base = os.path.join(HERE, "engine_base")
    if not os.path.isdir(base):
        return None
    sys.path.insert(0, base)
    import importlib
    return (importlib.import_module("ebpf_oom_engine_base.loader"),
            importlib.import_module("ebpf_oom_engine_base.renderer"))


def apply_baseline(base):
    """The baseline revision's generic program, loaded the way that revision loads it."""
    base_loader, base_renderer = base
    rendered = base_renderer.render(DOCUMENT)
    base_loader.apply(POLICY, os.path.join(HERE, "baseline.bpf.o"), globals=rendered.globals,
                      maps=rendered.maps, persist=False)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    base = baseline_engine()
    modes = [m for m in MODES if m != "baseline" or base]
    saved = dict((path, read(path)) for path in SYSCTLS)
    idle = None
    try:
        for path, value in SYSCTLS.items():
            write(path, value)
        if "memory" not in read(os.path.join(CGROUP, "cgroup.subtree_control")).split():
            write(os.path.join(CGROUP, "cgroup.subtree_control"), "+memory")
        for sub in ("", "idle", "hog", "web"):  # idle before hog: scanned first
            os.makedirs(os.path.join(ROOT, sub), exist_ok=True)
        loader.apply(PROBE, os.path.join(HERE, "bench.bpf.o"), persist=False)
        idle = subprocess.Popen([os.path.join(HERE, "tasks"), "sleep", str(args.tasks)], stdout=subprocess.PIPE,
                                preexec_fn=joiner(os.path.join(ROOT, "idle")))
        if idle.stdout.readline().strip() != b"ready":
            raise SystemExit("the idle tasks did not start")
        write(os.path.join(ROOT, "memory.swap.max"), "0")
        write(os.path.join(ROOT, "memory.max"), str(int(read(os.path.join(ROOT, "memory.current"))) + HEADROOM))
        samples = dict((mode, []) for mode in modes)
        for i in range(len(modes) * args.runs):
            mode = modes[i % len(modes)]
            loader.remove(POLICY)
            if mode == "generic":
                hook = backends.EvaluateTask()
                hook.apply(POLICY, os.path.join(HERE, "generic.bpf.o"), hook.plan(DOCUMENT),
                           persist=False)
            elif mode == "baseline":
                apply_baseline(base)
            elif mode == "floor":
                loader.apply(POLICY, os.path.join(HERE, "floor.bpf.o"), persist=False)
            hog_once()  # warm-up: TCG translates newly loaded code on its first run
            samples[mode] += hog_once()
        tasks = len(read(os.path.join(ROOT, "idle", "cgroup.procs")).split())
        print(json.dumps(dict(samples, tasks=tasks)))
    finally:
        for sub in ("idle", "hog"):
            if os.path.isdir(os.path.join(ROOT, sub)):
                write(os.path.join(ROOT, sub, "cgroup.kill"), "1")
        if idle:
            idle.wait()
        loader.remove(POLICY)
        loader.remove(PROBE)
        for sub in ("idle", "hog", "web", ""):
            remove_cgroup(os.path.join(ROOT, sub))
        for path, value in saved.items():
            write(path, value)


if __name__ == "__main__":
    main()
