"""Guest side of tests/vm/test_policy_language.py: real OOMs in a memory cgroup.

Runs in a hook-kernel guest as root, next to a copy of the engine
(plugins/module_utils as the package `ebpf_oom_engine`) and the compiled generic
program. Reads one scenario (JSON) on stdin, prints one result (JSON) as the
last line of stdout:

1. creates the scenario's memory cgroup (memory.max = limit_mb, no swap), the
   `cgroups` listed and the tasks' cgroups below it, and starts the tasks: each joins its cgroup,
   sets its oom_score_adj, uid and name (comm), touches `mb` MiB and waits;
2. applies each policy document in turn with the engine (renderer.render +
   loader.apply), after replacing "$root" with the scenario cgroup's path and
   "$pid:NAME" with a task's pid; records each apply's action and program ids;
3. creates the `late` cgroups and starts their tasks (cgroups that did not
   exist when the policy was applied);
4. starts the trigger, which allocates `trigger.mb` MiB in 1 MiB steps and
   exits: the memory cgroup runs out of memory on the way;
5. reports which tasks died (SIGKILL), the victims and policy names of the OOM
   reports in the kernel log, memory.events, and the program's oom_state;
6. stops every task, removes the cgroups and the policies it applied.

With "expect": "no-kill" (an abort policy), step 4 waits until the cgroup has
seen `ooms` OOMs, checks nobody was killed, and then kills the trigger itself.
"""

import ctypes
import json
import os
import re
import select
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "engine"))

from ebpf_oom_engine import libbpf, loader, renderer  # noqa: E402

CGROUP = "/sys/fs/cgroup"
LAB = "lang-lab"
MIB = 1 << 20
WAIT = 600  # seconds: TCG guests are slow; the caller's timeout is the real bound
KILLED = re.compile(r"Killed process (\d+) \(([^)]*)\)")
HEADER = re.compile(r"invoked oom-killer: .*policy_name=(\S*)")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def read(path):
    with open(path) as f:
        return f.read()


def kmsg(text):
    write("/dev/kmsg", "<6>%s: %s\n" % (LAB, text))


def child(task, ready):
    """A task: join the cgroup, become who the scenario says, hold memory, wait."""
    try:
        write(os.path.join(task["path"], "cgroup.procs"), "0")
        write("/proc/self/oom_score_adj", str(task.get("adj", 0)))
        write("/proc/self/comm", task["comm"])  # before setuid: /proc/self is root's afterwards
        if task.get("uid"):
            os.setgroups([])
            os.setgid(task["uid"])
            os.setuid(task["uid"])
        hold = []
        for unused in range(task["mb"]):
            hold.append(bytearray(b"\x01") * MIB)
        os.write(ready, b"r")
        while True:
            signal.pause()
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(1)


def start(task):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        child(task, w)
    os.close(w)
    return pid, r


def wait_ready(pid, fd, timeout=WAIT):
    ready = select.select([fd], [], [], timeout)[0]
    data = os.read(fd, 1) if ready else b""
    os.close(fd)
    if data != b"r":
        raise SystemExit("task %d did not get ready (killed or too slow)" % pid)


def dead(pid):
    """True when the child has died (it is reaped here); False if the lab reaped it already."""
    try:
        done, unused = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


def events(root):
    return dict((k, int(v)) for k, v in (line.split() for line in read(os.path.join(root, "memory.events")).splitlines()))


def kernel_log_since(marker):
    """Kernel log messages after the one holding `marker` (one /dev/kmsg record per read)."""
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    lines = []
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BrokenPipeError:  # records overwritten while reading: go on
                continue
            except BlockingIOError:
                break
            lines.append(record.decode("utf-8", "replace").split(";", 1)[-1].split("\n", 1)[0])
    finally:
        os.close(fd)
    for i, line in enumerate(lines):
        if marker in line:
            return lines[i + 1:]
    return []


def oom_state(name):
    """The generic program's oom_state entry, decoded."""
    fd = libbpf.obj_get(os.path.join(loader.policy_dir(name), "map_" + renderer.STATE_MAP))
    try:
        value = libbpf.map_lookup(fd, (0).to_bytes(4, "little"), ctypes.sizeof(renderer.State))
    finally:
        os.close(fd)
    return renderer.describe(renderer.STATE_MAP, value)


def prog_ids(result):
    return dict((p["name"], p["prog_id"]) for p in result["record"]["programs"])


def substitute(document, root_path, pids):
    text = json.dumps(document).replace("$root", root_path)
    text = re.sub(r'"\$pid:([\w-]+)"', lambda m: str(pids[m.group(1)]), text)
    return json.loads(text)


