"""Three promises of the docs, each shown with real OOMs in a guest:

- ebpf.oom.policy in check mode with diff says which task a global OOM kills now and would
  kill under the document (its `prepared` diff line); nothing is loaded; applied for real,
  the next global OOM kills the task the diff named. An invalid document fails the task
  with the reason and gives no diff. (The session's small hook guest.)
- The off switch on a score_adj host (docs/operations.md): `ebpf-oom off`, through the task
  the docs show, puts back every oom_score_adj value the policy wrote, and the next OOM is
  the kernel's own (the largest task); `ebpf-oom on` brings the policy back, and the next
  OOM follows it. (The session's stock guest, the role with the score_adj backend.)
- The OOM observer keeps the last 64 victims in a ring (bpf/observer.h OBSERVER_VICTIMS):
  after more kills than that, ebpf.oom.events_info still reports the newest 64 kills by pid,
  in order, and its count is every kill. (The session's hook guest with no policy loaded:
  the kernel's own choice, and the patch's one kill per OOM, which seventy OOMs in a row
  need; on the stock kernel an OOM may kill twice when the guest's CPU is starved, as
  a CI run showed.)
"""

import contextlib
import json
import time

import pytest

from lab import Lab, adj, doc, eventually, killed_by, spec, task
from vmharness import documented_task, loaded, play, role

GLOBAL = "CONSTRAINT_NONE"
STOCK = None  # a stock kernel's OOM report names no policy
KERNEL = "default"  # the hook kernel's report when no policy decided
EBPF_OOM = "/usr/lib/ebpf-oom/ebpf-oom"
BPFFS = "/sys/fs/bpf/ebpf_oom"
STATE = "/var/lib/ebpf-oom"
MARKER = STATE + "/off"
AGENT_UNIT = "ebpf-oom-agent.service"
OFF_TASK = "Detach every policy; the boot restore brings none back"


def absent(guest, path):
    return guest.ssh(["test", "-e", path], check=False).returncode != 0


def observer_state(guest, tmp_path):
    """events_info's `observer`: whether it is loaded, and its count of kills."""
    return play(guest, [{"name": "seen", "ebpf.oom.events_info": {"sources": ["observer"]}}],
                tmp_path)["seen"]["observer"]


@contextlib.contextmanager
def observing(guest, tmp_path):
    """The OOM observer on the guest, as on every host the role manages: deployed when it
    is not there (and then removed again at the end)."""
    there = observer_state(guest, tmp_path)["loaded"]
    if not there:
        play(guest, [{"name": "observer", "ebpf.oom.observer": {"persist": False}}], tmp_path)
    try:
        yield
    finally:
        if not there:
            play(guest, [{"name": "observer", "ebpf.oom.observer": {"state": "absent"}}],
                 tmp_path)


# ------------------------------------------------------------------ check mode's diff

DIFF = "diff"
DIFF_DOC = doc(DIFF, {"match": {"comm": "lab-big"}, "action": "protect"},
               {"match": {"comm": "lab-job"}, "action": "prefer", "tier": 1})


def preview(document):
    """ebpf.oom.policy with the document, in check mode with diff (a task)."""
    return {"name": "preview %s" % document["name"], "ebpf.oom.policy": {"policy": document},
            "check_mode": True, "diff": True, "ignore_errors": True}


