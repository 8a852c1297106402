"""The score_adj backend decides real OOMs on a stock Debian kernel (the image's own 6.1,
no hook): documents applied through ebpf.oom.policy with backend auto, the agent running
as a systemd service that systemd restarts (Restart=always), and memory cgroups filled
until the kernel's own heuristic, steered by the oom_score_adj the backend wrote, kills.

In every scenario the kernel alone would kill the largest task (the baseline shows it);
the document names another, and that one dies. A stock kernel prints no policy name in
its OOM report (oomlab reports None); events_info names the policy from the agent's
ledger. The agent here runs the engine copied into the
guest, as the host command `ebpf-oom agent` runs it (the role installs the same).
On the hook kernel, backend auto still chooses the hook (the last test).
"""

import io
import os
import tarfile
import time

import pytest

from lab import Policies, adj, doc, eventually, killed_by, predicted, spec, task
from vmharness import REPO, play

AGENT_UNIT = "ebpf-oom-agent-vmtest.service"
ENGINE = "/usr/lib/ebpf-oom-vmtest"
AGENT = ("import sys; sys.path.insert(0, %r); from ebpf_oom_engine import agent; "
         "sys.exit(agent.main())" % ENGINE)
STOCK = None  # a stock kernel's OOM report names no policy


@pytest.fixture(scope="module")
def agent(stock_vm, tmp_path_factory):
    """The agent in the stock guest: the engine (plugins/module_utils) as the package
    ebpf_oom_engine, run by a transient service that systemd restarts when it dies."""
    archive = tmp_path_factory.mktemp("engine") / "engine.tar"
    source = os.path.join(REPO, "plugins", "module_utils")
    with tarfile.open(str(archive), "w") as tar:
        for name in sorted(os.listdir(source)):
            if name.endswith(".py") and name != "__init__.py":
                tar.add(os.path.join(source, name), "ebpf_oom_engine/" + name)
        empty = tarfile.TarInfo("ebpf_oom_engine/__init__.py")
        tar.addfile(empty, io.BytesIO(b""))
    stock_vm.ssh(["mkdir", "-p", ENGINE])
    stock_vm.put(archive, ENGINE + "/engine.tar")
    stock_vm.ssh(["tar", "-C", ENGINE, "-xf", ENGINE + "/engine.tar"])
    stock_vm.ssh(["systemd-run", "--unit", AGENT_UNIT, "--property=Restart=always",
                  "--property=RestartSec=1", "python3", "-c", AGENT])
    try:
        yield stock_vm
    finally:
        stock_vm.ssh(["systemctl", "stop", AGENT_UNIT], check=False)
        stock_vm.ssh(["systemctl", "reset-failed", AGENT_UNIT], check=False)
        stock_vm.ssh(["rm", "-rf", ENGINE], check=False)


@pytest.fixture(scope="module")
def policies(agent, tmp_path_factory):
    applied = Policies(agent, tmp_path_factory.mktemp("policies"))
    try:
        yield applied
    finally:
        applied.remove_all()


def agent_pid(guest):
    return int(guest.ssh(["systemctl", "show", "-P", "MainPID", AGENT_UNIT]).stdout.strip() or 0)


def applied_with(result, name, backend="score_adj"):
    task_result = result["apply %s" % name]
    assert not task_result.get("failed") and task_result["backend"] == backend, task_result
    return task_result


# ------------------------------------------------------------------ the baseline

def test_without_policy_the_stock_kernel_kills_the_largest_task(stock_lab, policies):
    policies.apply()
    with stock_lab.scenario("sa-baseline", spec(task("big", 60), task("mid", 30))) as s:
        report = s.oom()
    killed_by(report, "big", STOCK, spared=["mid"])


# ------------------------------------------------------------------ the kernel, steered

def test_auto_chooses_score_adj_here_and_protect_spares_the_largest_task(stock_lab, policies):
    with stock_lab.scenario("sa-protect", spec(task("big", 60), task("mid", 30))) as s:
        result = policies.apply(doc("steer", {"match": {"comm": "lab-big"}, "action": "protect"}))
        applied = applied_with(result, "steer")
        assert applied["score_adj"]["written"] == 1 and applied["score_adj"]["agent"], applied
        assert adj(policies.guest, s.pids["big"]) == -1000
        report = s.oom()
    killed_by(report, "mid", STOCK, spared=["big"])


def test_select_by_pid_kills_that_task_not_the_largest(stock_lab, policies):
    with stock_lab.scenario("sa-select", spec(task("big", 60), task("small", 20),
                                              task("other", 30))) as s:
        applied_with(policies.apply(doc("steer", {"match": {"pid": s.pids["small"]},
                                                  "action": "select"})), "steer")
        report = s.oom()
    killed_by(report, "small", STOCK, spared=["big", "other"])


