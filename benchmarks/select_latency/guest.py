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
own cost), `generic` (the generic program with the document below, enforcing)
and `shadow` (the same program and document with mode: shadow: the kernel
decides, the shadow judge rates every candidate and logs its verdict). Both
generic modes load through the engine (backends.EvaluateTask), so both attach
exactly the programs that backend attaches (enforce and shadow alike); after
each load the guest checks the attached set and the mode the program runs in,
and after each measured `shadow` OOM that the shadow log counted it
(oom_shadow_stats.judged grew by at least one per timed selection): otherwise
it fails, so the shadow figure cannot silently time a judge that never ran.
Prints one JSON line: {"tasks": N, "none": [ns...], "floor": [...], "generic": [...],
"shadow": [...], "shadow_stats": {"judged": .., "kills": .., "disagreements": ..}}
(shadow_stats: the sums over the measured shadow OOMs).

After each load one OOM runs unmeasured: under TCG the first run of newly loaded
code (the JIT image, the trampoline) includes its translation, a cost real
hardware does not have and an OOM long after the load does not pay.

The idle cgroup is created first, so the kernel scans the idle tasks before
the hog: every idle task gets NO_BPF_POLICY from the policy and is then judged
by oom_badness() too, the expensive order for the policy.
"""

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "engine"))

from ebpf_oom_engine import abi, backends, bpffs, libbpf, loader, pins  # noqa: E402

CGROUP = "/sys/fs/cgroup"
ROOT = os.path.join(CGROUP, "lang-bench")
HEADROOM = 96 << 20  # bytes the hog gets before the OOM
POLICY = "lang-bench"
MODES = ("none", "floor", "baseline", "generic", "shadow")
GENERIC = {"generic": "enforce", "shadow": "shadow"}  # the modes that load the generic program: its mode
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


def apply_generic(mode):
    """The generic program with DOCUMENT in abi.MODES mode ``mode``, loaded by the engine's
    evaluate_task backend; SystemExit when it does not attach what that backend attaches
    or does not run in that mode."""
    hook = backends.EvaluateTask()
    document = DOCUMENT if mode == "enforce" else dict(DOCUMENT, mode=mode)
    result = hook.apply(POLICY, os.path.join(HERE, "generic.bpf.o"), hook.plan(document), persist=False)
    layout = bpffs.Layout(bpffs.roots()[0], POLICY)
    record = pins.read_record(layout)
    attached = sorted(p["name"] for p in (record or {}).get("programs", []))
    if attached != sorted(hook.attached()) or sorted(hook.attached()) != sorted(hook.programs):
        raise SystemExit("generic (%s): attached %s, the evaluate_task backend attaches %s (of %s)"
                         % (mode, attached, sorted(hook.attached()), sorted(hook.programs)))
    with libbpf.pinned(layout.map(abi.MODE_MAP)) as fd:
        live = int.from_bytes(libbpf.map_lookup(fd, bytes(4), 4) or bytes(4), "little")
    if live != abi.MODES[mode] or result.get("mode") != mode:
        raise SystemExit("generic (%s): %s holds %d, the apply said mode %s; want %d"
                         % (mode, abi.MODE_MAP, live, result.get("mode"), abi.MODES[mode]))


def shadow_stats():
    """The policy's oom_shadow_stats (abi.ShadowStats), read from its pin."""
    pin = bpffs.Layout(bpffs.roots()[0], POLICY).map(abi.SHADOW_STATS_MAP)
    size = ctypes.sizeof(abi.ShadowStats)
    with libbpf.pinned(pin) as fd:
        if libbpf.map_info(fd)["value_size"] != size:
            raise SystemExit("%s holds %d-byte values, abi.ShadowStats is %d"
                             % (pin, libbpf.map_info(fd)["value_size"], size))
        raw = libbpf.map_lookup(fd, bytes(4), size)
    if raw is None:
        raise SystemExit("%s has no entry 0" % pin)
    return abi.ShadowStats.from_buffer_copy(raw)


def shadow_once(totals):
    """hog_once() in shadow mode, and the OOMs it timed were judged: their verdicts
    counted into ``totals``; SystemExit when the shadow log did not record them."""
    before = shadow_stats()
    samples = hog_once()
    after = shadow_stats()
    grown = dict((field, getattr(after, field) - getattr(before, field)) for field in totals)
    if not samples or grown["judged"] < len(samples):
        raise SystemExit("shadow: %d selections timed, but %s grew by %s (before %s, after %s): the "
                         "shadow judge did not record them, the figure would time nothing"
                         % (len(samples), abi.SHADOW_STATS_MAP, grown,
                            dict((f, getattr(before, f)) for f in totals),
                            dict((f, getattr(after, f)) for f in totals)))
    for field in totals:
        totals[field] += grown[field]
    return samples


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
        judged = {"judged": 0, "kills": 0, "disagreements": 0}
        for i in range(len(modes) * args.runs):
            mode = modes[i % len(modes)]
            loader.remove(POLICY)
            if mode in GENERIC:
                apply_generic(GENERIC[mode])
            elif mode == "baseline":
                apply_baseline(base)
            elif mode == "floor":
                loader.apply(POLICY, os.path.join(HERE, "floor.bpf.o"), persist=False)
            hog_once()  # warm-up: TCG translates newly loaded code on its first run
            samples[mode] += shadow_once(judged) if mode == "shadow" else hog_once()
        tasks = len(read(os.path.join(ROOT, "idle", "cgroup.procs")).split())
        print(json.dumps(dict(samples, tasks=tasks, shadow_stats=judged)))
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