@pytest.mark.timeout(1800)
def test_check_mode_diff_names_the_task_the_next_global_oom_kills(global_vm, tmp_path):
    """The kernel alone would kill big (the largest); the document protects big and ranks
    job first. Check mode's diff says so and loads nothing; applied, the document decides
    the next global OOM, and job dies. (A host the role manages: the observer runs.)"""
    lab = Lab(global_vm)
    holders = spec(task("big", 120), task("mid", 90), task("job", 60), memcg=None)
    try:
        with observing(global_vm, tmp_path), lab.scenario("promise-diff", holders) as s:
            previewed = play(global_vm, [preview(DIFF_DOC)], tmp_path)["preview %s" % DIFF]
            left = [absent(global_vm, path)
                    for path in ("%s/%s" % (BPFFS, DIFF), "%s/policies/%s" % (STATE, DIFF))]
            names = loaded(global_vm, tmp_path)
            applied = play(global_vm, [{"name": "apply", "ebpf.oom.policy": {"policy": DIFF_DOC}}],
                           tmp_path)["apply"]
            report = s.oom()
    finally:  # also when check mode loaded it after all
        play(global_vm, [{"name": "remove", "ebpf.oom.policy": {"name": DIFF, "state": "absent"}}],
             tmp_path)
    # check mode: a change it would make, and nothing loaded or recorded
    assert not previewed.get("failed") and previewed["changed"], json.dumps(previewed, indent=1)
    assert left == [True, True] and DIFF not in names, (left, names)
    assert applied["action"] == "created", applied
    # applied for real, the next global OOM kills the task the diff named
    killed_by(report, "job", DIFF, spared=["big", "mid"], constraint=GLOBAL)
    # the diff line, in the words of ansible-doc ebpf.oom.policy (option policy): the task
    # a global OOM kills now (the kernel's own choice: no policy is loaded) and under the
    # document (its rule 1)
    prepared = previewed["diff"]["prepared"]
    assert prepared.endswith(", would kill %d lab-job (rule 1)\n" % s.pids["job"]), prepared
    assert prepared == ("a global OOM now kills %d lab-big (kernel), would kill %d lab-job "
                        "(rule 1)\n" % (s.pids["big"], s.pids["job"])), prepared


def test_check_mode_previews_a_document_on_a_host_where_nothing_was_loaded_yet(
        global_vm, tmp_path):
    """A host before its first policy: bpffs is mounted, but the collection's directory on it
    is not there yet (the first real apply makes it). Check mode with diff reports the
    change and the prediction, and still makes nothing. (The engine's root and state
    directory, set through its environment, name directories that do not exist.)"""
    fresh = {"EBPF_OOM_BPFFS_ROOT": "/sys/fs/bpf/ebpf_oom_fresh",
             "EBPF_OOM_STATE_DIR": "/var/lib/ebpf-oom-fresh"}
    assert all(absent(global_vm, path) for path in fresh.values())
    previewed = play(global_vm, [dict(preview(DIFF_DOC), environment=fresh)],
                     tmp_path)["preview %s" % DIFF]
    assert not previewed.get("failed") and previewed["changed"], json.dumps(previewed, indent=1)
    assert previewed["diff"]["prepared"].startswith("a global OOM now kills "), previewed["diff"]
    assert all(absent(global_vm, path) for path in fresh.values())


def test_check_mode_fails_an_invalid_document_with_its_error_not_a_diff(global_vm, tmp_path):
    """A document the schema refuses (an unknown action) and one it accepts but the
    language refuses (abort outside scope memcg): each fails in check mode, naming the
    field, with no diff, and nothing is loaded."""
    unknown = doc("bad-action", {"match": {"comm": "lab-job"}, "action": "kill"})
    abort = doc("bad-abort", {"match": {"comm": "lab-job"}, "action": "abort"})
    result = play(global_vm, [preview(unknown), preview(abort)], tmp_path, check=False)
    for document, reason in ((unknown, "rules[0].action: 'kill' is not one of "),
                             (abort, "rules[0].action: 'abort' is only allowed with scope memcg")):
        refused = result["preview %s" % document["name"]]
        assert refused.get("failed"), refused
        assert refused["msg"].startswith("policy document is invalid:\n"), refused
        assert reason in refused["msg"], refused
        assert "diff" not in refused, refused
        assert absent(global_vm, "%s/%s" % (BPFFS, document["name"]))


# ------------------------------------------------------------------ the off switch, score_adj

OFF = "offadj"
# The kernel's heuristic kills the largest task (big, then mid); the policy kills small.
OFF_DOC = doc(OFF, {"match": {"comm": "lab-small"}, "action": "prefer", "tier": 1})


def documented_on():
    """The docs' `on`: the off task "with "on" and changed_when: 'switched on' in
    oom_on.stdout"."""
    off = documented_task(OFF_TASK)
    argv = off["ansible.builtin.command"]["argv"]
    assert argv[-1] == "off", off
    return {"name": "switch on", "ansible.builtin.command": {"argv": argv[:-1] + ["on"]},
            "register": "oom_on", "changed_when": "'switched on' in oom_on.stdout"}


