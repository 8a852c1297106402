"""Shadow mode with real OOMs in the session's hook guest: a policy judges every OOM and
decides none, and ebpf.oom.events_info pairs each kill with the task it would have killed.

One scenario, two OOMs of one memory cgroup holding small, mid and large:

1. Three policies in shadow, none enforcing: the kernel kills the largest. `small1st`
   would have killed small (`agrees: false`, its disagreement counter is 1), `large1st`
   would have killed large, the kernel's choice (`agrees: true`), `abortmid` would have
   aborted the OOM (an abort rule matches mid). verify says shadow.
2. small1st switched to enforce through the module's `mode`, in place: the same programs
   (ids) keep running, the record says enforce, verify agrees.
3. The next OOM follows small1st (its name in the report): small dies, mid lives; large1st,
   still in shadow beside the enforcing policy, changed nothing and would have killed mid.
4. large1st may not enforce beside small1st (one decider per host); its mode map written
   behind its record's back makes verify fail, naming both modes.
"""

import json
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab import doc, killed_by, spec, task
from vmharness import REPO, loaded, play, run_playbook

METRICS = "/run/ebpf-oom-test-shadow.prom"
MODE_PIN = "/sys/fs/bpf/ebpf_oom/%s/map_oom_mode"
SMALL_FIRST = doc("small1st", {"match": {"comm": "lab-small"}, "action": "prefer", "tier": 1},
                  {"match": {"comm_prefix": "lab-"}, "action": "prefer", "tier": 2}, mode="shadow")
LARGE_FIRST = doc("large1st", {"match": {"comm_prefix": "lab-"}, "action": "prefer", "tier": 1},
                  mode="shadow")
ABORT_MID = doc("abortmid", {"match": {"comm": "lab-mid"}, "action": "abort"}, scope="memcg",
                mode="shadow")
ROLLOUT = os.path.join(REPO, "playbooks", "rollout.yml")
HOLDERS = spec(task("small", 20), task("mid", 40), task("large", 80))


def seen(guest, tmp_path, names):
    """events_info (writing the metrics file) and verify of the named policies, one play."""
    tasks = [{"name": "events", "ebpf.oom.events_info": {"since": "1h", "metrics_file": METRICS}}]
    tasks += [{"name": "verify " + n, "ebpf.oom.verify": {"name": n}} for n in names]
    played = play(guest, tasks, tmp_path)
    text = guest.ssh(["cat", METRICS]).stdout
    samples = dict(((s.name, tuple(sorted(s.labels.items()))), s.value)
                   for family in text_string_to_metric_families(text) for s in family.samples)
    modes = dict((n, played["verify " + n]["policies"][0]["mode"]) for n in names)
    return played["events"], samples, modes


def verdicts(events, pid):
    """{policy: its shadow entry} of the one event that killed pid."""
    mine = [ev for ev in events["events"] if ev["pid"] == pid]
    assert len(mine) == 1, json.dumps(events, indent=1)
    return dict((v["policy"], v) for v in mine[0]["shadow"])


def shadow_counts(samples, policy):
    return [samples.get(("ebpf_oom_shadow_%s_total" % what, (("policy", policy),)))
            for what in ("kills", "disagreements")]


def prog_ids(result):
    return sorted((p["name"], p["prog_id"]) for p in result["record"]["programs"])


