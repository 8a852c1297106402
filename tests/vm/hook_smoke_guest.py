# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Guest side of tests/vm/test_hook_smoke.py (copied into the guest, run as root).

The engine's module_utils are copied beside this file as the package
ebpf_oom_engine, and molecule/shared/files/oomlab as oomlab, the guest-side OOM
driver of every VM test: the holders, the pusher's growth, the memory cgroup,
protect and the kernel log (its oom_reports, one parser for every VM test) are
oomlab's; this helper adds the BPF side (attach, detach, runs, stats, btf-has over
the engine's libbpf binding) and a command line of its own. Every command prints
one JSON object as its last line.

  attach OBJ PINDIR GLOBALS_JSON   load OBJ with its const volatile globals set,
                                   attach every program, pin each link in PINDIR
  detach PINDIR                    unpin the links (the programs detach)
  runs PINDIR                      each pinned link's target and its program's run_cnt
  stats 0|1                        set kernel.bpf_stats_enabled (run counts), answer
                                   the previous value
  btf-has NAME...                  which names the running kernel's BTF has
  spawn CGROUP NAME:MIB...         a memory cgroup with one process per NAME
                                   holding MIB MiB of touched memory; returns
                                   when all are ready: their pids
  limit CGROUP HEADROOM_MIB        memory.max = memory.current + HEADROOM
  push CGROUP [--stall N] [--unkillable]
                                   start a process that allocates 1 MiB after
                                   1 MiB in CGROUP until the cgroup's first OOM
                                   kill; wait for it to finish, or with --stall
                                   until the cgroup saw N OOMs while it still
                                   runs. --unkillable: its oom_score_adj is
                                   -1000, so in a global OOM (CGROUP without a
                                   limit) a victim is one of the others.
                                   Reports who is alive, the cgroup's
                                   memory.events, the kernel log since start
                                   (kmsg) and its OOM reports (reports:
                                   oomlab's oom_reports, every kill in order)
  grow CGROUP [ADJ]                the pusher itself
  protect NAME                     oom_score_adj -1000 for every process named
                                   NAME (sshd: the guest stays reachable
                                   through a global OOM)
  handover GENERIC CGROUP HEADROOM_MIB FIRST SECOND
                                   apply document FIRST with the engine's hook
                                   backend, then SECOND, with an OOM in CGROUP
                                   while SECOND's programs are attached but do
                                   not decide yet, and one after (see there)
  churn GENERIC CGROUP HEADROOM_MIB ROUNDS FIRST SECOND NAME:MIB...
                                   the holders, then FIRST and SECOND applied
                                   in turn while OOMs follow one another (see
                                   there)
  applies GENERIC ROUNDS DOC...    apply the documents in turn (churn's)
  status CGROUP                    memory.events and the pids in CGROUP
  kill PID                         SIGKILL PID and wait until it is gone
  cleanup CGROUP                   kill everything in CGROUP and remove it
"""

import importlib.machinery
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OOMLAB = os.path.join(HERE, "oomlab")  # molecule/shared/files/oomlab, copied beside this file
BPFFS = "/sys/fs/bpf"
WAIT_LIMIT = 240  # seconds any wait may take before it counts as a failure (TCG is slow)


def load_oomlab():
    """molecule/shared/files/oomlab as a module (its file has no .py suffix)."""
    loader = importlib.machinery.SourceFileLoader("oomlab", OOMLAB)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("oomlab", loader))
    loader.exec_module(module)
    return module


oomlab = load_oomlab()


def emit(obj, code=0):
    print(json.dumps(obj))
    sys.exit(code)


def procs(cgroup):
    with open(os.path.join(oomlab.cg(cgroup), "cgroup.procs")) as handle:
        return {int(line) for line in handle if line.strip()}


def wait_until(predicate, what):
    deadline = time.monotonic() + WAIT_LIMIT
    while not predicate():
        if time.monotonic() > deadline:
            emit({"error": "timed out waiting for " + what}, 3)
        time.sleep(0.05)


# ---------------------------------------------------------------- BPF (engine)

def engine():
    sys.path.insert(0, HERE)
    from ebpf_oom_engine import libbpf  # noqa: E402 (copied at run time)
    return libbpf


def ensure_bpffs():
    with open("/proc/self/mounts") as handle:
        if any(line.split()[1] == BPFFS and line.split()[2] == "bpf" for line in handle):
            return
    subprocess.run(["mount", "-t", "bpf", "bpf", BPFFS], check=True)


def attach(obj_path, pindir, globals_json):
    libbpf = engine()
    ensure_bpffs()
    os.makedirs(pindir, mode=0o700, exist_ok=True)
    obj = libbpf.Object(obj_path)
    pins = []
    try:
        for name, value in json.loads(globals_json).items():
            obj.set_global(name, value)
        obj.load()
        for prog in obj.programs():
            link = prog.attach()
            pin = os.path.join(pindir, prog.name)
            link.pin(pin)
            pins.append(pin)
            link.close()
    except libbpf.BpfError as exc:
        emit({"error": exc.message, "log_tail": exc.log_tail}, 2)
    finally:
        obj.close()
    emit({"pins": pins})


def detach(pindir):
    removed = []
    if os.path.isdir(pindir):
        for name in sorted(os.listdir(pindir)):
            os.unlink(os.path.join(pindir, name))
            removed.append(name)
        os.rmdir(pindir)
    emit({"removed": removed})


def runs(pindir):
    """How often each pinned link's program ran (counted while bpf_stats_enabled is 1)."""
    libbpf = engine()
    out = {}
    for name in sorted(os.listdir(pindir)):
        with libbpf.pinned(os.path.join(pindir, name)) as link_fd:
            link = libbpf.link_info(link_fd)
        prog_fd = libbpf.prog_fd_by_id(link["prog_id"])
        try:
            out[name] = {"target": link["target"], "run_cnt": libbpf.prog_info(prog_fd)["run_cnt"]}
        finally:
            os.close(prog_fd)
    emit(out)


def stats(value):
    """Set kernel.bpf_stats_enabled; answer the previous value."""
    path = "/proc/sys/kernel/bpf_stats_enabled"
    with open(path) as handle:
        previous = int(handle.read())
    with open(path, "w") as handle:
        handle.write(str(int(value)))
    emit({"previous": previous})


def btf_has(*names):
    libbpf = engine()
    emit({name: libbpf.vmlinux_btf_has(name, "func") for name in names})


# ---------------------------------------------------------------- workloads (oomlab's)

def spawn(cgroup, *specs):
    """The holders: oomlab's, one detached process each, ready once its memory is touched."""
    state = holders(cgroup, specs)
    emit({"pids": dict((name, pid) for name, (pid, _started) in state["pids"].items())})


def holders(cgroup, specs):
    """Start the holders (NAME:MIB) in a new memory cgroup; oomlab's state of them."""
    oomlab.enable_memory(cgroup)
    os.mkdir(oomlab.cg(cgroup), 0o755)
    swap_max = os.path.join(oomlab.cg(cgroup), "memory.swap.max")
    if os.path.exists(swap_max):
        oomlab.write(swap_max, "0")
    tasks = [dict(zip(("name", "mb"), spec.split(":")), cgroup=cgroup) for spec in specs]
    state = {"spec": {"tasks": tasks}, "pids": {}}
    oomlab.start_tasks(state, [task["name"] for task in tasks])
    return state


def limit(cgroup, headroom_mib):
    emit({"memory_max": oomlab.set_headroom(cgroup, int(headroom_mib))})


def grow(cgroup, oom_score_adj="0"):
    """The pusher: in CGROUP as kern-pusher, it grows until the cgroup's next OOM kill."""
    oomlab.become({"name": "kern-pusher", "cgroup": cgroup, "adj": int(oom_score_adj)})
    first = oomlab.read_memory_events(cgroup)["oom_kill"]
    grown = oomlab.grow(until=lambda: oomlab.read_memory_events(cgroup)["oom_kill"] != first)
    emit({"grown_mib": grown})


def push(cgroup, *options):
    emit(pushed(cgroup, list(options)))


def pushed(cgroup, options):
    """What push answers: the pusher's OOM, who died, the kernel's reports."""
    stall = int(options[options.index("--stall") + 1]) if "--stall" in options else None
    adj = oomlab.OOM_SCORE_ADJ_MIN if "--unkillable" in options else 0
    marker = "kern-smoke: push %s %d" % (cgroup, time.monotonic_ns())
    oomlab.write("/dev/kmsg", marker + "\n")
    before = set(procs(cgroup))
    pusher = subprocess.Popen([sys.executable, __file__, "grow", cgroup, str(adj)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    result = {"pusher": pusher.pid}
    if stall is None:
        try:
            out, _err = pusher.communicate(timeout=WAIT_LIMIT)
        except subprocess.TimeoutExpired:
            pusher.kill()
            emit({"error": "the pusher did not finish: no OOM kill?"}, 3)
        result["pusher_exit"] = pusher.returncode
        result["pusher_out"] = out.decode("utf-8", "replace")
    else:
        wait_until(lambda: oomlab.read_memory_events(cgroup)["oom"] >= stall
                   or pusher.poll() is not None,
                   "%s OOMs in %s" % (stall, cgroup))
        result["pusher_exit"] = pusher.poll()
    now = procs(cgroup)
    result["alive"] = sorted(before & now)
    result["gone"] = sorted(before - now)
    result["events"] = oomlab.read_memory_events(cgroup)
    result["kmsg"] = oomlab.kernel_log_since(marker)
    result["reports"] = oomlab.oom_reports(result["kmsg"])
    return result


def policy_engine():
    """The engine's backends, bpffs, cgrouprules and loader, on a bpffs root and a state
    dir of their own (the session's policies are not touched)."""
    os.environ["EBPF_OOM_BPFFS_ROOT"] = BPFFS + "/kern-smoke-policies"
    os.environ["EBPF_OOM_STATE_DIR"] = "/run/kern-smoke-policies"
    sys.path.insert(0, HERE)
    from ebpf_oom_engine import backends, bpffs, cgrouprules, loader  # noqa: E402
    return backends, bpffs, cgrouprules, loader


def churn(generic, cgroup, headroom_mib, rounds, first, second, *specs):
    """Start the holders (NAME:MIB) in CGROUP, apply document FIRST (JSON) with the
    engine's hook backend, then SECOND and FIRST in turn, ROUNDS applies, in a process
    of its own (`applies`: a holder forked here must not inherit the bpffs lock), while
    OOMs are pushed into CGROUP one after another; a holder killed is started again.
    The answer: each OOM's kills [[pid, comm, policy]] (and the kernel's lines of a push
    that killed more than one), the actions of the applies, and the holders' pids at the
    end. Removes the policy at the end."""
    _backends, _bpffs, _cgrouprules, loader = policy_engine()
    out = {"ooms": []}
    state = holders(cgroup, specs)
    try:
        applies = subprocess.Popen([sys.executable, __file__, "applies", generic, "1", first],
                                   stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        out["first"] = json.loads(applies.communicate(timeout=WAIT_LIMIT)[0].splitlines()[-1])
        applies = subprocess.Popen([sys.executable, __file__, "applies", generic, rounds,
                                    second, first], stdout=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL)
        try:
            while applies.poll() is None:
                oomlab.set_headroom(cgroup, int(headroom_mib))
                report = pushed(cgroup, [])
                out["ooms"].append([[pid, comm, found["policy"]] for found in report["reports"]
                                    for pid, comm in found["kills"]])
                if len(out["ooms"][-1]) > 1:  # the kernel's lines, for the failure's message
                    out.setdefault("kmsg_of_extra_kills", []).append(report["kmsg"])
                dead = [name for name, (pid, _start) in state["pids"].items()
                        if pid in report["gone"]]
                oomlab.start_tasks(state, dead)
        finally:
            answer = applies.communicate(timeout=WAIT_LIMIT)[0]
        out.update(json.loads(answer.splitlines()[-1]))
    except Exception as exc:  # the answer says what failed
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
    finally:
        loader.remove("churn")
    out["pids"] = dict((name, pid) for name, (pid, _started) in state["pids"].items())
    emit(out, 2 if "error" in out else 0)


def applies(generic, rounds, *documents):
    """Apply the documents (JSON) in turn as policy churn, ROUNDS applies, with the
    engine's hook backend; the actions, in order (`applied`)."""
    backends, _bpffs, _cgrouprules, _loader = policy_engine()
    hook = backends.EvaluateTask()
    out = {"applied": []}
    try:
        for turn in range(int(rounds)):
            document = json.loads(documents[turn % len(documents)])
            out["applied"].append(hook.apply("churn", generic, hook.plan(document),
                                             persist=False)["action"])
    except Exception as exc:  # the answer says what failed
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
    emit(out)


def handover(generic, cgroup, headroom_mib, first, second):
    """Apply document FIRST (JSON) with the hook backend (the engine's, as the module
    does, on a bpffs root of its own), then SECOND; while SECOND's programs are attached
    and their rule cgroups filled, before they decide, push CGROUP into OOM (the
    `during` report, and what the policy's staging directory held then), and once more
    after the apply (`after`). Removes the policy at the end."""
    backends, bpffs, cgrouprules, loader = policy_engine()
    hook = backends.EvaluateTask()
    staging = bpffs.Layout(bpffs.roots()[0], "handover").staging
    sync, out = cgrouprules.sync, {}

    def push_now():
        oomlab.set_headroom(cgroup, int(headroom_mib))
        return pushed(cgroup, [])

    def sync_then_oom(fd, rules, mount=None):
        found = sync(fd, rules, mount)
        out["staged"] = sorted(os.listdir(staging)) if os.path.isdir(staging) else []
        out["during"] = push_now()
        return found

    try:
        out["first"] = hook.apply("handover", generic, hook.plan(json.loads(first)),
                                  persist=False)["action"]
        cgrouprules.sync = sync_then_oom
        try:
            out["second"] = hook.apply("handover", generic, hook.plan(json.loads(second)),
                                       persist=False)["action"]
        finally:
            cgrouprules.sync = sync
        out["after"] = push_now()
    except Exception as exc:  # the answer says what failed; the policy goes all the same
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
    finally:
        loader.remove("handover")
    emit(out, 2 if "error" in out else 0)


def status(cgroup):
    emit({"events": oomlab.read_memory_events(cgroup), "procs": sorted(procs(cgroup))})


def kill(pid):
    pid = int(pid)
    started = oomlab.start_time(pid)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not oomlab.alive(pid, started), "pid %d to die" % pid)
    emit({"killed": pid})


def protect(name):
    """oom_score_adj -1000 for every process named NAME: no OOM kills it."""
    found = oomlab.protect(name)
    if not found:
        emit({"error": "no process named %s" % name}, 3)
    emit({"protected": found})


def cleanup(cgroup):
    path = oomlab.cg(cgroup)
    if os.path.isdir(path):
        oomlab.write(os.path.join(path, "cgroup.kill"), "1")
        wait_until(lambda: not procs(cgroup), "%s to empty" % cgroup)
        os.rmdir(path)
    emit({"removed": cgroup})


COMMANDS = {
    "attach": attach, "detach": detach, "runs": runs, "stats": stats, "btf-has": btf_has,
    "spawn": spawn, "limit": limit, "push": push, "grow": grow, "handover": handover,
    "churn": churn, "applies": applies,
    "status": status, "kill": kill, "protect": protect, "cleanup": cleanup,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