@pytest.fixture
def score_adj_role(stock_vm, tmp_path):
    """The role on the stock guest with one document: the score_adj backend, the agent
    (ebpf-oom-agent.service) running. At the end the guest is switched on, the policy
    removed (its values put back) and the agent's service stopped and removed, so that
    other tests' agents can run; the engine stays, as other role tests leave it."""
    settings = dict(bpf_oom_observer=False,
                    bpf_oom_restore_at_boot=False,
                    bpf_oom_policies=[{"name": OFF, "policy": OFF_DOC}])
    converge = role(**settings)
    try:
        yield lambda: play(stock_vm, [converge], tmp_path)
    finally:
        stock_vm.ssh([EBPF_OOM, "on"], check=False)
        stock_vm.ssh(["rm", "-f", MARKER], check=False)
        play(stock_vm, [{"name": "remove", "ebpf.oom.policy": {"name": OFF, "state": "absent"}}],
             tmp_path, check=False)
        stock_vm.ssh(["systemctl", "disable", "--now", AGENT_UNIT], check=False)
        stock_vm.ssh(["rm", "-f", "/etc/systemd/system/" + AGENT_UNIT], check=False)
        stock_vm.ssh(["systemctl", "daemon-reload"], check=False)


@pytest.mark.timeout(2400)
def test_off_puts_score_adj_values_back_and_leaves_ooms_to_the_kernel_until_on(
        stock_vm, stock_lab, score_adj_role, tmp_path):
    """small carried 50 of its own; the policy writes 1000 (tier 1 dies first). off puts 50
    back, and the next OOM kills big, the kernel's choice; on writes 1000 again, and the
    next OOM kills small, though mid is larger."""
    guest = stock_vm
    with stock_lab.scenario("promise-off", spec(task("big", 60), task("mid", 40),
                                                task("small", 20, adj=50))) as s:
        converged = score_adj_role()
        applied = [r["policies"] for name, r in converged.tasks if name.endswith(" : Converge the host")]
        steered = [adj(guest, s.pids[n]) for n in ("big", "mid", "small")]

        switched = play(guest, [documented_task(OFF_TASK)], tmp_path)[OFF_TASK]
        put_back = [adj(guest, s.pids[n]) for n in ("big", "mid", "small")]
        while_off = loaded(guest, tmp_path)
        agent = guest.ssh(["systemctl", "is-active", AGENT_UNIT], check=False).stdout.strip()
        kernels = s.oom()
        still = adj(guest, s.pids["small"])  # the agent, running, wrote nothing meanwhile

        on = play(guest, [documented_on()], tmp_path)["switch on"]
        again = eventually(guest, s.pids["small"], 1000)
        gone = absent(guest, MARKER)
        verified = play(guest, [{"name": "verify", "ebpf.oom.verify": {"name": OFF}}],
                        tmp_path, check=False)["verify"]
        decided = s.oom()

    # the role applied the document with the score_adj backend, and small carries tier 1's value
    assert applied and [p["backend"] for p in applied[-1].values()] == ["score_adj"], applied
    assert steered == [0, 0, 1000], steered
    # off: the policy detached with its backend, every value it wrote put back
    assert switched["changed"], switched
    assert "<6>ebpf-oom: detached policy %s" % OFF in switched["stdout_lines"], switched
    assert any("switched off" in line for line in switched["stdout_lines"]), switched
    assert put_back == [0, 0, 50], put_back
    assert OFF not in while_off and agent == "active", (while_off, agent)
    # the next OOM is the kernel's own choice: the largest task
    killed_by(kernels, "big", STOCK, spared=["mid", "small"])
    assert still == 50
    # on: the policy is back, small carries 1000 again, and the next OOM follows the policy
    assert on["changed"] and "<5>ebpf-oom: switched on" in on["stdout_lines"], on
    assert "<6>ebpf-oom: restored policy %s" % OFF in on["stdout_lines"], on
    assert again == 1000 and gone
    assert not verified.get("failed"), verified
    assert verified["policies"][0]["score_adj"] == {"agent": True, "mismatches": []}, verified
    killed_by(decided, "small", STOCK, spared=["mid"])


