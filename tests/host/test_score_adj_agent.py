"""The score_adj backend on this host's own stock kernel (no hook; tp_btf, iter/task and
ring buffers work): its programs load, attach and pin; processes a rule matches get their
band's oom_score_adj, written at apply time for the ones there and by the agent (run
here as `python -c ... agent.main()`, as the host command runs it) for the ones that
start, change name or cgroup, or fork later; removal, a clean stop and a restart after
SIGKILL put every value back or keep it as it should.

Root lacks CAP_SYS_RESOURCE here, so the tests use positive values only (raising a
process's oom_score_adj, and setting it back down to its minimum); negative bands are
tested in the VM (tests/vm/test_score_adj_stock.py). Each test has a bpffs root, a state
dir and a run dir (the ledger, the agent's lock) of its own.
"""

import ctypes
import errno
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import (abi, backends, bpffs, libbpf, pins,
                                                               scoreadj, state)
from ansible_collections.ebpf.oom.plugins.plugin_utils.bundled import compile_generic
from conftest import COLLECTIONS

POLICY = "adjtest"
BOUND = 5.0  # seconds a process may take to get its value (the benchmark measures how long)
HOLD = r"""
import ctypes, os, sys, time
adj, comm = sys.argv[1], sys.argv[2]
if adj != "-":
    open("/proc/self/oom_score_adj", "w").write(adj)
if comm != "-":
    ctypes.CDLL(None).prctl(15, comm.encode(), 0, 0, 0)
os.write(1, b"r")
for line in sys.stdin:      # commands: "name NEW", "names A,B,..", "uid N", "fork NAME" (the child prints its pid)
    word, arg = line.split()
    if word == "name":
        ctypes.CDLL(None).prctl(15, arg.encode(), 0, 0, 0)
    elif word == "names":       # "names A,B,...": each in turn
        for name in arg.split(","):
            ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)
    elif word == "uid":
        os.setuid(int(arg))
    elif word == "fork":
        r, w = os.pipe()
        if os.fork() == 0:
            if arg != "-":
                ctypes.CDLL(None).prctl(15, arg.encode(), 0, 0, 0)
            os.write(w, b"%d\n" % os.getpid())
            time.sleep(300)
            os._exit(0)
        os.write(1, os.read(r, 32))
    os.write(1, b"r")
time.sleep(300)
"""
AGENT = ("import sys; from ansible_collections.ebpf.oom.plugins.module_utils import agent; "
         "sys.exit(agent.main())")