@pytest.mark.timeout(1800)
def test_shadow_records_what_it_would_kill_and_a_switch_to_enforce_decides_the_next_oom(
        hook_vm, hook_lab, hook_policies, tmp_path):
    try:
        with hook_lab.scenario("shadow", HOLDERS) as s:
            applied = hook_policies.apply(SMALL_FIRST, LARGE_FIRST, ABORT_MID)
            first = s.oom()
            events1, samples1, modes1 = seen(hook_vm, tmp_path, ["small1st", "large1st"])
            switched = play(hook_vm, [{"name": "enforce", "ebpf.oom.policy": {
                "policy": SMALL_FIRST, "mode": "enforce"}}], tmp_path)["enforce"]
            second = s.oom()
            events2, samples2, modes2 = seen(hook_vm, tmp_path, ["small1st", "large1st"])
            # large1st to enforce beside small1st, which decides: refused, naming it; then its
            # mode map written behind the record's back: verify says so
            refused = play(hook_vm, [{"name": "enforce", "ignore_errors": True, "ebpf.oom.policy": {
                "policy": LARGE_FIRST, "mode": "enforce"}}], tmp_path)["enforce"]
            hook_vm.ssh(["bpftool", "map", "update", "pinned", MODE_PIN % "large1st",
                         "key", "0", "0", "0", "0", "value", "0", "0", "0", "0"])
            behind = play(hook_vm, [{"name": "verify", "ignore_errors": True,
                                     "ebpf.oom.verify": {"name": "large1st"}}], tmp_path)["verify"]
    finally:
        hook_vm.ssh(["rm", "-f", METRICS], check=False)
    pids = s.pids
    # 1. both in shadow: the kernel decides and kills the largest
    assert [applied["apply %s" % n]["mode"] for n in ("small1st", "large1st")] == ["shadow"] * 2
    killed_by(first, "large", "default", spared=["small", "mid"])
    judged = verdicts(events1, pids["large"])
    assert judged["small1st"]["would_kill"]["pid"] == pids["small"], judged
    assert judged["small1st"]["would_kill"]["comm"] == "lab-small", judged
    assert judged["small1st"]["would_kill"]["rule"] == "rules[0]", judged
    assert judged["small1st"]["agrees"] is False, judged
    assert judged["large1st"]["would_kill"]["pid"] == pids["large"], judged
    assert judged["large1st"]["agrees"] is True, judged
    # an abort rule matched a candidate of this memcg OOM: it would have killed nobody
    assert judged["abortmid"]["would_abort"] is True and judged["abortmid"]["would_kill"] is None, judged
    assert judged["abortmid"]["agrees"] is False, judged
    assert shadow_counts(samples1, "small1st") == [1, 1], samples1
    assert shadow_counts(samples1, "large1st") == [1, 0], samples1
    assert modes1 == {"small1st": "shadow", "large1st": "shadow"}, modes1
    # 2. the switch is one write: same programs, the record says enforce
    before = applied["apply small1st"]
    assert switched["action"] == "maps_updated" and switched["mode"] == "enforce", switched
    assert prog_ids(switched) == prog_ids(before), (switched, before)
    assert switched["record"]["document"]["mode"] == "enforce", switched["record"]
    assert modes2 == {"small1st": "enforce", "large1st": "shadow"}, modes2
    # 3. the next OOM is small1st's; large1st, in shadow beside it, changed nothing
    killed_by(second, "small", "small1st", spared=["mid"])
    judged = verdicts(events2, pids["small"])
    assert sorted(judged) == ["abortmid", "large1st"], judged  # small1st decided this one
    assert judged["large1st"]["would_kill"]["pid"] == pids["mid"], judged
    assert judged["large1st"]["agrees"] is False, judged
    assert shadow_counts(samples2, "large1st") == [2, 1], samples2
    assert shadow_counts(samples2, "small1st") == [1, 1], samples2  # its shadow days, kept
    # one decider: a second policy may not enforce beside small1st; verify reads the live mode
    assert refused.get("failed") and "beside policy small1st, which already does" in refused["msg"], refused
    assert behind.get("failed") and behind["policies"][0]["mode"] == "enforce", behind
    assert behind["problems"] == ["policy large1st runs in enforce mode, its record says shadow: apply it again"], behind


def test_the_rollout_shadow_phase_skips_a_stock_kernel_host_and_says_why(stock_vm, tmp_path):
    """playbooks/rollout.yml's shadow phase on the stock guest (score_adj, no hook), as
    docs/operations.md runs it first (rollout_shadow_only): the host is skipped, its row of
    the table says why, the batches do not run, and nothing is loaded."""
    before = loaded(stock_vm, tmp_path)
    done = run_playbook(ROLLOUT, stock_vm.inventory(tmp_path), {
        "rollout_policy": dict(SMALL_FIRST, mode="enforce"), "rollout_shadow_only": True})
    after = loaded(stock_vm, tmp_path)
    row = [line for line in done.stdout.splitlines() if stock_vm.name in line and "not judged" in line]
    assert row and "not judged: backend score_adj cannot run a policy in shadow" in row[0], done.stdout
    assert "Apply the policy" not in done.stdout, done.stdout
    assert after == before and "rollout-shadow" not in after, (before, after)
