"""Shadow mode's pure logic: a verdict as events_info reports it, the pairing of verdicts
with kill events (fed pairs that must not match), which records decide OOMs, and the
refusals (the score_adj backend, an unknown mode). The kernel side (which task a shadow
policy names, with real OOMs) is tests/vm/test_shadow_vm.py's."""

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import abi, backends, language, shadow
from ansible_collections.ebpf.oom.plugins.module_utils.errors import RenderError
from ansible_collections.ebpf.oom.plugins.module_utils.observer import MATCH_WINDOW_S

DOC = {"name": "next", "rules": [{"match": {"comm": "job"}, "action": "prefer", "tier": 1}]}


def logged(pid=0, killed=0, flags=0, rule=0, start=100.0, end=100.5, comm=b"job"):
    return abi.Verdict(seq=1, start_ns=int(start * 1e9), end_ns=int(end * 1e9), cgroup_id=7,
                       points=10, pid=pid, rule=rule, action=abi.EBPF_OOM_ACT_PREFER, tier=1,
                       killed=killed, flags=flags, comm=comm)


def judged(policy, *verdicts):
    return {"policy": policy, "mode": "shadow", "judged": len(verdicts), "kills": len(verdicts),
            "disagreements": 0, "verdicts": [shadow.verdict(v, {7: "/jobs"}) for v in verdicts]}


def test_a_verdict_names_the_task_and_agrees_only_when_the_kernel_killed_it():
    same = shadow.verdict(logged(pid=42, killed=42), {7: "/jobs"})
    assert same["would_kill"] == {"pid": 42, "comm": "job", "cgroup": "/jobs", "rule": "rules[0]", "tier": 1}
    assert same["agrees"] is True
    assert shadow.verdict(logged(pid=42, killed=43), {})["agrees"] is False
    assert shadow.verdict(logged(pid=42, killed=0), {})["agrees"] is False  # no kill: nothing to agree with
    none = shadow.verdict(logged(pid=0, killed=43, flags=abi.EBPF_OOM_V_ABORT), {})
    assert none["would_kill"] is None and none["would_abort"] is True and none["agrees"] is False
    assert shadow.verdict(logged(pid=5, rule=-1), {})["would_kill"]["rule"] == "fallback"


def test_each_kill_gets_the_verdict_of_each_policy_that_judged_its_oom():
    events = [{"pid": 42, "monotonic": 100.2}, {"pid": 50, "monotonic": 300.0}]
    shadow.pair(events, [judged("a", logged(pid=42, killed=42)), judged("b", logged(pid=9, killed=42))])
    assert [(s["policy"], s["agrees"]) for s in events[0]["shadow"]] == [("a", True), ("b", False)]
    assert events[0]["shadow"][1]["would_kill"]["pid"] == 9
    assert events[1]["shadow"] == []


@pytest.mark.parametrize("event", [
    {"pid": 43, "monotonic": 100.2},                       # another task's kill
    {"pid": 42, "monotonic": 100.5 + MATCH_WINDOW_S + 1},  # the same pid, another OOM later
    {"pid": 42, "monotonic": 100.0 - MATCH_WINDOW_S - 1},  # ... or earlier
])
def test_a_verdict_is_not_hung_on_a_kill_of_another_oom(event):
    shadow.pair([event], [judged("a", logged(pid=42, killed=42))])
    assert event["shadow"] == []


def test_a_policy_gives_one_verdict_per_kill():
    event = {"pid": 42, "monotonic": 100.2}
    shadow.pair([event], [judged("a", logged(pid=1, killed=42), logged(pid=2, killed=42, start=100.1))])
    assert [s["would_kill"]["pid"] for s in event["shadow"]] == [1]


def test_a_shadow_policy_does_not_decide_and_an_enforcing_one_does():
    assert backends.decides({"document": dict(DOC, mode="shadow")}) is False
    assert backends.decides({"document": dict(DOC, mode="enforce")}) is True
    assert backends.decides({"document": DOC}) is True  # enforce is the default
    assert backends.decides({"programs": [{"target": "bpf_oom_evaluate_task"}]}) is True


def test_score_adj_refuses_shadow_and_says_why():
    with pytest.raises(RenderError, match=r"mode: shadow needs the OOM hook \(backend evaluate_task\)"):
        backends.ScoreAdj().plan(dict(DOC, mode="shadow"))


def test_the_mode_is_enforce_or_shadow():
    assert language.check(dict(DOC, mode="shadow")) == []
    assert language.check(dict(DOC, mode="dry-run")) == ["mode: 'dry-run' is not one of enforce, shadow"]
    assert shadow.mode_of(DOC) == "enforce" and shadow.mode_of(None) == "enforce"