@pytest.fixture(scope="module")
def generic(tmp_path_factory):
    return compile_generic(cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def host(private_roots, tmp_path, monkeypatch):
    monkeypatch.setenv("EBPF_OOM_RUN_DIR", str(tmp_path / "run"))
    h = Host(tmp_path)
    try:
        yield h
    finally:
        h.stop_agent()
        backends.remove(POLICY)
        for pid in h.children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in h.procs:
            proc.kill()
            proc.wait()


class Proc(subprocess.Popen):
    def command(self, line):
        self.stdin.write((line + "\n").encode())
        self.stdin.flush()
        out = b""
        while not out.endswith(b"r"):
            out += self.stdout.read(1)
        return out[:-1].decode().strip()


class Host:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.procs = []
        self.children = []   # pids forked by the processes above
        self.agent = None

    def hold(self, comm="-", adj="-", argv0=None):
        """A process holding still, named comm, with oom_score_adj adj; commands on stdin."""
        proc = Proc([argv0 or sys.executable, "-c", HOLD, str(adj), comm], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE)
        self.procs.append(proc)
        assert proc.stdout.read(1) == b"r"
        return proc

    def start_agent(self):
        env = dict(os.environ, PYTHONPATH=COLLECTIONS)
        self.agent = subprocess.Popen([sys.executable, "-c", AGENT], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not scoreadj.agent_running():
            assert self.agent.poll() is None and time.monotonic() < deadline, self.agent_output()
            time.sleep(0.05)

    def agent_says(self, words, timeout=30):
        """Wait until the agent logs a line with `words`; the line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _w, _x = select.select([self.agent.stdout], [], [], 0.2)
            if ready:
                line = self.agent.stdout.readline().decode()
                if words in line:
                    return line
        raise AssertionError("the agent did not say %r" % words)

    def stop_agent(self, sig=signal.SIGTERM):
        if self.agent is None:
            return None
        self.agent.send_signal(sig)
        rc = self.agent.wait(timeout=30)
        self.agent = None
        return rc

    def agent_output(self):
        self.agent.kill()
        return self.agent.communicate()


def apply(generic, document, name=POLICY):
    backend = backends.ScoreAdj()
    return backend.apply(name, generic, backend.plan(document), persist=False)


def adj(proc):
    with open("/proc/%d/oom_score_adj" % (proc if isinstance(proc, int) else proc.pid)) as f:
        return int(f.read())


def eventually(proc, value, bound=BOUND):
    """The process's oom_score_adj once it is `value`, or what it is after `bound` seconds."""
    deadline = time.monotonic() + bound
    while adj(proc) != value and time.monotonic() < deadline:
        time.sleep(0.01)
    return adj(proc)


def doc(*rules, **top):
    return dict(name=POLICY, rules=list(rules), **top)


def prefer(tier, **match):
    return {"match": match, "action": "prefer", "tier": tier}


# ---------------------------------------------------------------- load, attach, pin

def test_this_host_has_score_adj_and_auto_chooses_it():
    assert backends.usable() == ["score_adj"]
    assert backends.choose("auto").name == "score_adj"
    with pytest.raises(backends.UnsupportedKernel) as err:
        backends.choose("evaluate_task")
    assert "bpf_oom_evaluate_task" in err.value.missing


def test_in_a_pid_namespace_of_its_own_the_agent_and_the_backend_refuse(tmp_path):
    """The programs report host pids; the values are written through the agent's /proc. In
    a new pid namespace (a container without hostPID) the agent exits naming it, writing
    nothing, and the backend says what this host lacks."""
    probe = ("import sys; from ansible_collections.ebpf.oom.plugins.module_utils import backends; "
             "print(backends.ScoreAdj().missing()); " + AGENT)
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", probe],
                          env=dict(os.environ, PYTHONPATH=COLLECTIONS, EBPF_OOM_RUN_DIR=str(tmp_path / "run")),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "ebpf-oom agent: refused: it runs in the pid namespace pid:[" in done.stderr, done.stderr
    assert "the initial pid namespace (it runs in the pid namespace pid:[" in done.stdout, done.stdout
    assert not (tmp_path / "run").exists()


def test_the_event_programs_and_the_iterator_load_attach_and_pin(host, generic):
    matched = host.hold("sa-there", adj=100)
    result = apply(generic, doc(prefer(1, comm="sa-there")))
    layout = bpffs.Layout(bpffs.roots()[0], POLICY)
    record = result["record"]
    assert record["backend"] == "score_adj" and result["backend"] == "score_adj"
    assert sorted(p["name"] for p in record["programs"]) == sorted(backends.ScoreAdj().attached())
    targets = dict((p["name"], p["target"]) for p in record["programs"])
    assert targets["ebpf_oom_adj_exec"] == "sched_process_exec"
    assert targets["ebpf_oom_adj_rename"] == "task_rename"
    assert targets["ebpf_oom_adj_attach"] == "cgroup_attach_task"
    assert targets["ebpf_oom_adj_fork"] == "sched_process_fork"
    assert targets["ebpf_oom_adj_exit"] == "sched_process_exit"
    for prog in backends.ScoreAdj().attached():
        with libbpf.pinned(layout.link(prog)) as fd:
            assert libbpf.link_info(fd)["prog_id"]
    with libbpf.pinned(layout.map(abi.EVENTS_MAP)) as fd:
        info = libbpf.map_info(fd)
    assert (info["type"], info["max_entries"]) == ("ringbuf", abi.EBPF_OOM_EVENTS_BYTES)
    # the process there at apply time got its value then, without an agent
    assert adj(matched) == 1000 and result["score_adj"]["written"] == 1
    assert result["score_adj"]["agent"] is False
    assert any("agent is not running" in w for w in result["warnings"])
    checked = backends.verify_policies(name=POLICY)
    assert [p for p in checked["problems"] if "agent" not in p] == []
    host.start_agent()
    checked = backends.verify_policies(name=POLICY)
    assert checked["problems"] == [] and checked["policies"][0]["score_adj"]["agent"] is True


# ---------------------------------------------------------------- the events

def test_a_process_started_later_gets_its_value(host, generic, tmp_path):
    """exec: a program whose file name matches a comm rule."""
    apply(generic, doc(prefer(1, comm="sa-late"), prefer(2, comm="sa-other")))
    host.start_agent()
    host.agent_says("following policy %s" % POLICY)
    program = str(tmp_path / "sa-late")
    shutil.copy(sys.executable, program)
    late = host.hold(argv0=program)
    assert eventually(late, 1000) == 1000


def test_a_new_name_changes_the_value_and_the_old_one_comes_back(host, generic):
    apply(generic, doc(prefer(1, comm="sa-renamed"), prefer(2, comm_prefix="sa-two")))
    host.start_agent()
    host.agent_says("following policy")
    proc = host.hold("unmatched", adj=50)
    proc.command("name sa-renamed")
    assert eventually(proc, 1000) == 1000
    proc.command("name sa-two-b")
    assert eventually(proc, 500) == 500
    proc.command("name plain")
    assert eventually(proc, 50) == 50


def test_a_move_into_a_cgroup_a_rule_names_changes_the_value(host, generic, cgroup_v2):
    point, top = cgroup_v2
    inside = os.path.join(point, top.lstrip("/"), "adj-in")
    os.mkdir(inside)
    try:
        apply(generic, doc(prefer(1, cgroup=top + "/adj-in")))
        host.start_agent()
        host.agent_says("following policy")
        proc = host.hold("moving", adj=10)
        with open(os.path.join(inside, "cgroup.procs"), "w") as f:
            f.write(str(proc.pid))
        assert eventually(proc, 1000) == 1000
        with open(os.path.join(point, top.lstrip("/"), "cgroup.procs"), "w") as f:
            f.write(str(proc.pid))
        assert eventually(proc, 10) == 10
    finally:
        for p in list(host.procs):
            p.kill()
            p.wait()
        host.procs = []
        os.rmdir(inside)


def test_children_of_a_process_written_keep_or_give_back_the_value(host, generic):
    """A child inherits its parent's value: it keeps it while a rule matches it, and gets
    the parent's own value back when none does; removal puts every one back."""
    apply(generic, doc(prefer(1, comm="sa-parent")))
    host.start_agent()
    host.agent_says("following policy")
    parent = host.hold("sa-parent", adj=30)
    assert eventually(parent, 1000) == 1000
    same = int(parent.command("fork -"))            # still named sa-parent
    other = int(parent.command("fork sa-unrelated"))
    host.children += [same, other]
    assert eventually(other, 30) == 30
    assert adj(same) == 1000
    deadline = time.monotonic() + BOUND
    while same not in scoreadj.Ledger.read().tasks and time.monotonic() < deadline:
        time.sleep(0.01)
    removed = backends.remove(POLICY)
    assert removed["changed"]
    assert (adj(parent), adj(same), adj(other)) == (30, 30, 30)


def notes(name=POLICY):
    """{pid: (start ticks, original, written)} of the policy's oom_adjusted map."""
    with libbpf.pinned(bpffs.Layout(bpffs.roots()[0], name).map(abi.ADJUSTED_MAP)) as fd:
        items = libbpf.map_items(fd, 4, ctypes.sizeof(abi.Adjusted))
    return dict((int.from_bytes(k, "little"), (scoreadj.ticks(n.start_ns), n.original, n.written))
                for k, n in ((k, abi.Adjusted.from_buffer_copy(v)) for k, v in items))


def dead(pid, bound=BOUND):
    """True once the process has exited (a zombie: its parent does not reap it)."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.01)
    return False


def test_the_fork_program_notes_a_child_that_inherits_a_value_and_the_exit_one_drops_it(
        host, generic):
    """No agent runs, so no event is handled: the kernel alone notes the child of a process
    written (its start, its parent's original, the value written), and a child of that
    child; a child whose parent carries another value than the one written is not noted;
    a process that exits leaves the map."""
    parent = host.hold("sa-noted", adj=30)
    apply(generic, doc(prefer(1, comm="sa-noted")))
    assert notes() == {parent.pid: (scoreadj.start_time(parent.pid), 30, 1000)}
    child = int(parent.command("fork -"))
    host.children.append(child)
    assert notes()[child] == (scoreadj.start_time(child), 30, 1000)
    other = host.hold("sa-noted", adj=40)           # matched, but never written here
    stray = int(other.command("fork -"))
    host.children.append(stray)
    assert other.pid not in notes() and stray not in notes()
    os.kill(child, signal.SIGKILL)
    assert dead(child)
    assert child not in notes() and parent.pid in notes()


def test_a_child_whose_events_are_lost_gets_its_own_value_from_the_first_sweep(host, generic):
    """A child of a process written renames itself out of every rule while no agent runs.
    The agent that starts drops the queued events (they say what was, not what is) and
    sweeps: the child, noted by the fork program, gets its parent's original back; with
    the child's events gone, only the note tells the sweep that its +1000 was written."""
    parent = host.hold("sa-lost", adj=30)
    apply(generic, doc(prefer(1, comm="sa-lost")))
    child = int(parent.command("fork sa-elsewhere"))
    host.children.append(child)
    assert adj(child) == 1000                       # inherited; nobody handled its events
    host.start_agent()
    said = host.agent_says("following policy")
    queued = int(said.split("written (")[1].split()[0])
    assert queued >= 2, said                        # its fork and its rename at least
    assert adj(child) == 30 and adj(parent) == 1000
    assert scoreadj.Ledger.read().tasks.get(child) is None
    assert child not in notes()
    assert backends.remove(POLICY)["changed"]
    assert (adj(parent), adj(child)) == (30, 30)


def test_a_process_that_drops_to_a_rules_uid_gets_its_value_at_once_where_fexit_loads(
        host, generic):
    """Where the kernel allows fexit programs (Debian's 6.1: tests/vm runs this test
    there), the program on commit_creds reports the new uid: the value comes with the
    setuid(), long before the agent's next sweep (it swept when it started). Where it
    refuses them (this machine), the apply says that uid changes wait for the sweep."""
    result = apply(generic, doc(prefer(1, uid=4242)))
    allowed = libbpf.fexit_allowed(abi.CREDS_FUNC)
    names = [p["name"] for p in result["record"]["programs"]]
    assert result["score_adj"]["credentials"] is allowed and (abi.CREDS_PROGRAM in names) is allowed
    waits = [w for w in result["warnings"] if "refuses fexit programs" in w]
    if not allowed:
        assert waits, result["warnings"]
        return
    assert waits == [], result["warnings"]
    host.start_agent()
    host.agent_says("following policy")
    daemon = host.hold("sa-daemon", adj=20)
    assert adj(daemon) == 20
    daemon.command("uid 4242")
    assert eventually(daemon, 1000) == 1000         # BOUND: far below the sweep's period
    assert scoreadj.SWEEP_EVERY > 5 * BOUND


def test_events_lost_while_the_agent_was_stopped_make_it_sweep_at_once(host, generic):
    """The agent is stopped (SIGSTOP) while a process a rule matches renames itself more
    times than the ring buffer holds records; then an unmatched process takes a matched
    name, and its event is lost too. Once the agent runs again it handles what the buffer
    kept, reads the count of events lost and sweeps: both processes carry their values
    within seconds, not at the next sweep 30 s on."""
    apply(generic, doc(prefer(1, comm="sa-flood-a"), prefer(2, comm="sa-flood-b")))
    host.start_agent()
    host.agent_says("following policy")
    busy = host.hold("sa-flood-a", adj=0)
    late = host.hold("plain", adj=5)
    assert eventually(busy, 1000) == 1000
    host.agent.send_signal(signal.SIGSTOP)
    try:
        slots = abi.EBPF_OOM_EVENTS_BYTES // (ctypes.sizeof(abi.AdjEvent) + 8)
        for _batch in range(slots // 500 + 2):
            busy.command("names " + ",".join(["sa-flood-a", "sa-flood-b"] * 250))
        late.command("name sa-flood-a")
    finally:
        host.agent.send_signal(signal.SIGCONT)
    assert (eventually(busy, 500), eventually(late, 1000)) == (500, 1000)
    _out, err = host.agent_output()
    assert "event(s) lost (the ring buffer was full): sweeping" in err.decode(), err


# ---------------------------------------------------------------- removal, stop, crash

def test_removal_puts_every_value_back(host, generic):
    procs = [host.hold("sa-rm-%d" % i, adj=i * 10) for i in range(3)]
    other = host.hold("sa-keep", adj=20)
    apply(generic, doc(prefer(1, comm_prefix="sa-rm")))
    assert [adj(p) for p in procs] == [1000] * 3 and adj(other) == 20
    removed = backends.remove(POLICY)
    assert removed["restored"] == 3
    assert [adj(p) for p in procs] == [0, 10, 20] and adj(other) == 20
    assert scoreadj.Ledger.read().tasks == {}
    assert not os.path.exists(bpffs.Layout(bpffs.roots()[0], POLICY).dir)


def test_a_clean_stop_of_the_agent_puts_every_value_back(host, generic):
    proc = host.hold("sa-stop", adj=5)
    apply(generic, doc(prefer(1, comm="sa-stop")))
    host.start_agent()
    host.agent_says("following policy")
    assert adj(proc) == 1000
    assert host.stop_agent(signal.SIGTERM) == 0
    assert adj(proc) == 5 and scoreadj.Ledger.read().tasks == {}


def test_after_sigkill_a_restarted_agent_resyncs_and_no_original_is_lost(host, generic):
    there = host.hold("sa-crash", adj=40)
    apply(generic, doc(prefer(1, comm_prefix="sa-crash")))
    host.start_agent()
    host.agent_says("following policy")
    host.stop_agent(signal.SIGKILL)
    assert adj(there) == 1000                       # nothing put back by a crash
    assert not scoreadj.agent_running()
    during = host.hold("sa-crash-2", adj=60)        # starts while no agent runs
    time.sleep(0.3)
    assert adj(during) == 60
    host.start_agent()
    assert "1 oom_score_adj value(s) written" in host.agent_says("following policy")
    assert adj(during) == 1000
    ledger = scoreadj.Ledger.read()
    assert sorted((ledger.tasks[p.pid][1]) for p in (there, during)) == [40, 60]
    assert backends.remove(POLICY)["changed"]
    assert (adj(there), adj(during)) == (40, 60)


def test_the_agent_lets_a_removed_policy_go_and_puts_its_values_back_itself(host, generic):
    """A policy unpinned behind the backend's back (no ledger restore by the remover)."""
    proc = host.hold("sa-gone", adj=15)
    apply(generic, doc(prefer(1, comm="sa-gone")))
    host.start_agent()
    host.agent_says("following policy")
    bpffs.remove_tree(bpffs.Layout(bpffs.roots()[0], POLICY).dir)
    assert "1 oom_score_adj value(s) put back" in host.agent_says("is gone")
    assert adj(proc) == 15


def test_a_second_policy_that_decides_ooms_is_refused(host, generic):
    apply(generic, doc(prefer(1, comm="sa-one")))
    with pytest.raises(backends.LoaderError,
                       match=r"beside policy %s, which already does \(backend score_adj\)" % POLICY):
        apply(generic, dict(doc(), name="adjtest2"), name="adjtest2")


def test_the_one_decider_check_runs_with_the_bpffs_lock_held(host, generic, monkeypatch):
    """Two applies at once cannot each miss the other: the check runs under the lock that
    every apply and remove takes (another open of the root cannot take it meanwhile)."""
    seen = []
    check = backends.one_decider

    def spy(root, name, deciding):
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append("free")
        except BlockingIOError:
            seen.append("held")
        finally:
            os.close(fd)
        return check(root, name, deciding)

    monkeypatch.setattr(backends, "one_decider", spy)
    apply(generic, doc(prefer(1, comm="sa-lock")))
    assert seen == ["held"]


def test_a_value_goes_only_to_the_process_that_started_when_the_agent_looked(host):
    """write_adj opens the process's /proc directory once and reads its start and writes
    the value through it: given another start (the pid was taken by a new process since
    the look), it writes nothing and says the process is gone."""
    proc = host.hold("sa-exact", adj=10)
    start = scoreadj.start_time(proc.pid)
    assert scoreadj.write_adj(proc.pid, 300, start + 1) == errno.ESRCH
    assert adj(proc) == 10
    assert scoreadj.write_adj(proc.pid, 300, start) is None
    assert adj(proc) == 300


def test_an_event_carries_the_start_of_its_process_as_proc_shows_it(host, generic):
    """The rename event of a process a rule matches names it by pid and by its start
    (start_boottime), which is /proc/PID/stat's starttime: an event of a pid reused since
    is told apart (Ledger.apply drops it)."""
    apply(generic, doc(prefer(1, comm="sa-start")))
    layout = bpffs.Layout(bpffs.roots()[0], POLICY)
    with libbpf.pinned(layout.map(abi.EVENTS_MAP)) as fd:
        ring = libbpf.RingBuffer(fd)
        try:
            ring.consume()
            held = host.hold("sa-start")
            deadline = time.monotonic() + 10
            found = []
            while not found and time.monotonic() < deadline:
                found = [abi.AdjEvent.from_buffer_copy(r[:ctypes.sizeof(abi.AdjEvent)])
                         for r in ring.poll(100)]
                found = [e for e in found if e.pid == held.pid]
        finally:
            ring.close()
    assert found, "no event of pid %d" % held.pid
    assert scoreadj.ticks(found[0].start_ns) == scoreadj.start_time(held.pid)


def test_an_unreadable_ledger_is_moved_aside_and_the_agent_keeps_working(host, generic, tmp_path):
    """A ledger that is not one (here a JSON list, written while the agent runs) is kept
    aside for a human, the agent says so on stderr, starts a new ledger and keeps writing
    values (it used to read it as empty and overwrite it, or crash in a loop on wrong
    types); an apply that finds one says so in its warnings."""
    run = tmp_path / "run"
    held = host.hold("sa-corrupt", adj=0)
    host.start_agent()
    apply(generic, doc(prefer(1, comm="sa-corrupt")))
    assert eventually(held, 1000) == 1000
    (run / scoreadj.LEDGER).write_text("[1, 2, 3]")
    late = host.hold("sa-corrupt", adj=0)
    assert eventually(late, 1000) == 1000
    assert host.agent.poll() is None
    [aside] = [p for p in os.listdir(str(run)) if p.startswith(scoreadj.LEDGER + ".corrupt-")]
    assert (run / aside).read_text() == "[1, 2, 3]"
    assert late.pid in scoreadj.Ledger.read().tasks
    _out, err = host.agent_output()
    assert "was not readable: moved to %s" % (run / aside) in err.decode(), err
    (run / scoreadj.LEDGER).write_text("{")
    again = apply(generic, doc(prefer(1, comm="sa-corrupt")))
    assert any("was not readable: moved to" in w for w in again["warnings"]), again


def test_a_backend_switch_that_fails_keeps_the_old_policy_live_and_at_boot(host, generic):
    """This host lacks the hook: switching the policy to evaluate_task fails before anything
    changes. The score_adj policy stays attached as it was, its values stay written, and
    its copy for the boot restore stays (the old code removed all three first)."""
    held = host.hold("sa-switch", adj=0)
    backend = backends.ScoreAdj()
    backend.apply(POLICY, generic, backend.plan(doc(prefer(1, comm="sa-switch"))))
    layout = bpffs.Layout(bpffs.roots()[0], POLICY)
    before = pins.read_record(layout)
    assert adj(held) == 1000 and state.saved(POLICY)
    hook = backends.EvaluateTask()
    with pytest.raises(backends.UnsupportedKernel):
        hook.apply(POLICY, generic, hook.plan(doc(prefer(1, comm="sa-switch"))))
    after = pins.read_record(layout)
    assert (after["backend"], after["loaded_at"]) == ("score_adj", before["loaded_at"])
    assert pins.link_problems(layout, after) == []
    assert adj(held) == 1000 and state.saved(POLICY)


def test_a_changed_document_rewrites_values_with_new_rules_and_the_same_ledger(host, generic):
    a = host.hold("sa-a", adj=0)
    b = host.hold("sa-b", adj=0)
    first = apply(generic, doc(prefer(1, comm="sa-a"), prefer(2, comm="sa-b")))
    assert (adj(a), adj(b)) == (1000, 500)
    second = apply(generic, doc(prefer(1, comm="sa-b")))
    assert second["action"] == "reloaded"  # new rule maps, written whole (loader: hand-over)
    maps = [dict((m["name"], m["map_id"]) for m in r["record"]["pinned_maps"]) for r in (first, second)]
    assert maps[1][abi.ADJUSTED_MAP] == maps[0][abi.ADJUSTED_MAP]
    assert maps[1][abi.RULES_MAP] != maps[0][abi.RULES_MAP]
    assert (adj(a), adj(b)) == (0, 1000)
    json.dumps(second["score_adj"])  # plain data for the module's result