def story(s):
    return doc("steer",
               {"match": {"comm": "postgres"}, "action": "protect"},
               {"match": {"cgroup": s.path("batch")}, "action": "prefer", "tier": 1},
               {"match": {"cgroup": s.path("web")}, "action": "prefer", "tier": 2})


def test_tier_one_dies_first_and_the_protected_largest_task_never(stock_lab, policies):
    with stock_lab.scenario("sa-story", spec(task("postgres", 60, comm="postgres"),
                                             task("batch", 20), task("web", 30),
                                             task("other", 40))) as s:
        applied = applied_with(policies.apply(story(s)), "steer")
        assert applied["score_adj"]["bands"] == [
            {"class": "tier 1", "oom_score_adj": 1000}, {"class": "tier 2", "oom_score_adj": 500},
            {"class": "no rule matches", "oom_score_adj": 0}], applied
        report = s.oom()
    killed_by(report, "batch", STOCK, spared=["postgres", "web", "other"])


def test_tier_two_dies_before_a_larger_task_no_rule_matches(stock_lab, policies):
    with stock_lab.scenario("sa-story-web", spec(task("postgres", 60, comm="postgres"),
                                                 task("web", 30), task("other", 45),
                                                 cgroups=["batch"])) as s:
        applied_with(policies.apply(story(s)), "steer")
        report = s.oom()
    killed_by(report, "web", STOCK, spared=["postgres", "other"])


def test_a_last_tier_below_a_prefer_fallback_outlives_smaller_tasks(stock_lab, policies):
    """database_server's shape: everything unnamed is tier 1 (keeps its value), the engine
    tier 1000 (a negative value): the largest task, the engine, does not die."""
    with stock_lab.scenario("sa-db", spec(task("db", 70, comm="mysqld"), task("app", 30),
                                          task("tool", 15))) as s:
        applied_with(policies.apply(doc("steer", {"match": {"comm": "mysqld"}, "action": "prefer",
                                                  "tier": 1000},
                                        fallback={"action": "prefer", "tier": 1})), "steer")
        assert adj(policies.guest, s.pids["db"]) == -999
        report = s.oom()
    killed_by(report, "app", STOCK, spared=["db", "tool"])


def test_explain_predicts_the_kernels_victims_not_the_hooks(stock_lab, policies):
    """Tier 1 (+1000) holds 5 MiB, tier 2 (+500) 90 MiB: under the hook tier 1 would die
    first; here the kernel's badness (rss + value x totalpages / 1000, a memory.max of
    about 130 MiB) puts the tier 2 process first, then tier 1. explain says so before the
    policy is applied (a preview, backend auto) and after (the values the agent wrote), and
    two OOMs in a row kill in that order. (The limit is set first: with none, explain
    computes with the machine's RAM, as the kernel would in such an OOM, and the +1000
    band dominates.)"""
    with stock_lab.scenario("sa-explain", spec(task("a", 5), task("b", 90), task("c", 20))) as s:
        document = doc("steer", {"match": {"comm": "lab-a"}, "action": "prefer", "tier": 1},
                       {"match": {"comm": "lab-b"}, "action": "prefer", "tier": 2})
        oom = {"memcg": s.spec["memcg"]}
        s.limit()  # the badness explain computes depends on it, as the kernel's does
        preview = play(policies.guest, [{"name": "preview", "ebpf.oom.explain": {
            "policy": document, "oom": oom}}], policies.tmp_path)["preview"]
        result = policies.apply(document, explain=oom)
        applied_with(result, "steer")
        first = s.oom()
        killed_by(first, "b", STOCK, spared=["a", "c"])
        second = s.oom()
    killed_by(second, "a", STOCK, spared=["c"])
    for explained in (preview, result["explain"]):
        assert explained["backend"] == "score_adj", explained
        predicted(explained, first, second)
    assert [row["oom_score_adj"] for row in preview["ranking"][:2]] == [500, 1000], preview
    # The kernel's reports name no policy; events_info names the one whose agent wrote the
    # victims' values.
    found = play(policies.guest, [{"name": "events", "ebpf.oom.events_info": {"since": "15m"}}],
                 policies.tmp_path)["events"]["events"]
    policy_of = dict((e["pid"], e["policy"]) for e in found)
    assert [policy_of.get(r.victim_pids[0]) for r in (first, second)] == ["steer", "steer"], found


# ------------------------------------------------------------------ the agent

def test_a_process_started_after_the_policy_was_applied_dies_first(stock_lab, policies):
    with stock_lab.scenario("sa-late", spec(task("big", 60), task("mid", 30),
                                            task("job", 20, cgroup="batch/job", late=True),
                                            cgroups=["batch"])) as s:
        applied_with(policies.apply(doc("steer", {"match": {"cgroup": s.path("batch")},
                                                  "action": "prefer", "tier": 1})), "steer")
        s.start("job")
        assert eventually(policies.guest, s.pids["job"], 1000) == 1000
        report = s.oom()
    killed_by(report, "job", STOCK, spared=["big", "mid"])


