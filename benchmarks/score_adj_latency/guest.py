"""Guest side of benchmarks/score_adj_latency (run as root, on a stock kernel or any kernel
the score_adj backend loads on).

  guest.py --engine DIR --object generic.bpf.o [--samples 100] [--starts 1000]

DIR holds ebpf_oom_engine (plugins/module_utils). Applies a one-rule score_adj policy
(processes named sa-bench: prefer tier 1, oom_score_adj 1000) through the engine, starts
the agent as the host command runs it, then:
  - latency: `samples` times, starts a copy of sleep named sa-bench (fork + exec) and
    polls its /proc/PID/oom_score_adj until the agent wrote it; the time from just before
    the fork to the first read of the value written;
  - agent CPU: its user + system time (/proc/PID/stat) over `starts` starts of sa-bench
    (each lives 2 s; at most 100 at a time), over `starts` starts of `true` (no rule
    matches: the programs push nothing), and over the same wall time with no starts.
Prints one JSON line. Private bpffs root, state and run dirs; everything is removed at
the end (the agent stops cleanly, the policy is removed).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

POLICY = "sa-bench"
DOCUMENT = {"name": POLICY, "rules": [{"match": {"comm": "sa-bench"}, "action": "prefer", "tier": 1}]}
BAND = 1000
POLL = 0.0002        # seconds between two reads of a process's oom_score_adj
ALIVE = 100          # processes alive at a time in the CPU runs
TICKS = os.sysconf("SC_CLK_TCK")


def adj(pid):
    try:
        with open("/proc/%d/oom_score_adj" % pid) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def latencies(program, samples):
    out = []
    for _i in range(samples):
        start = time.perf_counter()
        proc = subprocess.Popen([program, "30"])
        deadline = start + 10
        while adj(proc.pid) != BAND and time.perf_counter() < deadline:
            time.sleep(POLL)
        out.append(time.perf_counter() - start if adj(proc.pid) == BAND else None)
        proc.kill()
        proc.wait()
    return out


def starts(argv, count):
    """Start `count` processes, at most ALIVE at a time; -> wall seconds."""
    began, alive = time.monotonic(), []
    for _i in range(count):
        while len(alive) >= ALIVE:
            alive = [p for p in alive if p.poll() is None]
            time.sleep(0.01)
        alive.append(subprocess.Popen(argv))
    for proc in alive:
        proc.wait()
    return time.monotonic() - began


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", required=True)
    parser.add_argument("--object", required=True)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--starts", type=int, default=1000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="sa-bench-", dir="/run")  # the ledger on tmpfs, as in /run/ebpf-oom
    bpffs = os.path.join(work, "bpffs")
    os.mkdir(bpffs)
    os.environ.update(EBPF_OOM_BPFFS_ROOT=os.path.join(bpffs, "ebpf_oom"),
                      EBPF_OOM_STATE_DIR=os.path.join(work, "state"),
                      EBPF_OOM_RUN_DIR=os.path.join(work, "run"))
    sys.path.insert(0, args.engine)
    from ebpf_oom_engine import backends  # noqa: E402

    program = os.path.join(work, "sa-bench")
    shutil.copy(shutil.which("sleep"), program)
    agent = None
    try:
        backends.ScoreAdj().apply(POLICY, args.object, DOCUMENT, persist=False)
        agent = subprocess.Popen([sys.executable, "-c", "import sys; sys.path.insert(0, %r); "
                                  "from ebpf_oom_engine import agent; sys.exit(agent.main())"
                                  % args.engine], stdout=subprocess.PIPE)
        assert b"following policy" in agent.stdout.readline()
        result = {"kernel": os.uname().release, "cpus": os.cpu_count()}
        result["latency_s"] = latencies(program, args.samples)
        cpu = {}
        for label, argv in (("matching", [program, "2"]), ("unmatched", ["true"])):
            before = cpu_seconds(agent.pid)
            wall = starts(argv, args.starts)
            time.sleep(1)  # the last events handled
            cpu[label] = {"cpu_s": cpu_seconds(agent.pid) - before, "wall_s": wall + 1}
        before = cpu_seconds(agent.pid)
        time.sleep(cpu["matching"]["wall_s"])
        cpu["idle"] = {"cpu_s": cpu_seconds(agent.pid) - before, "wall_s": cpu["matching"]["wall_s"]}
        result["agent_cpu"] = cpu
        result["starts"] = args.starts
        print(json.dumps(result))
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            agent.wait()
        backends.remove(POLICY)
        subprocess.run(["umount", bpffs], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