# ------------------------------------------------------------------ the observer's ring

RING = 64              # bpf/observer.h OBSERVER_VICTIMS
KILLS = RING + 6       # every slot written, the first six twice
HOLDERS = KILLS + 4    # four are never killed
ADJ_STEP = 25          # oom_score_adj from 1000 down: the kernel kills them in that order


def holder(i):
    return "h%02d" % i


@pytest.fixture
def observer(hook_vm, tmp_path):
    with observing(hook_vm, tmp_path):
        yield


def events(guest, tmp_path):
    """events_info from the observer alone, and from both sources (the default)."""
    found = play(guest, [
        {"name": "ring", "ebpf.oom.events_info": {"sources": ["observer"]}},
        {"name": "both", "ebpf.oom.events_info": {}}], tmp_path)
    return found["ring"], found["both"]


@pytest.mark.timeout(3600)
def test_the_observer_ring_wraps_and_events_info_keeps_the_newest_64_kills(
        hook_vm, hook_lab, observer, tmp_path):
    """Seventy one-kill memory cgroup OOMs among 74 tiny holders, which the kernel kills in
    the order of their oom_score_adj (the trigger, at -1000, never dies): the observer's
    count grows by 70, and its ring holds the last 64 victims, by pid, in the order of the
    kills; the six first ones are gone from it (the kernel log may still have them).
    On the stock guest a CI run once saw one OOM kill h30 and then h31: the stock kernel
    stops waiting for a victim once its mm is marked MMF_OOM_SKIP, before its pages are
    freed, and a vCPU starved by the host's other guests let the trigger allocate again
    in that window. The hook kernel's patch hides a victim only once its pages are freed,
    so the test runs there, with no policy loaded (the kernel's choice, policy_name=default).
    Measured under TCG on the stock guest: the holders ready in 5-7 s, the 70 OOMs in
    144-151 s (a median of 2 s each), the whole test about 200 s."""
    holders = [task(holder(i), 1, adj=1000 - ADJ_STEP * i) for i in range(HOLDERS)]
    first = observer_state(hook_vm, tmp_path)["kills"]
    victims, took = [], []
    started = time.monotonic()
    with hook_lab.scenario("promise-ring", spec(*holders, trigger={"adj": -1000})) as s:
        ready = time.monotonic()
        for i in range(KILLS):
            t0 = time.monotonic()
            report = s.oom()
            took.append(time.monotonic() - t0)
            spared = [holder(j) for j in range(i + 1, HOLDERS)]
            victims.extend(killed_by(report, holder(i), KERNEL, spared=spared))
        ring, both = events(hook_vm, tmp_path)
    took.sort()
    print("\nobserver ring: %d holders ready in %.1f s; %d OOMs in %.1f s (median %.1f s, "
          "max %.1f s); the whole scenario %.1f s"
          % (HOLDERS, ready - started, KILLS, sum(took), took[len(took) // 2], took[-1],
             time.monotonic() - started))

    assert ring["observer"] == {"loaded": True, "kills": first + KILLS}, ring["observer"]
    # the ring: the newest 64 kills, oldest first, numbered by the observer's count
    newest = victims[-RING:]
    assert [e["pid"] for e in ring["events"]] == newest, (ring["events"], victims)
    assert [e["observer_seq"] for e in ring["events"]] == list(
        range(first + KILLS - RING + 1, first + KILLS + 1)), ring["events"]
    assert all(e["comm"] in (None, "lab-" + holder(i))
               for e, i in zip(ring["events"], range(KILLS - RING, KILLS))), ring["events"]
    # both sources: each of the newest kills once, the observer's record among its sources;
    # the first kills, gone from the ring, at most from the kernel log
    by_pid = {}
    for e in both["events"]:
        by_pid.setdefault(e["pid"], []).append(e)
    assert all(len(by_pid.get(pid, [])) == 1 and "observer" in by_pid[pid][0]["sources"]
               for pid in newest), [by_pid.get(pid) for pid in newest]
    assert all(e["sources"] == ["kmsg"] for pid in victims[:-RING]
               for e in by_pid.get(pid, [])), [by_pid.get(pid) for pid in victims[:-RING]]