def test_the_agent_killed_with_sigkill_comes_back_and_resyncs(stock_lab, policies):
    guest = policies.guest
    with stock_lab.scenario("sa-crash", spec(task("big", 60), task("mid", 30),
                                             task("job", 20, late=True))) as s:
        applied_with(policies.apply(doc("steer", {"match": {"comm": "lab-job"}, "action": "prefer",
                                                  "tier": 1})), "steer")
        before = agent_pid(guest)
        guest.ssh(["kill", "-KILL", str(before)])
        s.start("job")  # its events come while no agent runs
        deadline = time.monotonic() + 60
        while agent_pid(guest) in (0, before) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert agent_pid(guest) not in (0, before)
        assert eventually(guest, s.pids["job"], 1000) == 1000
        checked = play(guest, [{"name": "verify", "ebpf.oom.verify": {"name": "steer"}}],
                       policies.tmp_path)["verify"]
        assert checked["policies"][0]["score_adj"] == {"agent": True, "mismatches": []}, checked
        report = s.oom()
    killed_by(report, "job", STOCK, spared=["big", "mid"])


KEEPER = r"""
import ctypes, os, signal, sys, time
libc = ctypes.CDLL(None)
libc.prctl(15, b"sa-keeper", 0, 0, 0)
ready, go = sys.argv[1], sys.argv[2]
open(ready + ".tmp", "w").write("%d\n" % os.getpid())
os.rename(ready + ".tmp", ready)
while not os.path.exists(go):
    time.sleep(0.1)
pids = []
for child in sys.argv[3:]:
    name, cgroup, mib = child.split(":")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        libc.prctl(15, ("lab-" + name).encode(), 0, 0, 0)
        open("/sys/fs/cgroup%s/cgroup.procs" % cgroup, "w").write("0")
        keep = bytearray(int(mib) << 20)
        for at in range(0, len(keep), 4096):
            keep[at] = 1
        os.write(w, b"r")
        while True:
            signal.pause()
    os.read(r, 1)
    pids.append("%s=%d" % (name, pid))
open(go + ".pids.tmp", "w").write(" ".join(pids))
os.rename(go + ".pids.tmp", go + ".pids")
while True:
    signal.pause()
"""


def wait_file(guest, path, bound=60):
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        done = guest.ssh(["cat", path], check=False)
        if done.returncode == 0:
            return done.stdout.strip()
        time.sleep(0.5)
    raise AssertionError("%s did not appear in %d s" % (path, bound))


def test_children_forked_while_the_agent_was_down_end_with_their_own_values(stock_lab, policies):
    """A protected process (-1000) forks two children while the agent is stopped (SIGSTOP);
    one renames itself and moves into a cgroup no rule names, the other into tier 1's. The
    agent is then killed (their events still queued) and systemd starts it again: it drops
    the queued events and sweeps. The fork program noted both children (they inherited a
    value written), so the sweep knows their -1000 was written, not theirs: the first gets
    its own value (0) back, the second its tier's. Two OOMs: tier 1's child, then the
    largest task (the first child, which would never die with the -1000 it inherited)."""
    guest = policies.guest
    ready, go = "/run/sa-keeper.ready", "/run/sa-keeper.go"
    guest.ssh(["rm", "-f", ready, go, go + ".pids"])
    with stock_lab.scenario("sa-fork", spec(task("mid", 30), cgroups=["free", "tier1"])) as s:
        applied_with(policies.apply(doc(
            "steer", {"match": {"comm": "sa-keeper"}, "action": "protect"},
            {"match": {"cgroup": s.path("tier1")}, "action": "prefer", "tier": 1})), "steer")
        guest.ssh(["systemd-run", "--unit", "sa-keeper", "--collect", "python3", "-c", KEEPER,
                   ready, go, "free:%s:60" % s.path("free"), "tier:%s:10" % s.path("tier1")])
        try:
            keeper = int(wait_file(guest, ready))
            assert eventually(guest, keeper, -1000) == -1000
            stopped = agent_pid(guest)
            guest.ssh(["kill", "-STOP", str(stopped)])
            guest.ssh(["touch", go])
            children = dict(c.split("=") for c in wait_file(guest, go + ".pids").split())
            for name, pid in children.items():
                s.adopt(name, int(pid))
                assert adj(guest, int(pid)) == -1000  # inherited; the agent is stopped
            guest.ssh(["kill", "-KILL", str(stopped)])
            deadline = time.monotonic() + 60
            while agent_pid(guest) in (0, stopped) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert agent_pid(guest) not in (0, stopped)
            assert eventually(guest, s.pids["tier"], 1000) == 1000
            assert eventually(guest, s.pids["free"], 0) == 0
            first = s.oom()
            killed_by(first, "tier", STOCK, spared=["mid"])
            second = s.oom()
            killed_by(second, "free", STOCK, spared=["mid"])
        finally:
            guest.ssh(["systemctl", "stop", "sa-keeper"], check=False)
            guest.ssh(["rm", "-f", ready, go, go + ".pids"], check=False)