def apply(document, obj):
    rendered = renderer.render(document)
    result = loader.apply(document["name"], obj, globals=rendered.globals, maps=rendered.maps, persist=False)
    return {"name": document["name"], "action": result["action"], "prog_ids": prog_ids(result),
            "map_changes": result["map_changes"], "warnings": rendered.warnings, "cgroups": rendered.cgroups}


def make_cgroup(path):
    os.makedirs(path, exist_ok=True)


def remove_cgroups(root):
    for top, dirs, unused in sorted(os.walk(root, topdown=False), key=lambda t: -t[0].count("/")):
        try:
            os.rmdir(top)
        except OSError:
            pass


def foreign_hooks(mine):
    """Other loaded policies with a victim-selection program: they would decide first."""
    return sorted(r["name"] for r in loader.list_policies() if r["name"] not in mine
                  and any(p.get("target") == "bpf_oom_evaluate_task" for p in r.get("programs", [])))


def run(spec):
    others = foreign_hooks(set(d["name"] for d in spec["policies"]))
    if others:
        raise SystemExit("other OOM policies are loaded in this guest: %s" % ", ".join(others))
    parent = os.path.join(CGROUP, "lang")
    root = os.path.join(parent, spec["scenario"])
    root_path = "/" + os.path.relpath(root, CGROUP)
    tasks = dict((t["name"], dict(t, path=os.path.join(root, t["cgroup"]))) for t in spec["tasks"])
    trigger = dict(spec["trigger"], name="trigger", path=os.path.join(root, spec["trigger"]["cgroup"]))
    pids, reaped, applied = {}, set(), []
    marker = "begin %s %d" % (spec["scenario"], time.time_ns())
    if "+memory" not in "+" + " +".join(read(os.path.join(CGROUP, "cgroup.subtree_control")).split()):
        write(os.path.join(CGROUP, "cgroup.subtree_control"), "+memory")
    make_cgroup(parent)
    write(os.path.join(parent, "cgroup.subtree_control"), "+memory")
    remove_cgroups(root)
    make_cgroup(root)
    write(os.path.join(root, "memory.max"), str(spec["limit_mb"] * MIB))
    write(os.path.join(root, "memory.swap.max"), "0")
    try:
        for sub in spec.get("cgroups", []):
            make_cgroup(os.path.join(root, sub))
        for late in (False, True):
            batch = [t for t in tasks.values() if bool(t.get("late")) == late]
            for t in batch:
                make_cgroup(t["path"])
            started = [(t["name"],) + start(t) for t in batch]
            for name, pid, fd in started:
                wait_ready(pid, fd)
                pids[name] = pid
            if not late:
                for document in spec["policies"]:
                    applied.append(apply(substitute(document, root_path, pids), spec["object"]))
        make_cgroup(trigger["path"])
        kmsg(marker)
        pid, fd = start(trigger)
        pids["trigger"] = pid
        outcome = wait_trigger(spec, root, pid, fd)
        killed = sorted(n for n, p in pids.items() if dead(p))
        reaped.update(pids[n] for n in killed)  # not signalled again below
        log = kernel_log_since(marker)
        name = spec["policies"][-1]["name"] if spec["policies"] else None
        return {
            "pids": pids,
            "killed": killed,
            "trigger": outcome,
            "victims": [[int(p), c] for p, c in KILLED.findall("\n".join(log))],
            "policy_names": HEADER.findall("\n".join(log)),
            "events": events(root),
            "applied": applied,
            "state": oom_state(name) if name else None,
            "log": log[-60:],
        }
    finally:
        for pid in set(pids.values()) - reaped:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        for document in spec["policies"]:
            loader.remove(document["name"])
        remove_cgroups(root)


def wait_trigger(spec, root, pid, fd):
    """'done' (allocated everything), 'killed', or 'aborted' (no-kill scenarios)."""
    if spec.get("expect") == "no-kill":
        deadline = time.monotonic() + WAIT
        while events(root).get("oom", 0) < spec.get("ooms", 3) and time.monotonic() < deadline:
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        os.close(fd)
        os.waitpid(pid, 0)
        return "aborted"
    ready = select.select([fd], [], [], WAIT)[0]
    data = os.read(fd, 1) if ready else b""
    os.close(fd)
    return "done" if data == b"r" else "killed"


def main():
    spec = json.load(sys.stdin)
    if spec.get("remove"):
        for name in spec["remove"]:
            loader.remove(name)
        print(json.dumps({"removed": spec["remove"]}))
        return
    print(json.dumps(run(spec)))


if __name__ == "__main__":
    main()