def test_a_daemon_that_drops_to_a_uid_rules_uid_gets_its_value_at_once(stock_lab, policies):
    """The task starts as root and calls setuid(4242) before it touches its memory, as a
    daemon drops privileges; a select rule names uid 4242. Debian's 6.1 allows the fexit
    program on commit_creds, so the agent hears of the new uid at once: the +1000 comes
    within seconds of the start, while the agent's sweep (at the apply, then every 30 s)
    is not due; the daemon, not the larger task, dies."""
    with stock_lab.scenario("sa-uid", spec(task("big", 60),
                                           task("daemon", 20, uid=4242, late=True))) as s:
        applied = applied_with(policies.apply(doc("steer", {"match": {"uid": 4242},
                                                            "action": "select"})), "steer")
        assert applied["score_adj"]["credentials"] is True, applied
        s.start("daemon")
        assert eventually(policies.guest, s.pids["daemon"], 1000, bound=5) == 1000
        report = s.oom()
    killed_by(report, "daemon", STOCK, spared=["big"])


def test_state_absent_puts_every_value_back(stock_lab, policies):
    guest = policies.guest
    with stock_lab.scenario("sa-absent", spec(task("a", 20, adj=100), task("b", 20, adj=-50),
                                              task("c", 20, adj=300), task("late", 20, adj=7,
                                                                           late=True))) as s:
        applied_with(policies.apply(doc(
            "steer", {"match": {"comm": "lab-a"}, "action": "protect"},
            {"match": {"comm": "lab-b"}, "action": "select"},
            {"match": {"comm": "lab-late"}, "action": "prefer", "tier": 1})), "steer")
        s.start("late")
        assert eventually(guest, s.pids["late"], 500) == 500
        assert [adj(guest, s.pids[n]) for n in ("a", "b", "c")] == [-1000, 1000, 300]
        removed = policies.apply()["remove steer"]  # the agent may put them back first
        assert removed["changed"], removed
        assert [adj(guest, s.pids[n]) for n in ("a", "b", "c", "late")] == [100, -50, 300, 7]


def test_abort_is_refused_on_this_host_naming_the_rule(stock_lab, policies):
    result = policies.apply(doc("steer", {"match": {"comm": "lab-x"}, "action": "abort"},
                                scope="memcg"), check=False)
    refused = result["apply steer"]
    assert refused.get("failed"), refused
    assert "rules[0].action: 'abort' cannot be expressed through oom_score_adj" in refused["msg"]


# ------------------------------------------------------------------ the hook kernel

def test_on_the_hook_kernel_auto_still_chooses_the_hook(hook_vm, hook_policies, tmp_path):
    info = play(hook_vm, [{"name": "info", "ebpf.oom.kernel_info": {"policies": False}}],
                tmp_path)["info"]
    assert info["backend"] == "evaluate_task" and info["backends"][0] == "evaluate_task", info
    result = hook_policies.apply(doc("hookauto", {"match": {"comm": "lab-x"}, "action": "prefer",
                                                  "tier": 1}))
    applied = applied_with(result, "hookauto", backend="evaluate_task")
    assert "score_adj" not in applied
    hook_policies.remove_all()


def test_a_switch_to_the_hook_swaps_the_programs_then_puts_the_values_back(hook_lab, hook_policies):
    """The same policy under score_adj, then under evaluate_task: the load swaps the hook's
    programs in for the score_adj ones (the old ones go only once the new are attached),
    then the values written over are put back, and the hook decides the next OOM."""
    guest = hook_policies.guest
    document = doc("switch", {"match": {"comm": "lab-job"}, "action": "prefer", "tier": 1})
    with hook_lab.scenario("switch", spec(task("big", 60), task("job", 20, adj=7))) as s:
        applied_with(hook_policies.apply(document, backend="score_adj"), "switch")
        assert adj(guest, s.pids["job"]) == 1000
        switched = applied_with(hook_policies.apply(document, backend="evaluate_task"), "switch",
                                backend="evaluate_task")
        assert switched["changed"] and switched["action"] == "reloaded", switched
        assert adj(guest, s.pids["job"]) == 7
        report = s.oom()
    killed_by(report, "job", "switch", spared=["big"])
    hook_policies.remove_all()
