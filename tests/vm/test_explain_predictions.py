"""ebpf.oom.explain predicts real OOMs: in the hook guest, for each scenario, the module
says which task an OOM of the scenario's memory cgroup would kill and in which order,
then real OOMs happen and kill exactly those tasks, by pid.

Every match kind and action, tiers ranked by badness and by rss, the kernel fallback
and a prefer fallback, a memcg OOM and (in a small guest of its own) a global OOM;
kernel_victim is checked the same way with no policy loaded. What explain cannot see
(processes that start or grow between the prediction and the OOM) is kept out: the
allocating trigger starts after the prediction and stays the smallest task.
"""

import pytest

from lab import Lab, Policies, doc, killed_by, spec, task
from vmharness import play


def explain(guest, tmp_path, scene, **args):
    """The explain module's result for the scenario's memory cgroup."""
    args.setdefault("oom", {"memcg": scene.spec["memcg"]})
    result = play(guest, [{"name": "explain", "ebpf.oom.explain": dict(args, top=5)}], tmp_path)
    return result["explain"]


def predicted(result):
    return [r["pid"] for r in result["ranking"]]


SCENARIOS = {
    "protect-comm": (
        spec(task("big", 60), task("mid", 40), task("small", 20)),
        lambda s: doc("pred", {"match": {"comm": "lab-big"}, "action": "protect"})),
    "select-pid": (
        spec(task("big", 60), task("mid", 40), task("small", 20)),
        lambda s: doc("pred", {"match": {"pid": s.pids["small"]}, "action": "select"})),
    "prefer-cgroup-tiers": (
        spec(task("other", 70), task("web", 40), task("batch", 20, cgroup="batch/job")),
        lambda s: doc("pred", {"match": {"cgroup": s.path("batch")}, "action": "prefer", "tier": 1},
                      {"match": {"cgroup": s.path("web")}, "action": "prefer", "tier": 2})),
    "prefer-by-rss": (
        spec(task("w1", 30), task("w2", 45, adj=-900), task("other", 15)),
        lambda s: doc("pred", {"match": {"comm_prefix": "lab-w"}, "action": "prefer", "tier": 1,
                               "by": "rss"})),
    "prefer-by-badness": (
        spec(task("w1", 30), task("w2", 45, adj=-900), task("other", 15)),
        lambda s: doc("pred", {"match": {"comm_prefix": "lab-w"}, "action": "prefer", "tier": 1})),
    "uid-and-prefer-fallback": (
        spec(task("owner", 60, uid=1001), task("a", 20), task("b", 35)),
        lambda s: doc("pred", {"match": {"uid": 1001}, "action": "protect"},
                      fallback={"action": "prefer", "tier": 5})),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_explain_predicts_the_next_two_ooms(hook_vm, hook_lab, hook_policies, tmp_path, name):
    tasks, document = SCENARIOS[name]
    with hook_lab.scenario("pred-" + name, tasks) as s:
        hook_policies.apply(document(s))
        result = explain(hook_vm, tmp_path, s, name="pred")
        first = s.oom()
        second = s.oom()
    assert result["policy_acts"] and not result["no_victim"], result
    order = predicted(result)
    assert result["victim"]["pid"] == order[0]
    killed_by(first, next(n for n, p in first.pids.items() if p == order[0]), "pred")
    killed_by(second, next(n for n, p in second.pids.items() if p == order[1]), "pred")


def test_explain_of_an_abort_rule_says_nobody_dies_and_nobody_does(hook_vm, hook_lab, hook_policies,
                                                                  tmp_path):
    with hook_lab.scenario("pred-abort", spec(task("backup", 20), task("big", 60))) as s:
        hook_policies.apply(doc("pred", {"match": {"comm": "lab-backup"}, "action": "abort"},
                                scope="memcg"))
        result = explain(hook_vm, tmp_path, s, name="pred")
        report = s.oom(stall=2)
    assert result["victim"] is None and result["ranking"] == [], result
    assert any("abort rule matches a candidate (pid %d)" % s.pids["backup"] in w
               for w in result.get("warnings", [])), result
    assert report.outcome == "stalled" and report.killed == [], report


def test_kernel_victim_is_what_the_kernel_kills_without_a_policy(hook_vm, hook_lab, hook_policies,
                                                                 tmp_path):
    hook_policies.apply()
    with hook_lab.scenario("pred-kernel", spec(task("big", 50), task("mid", 40), task("adj", 60,
                                                                                   adj=-500))) as s:
        # No policy loaded: preview any document; its kernel_victim ignores the document.
        result = explain(hook_vm, tmp_path, s, policy=doc("preview", {"match": {"pid": 1},
                                                                     "action": "protect"}))
        report = s.oom()
    assert result["kernel_victim"]["pid"] == s.pids["big"], result
    killed_by(report, "big", "default")


@pytest.fixture(scope="module")
def small_guest(vm_factory_module):
    """A guest of its own with little memory, for global OOMs (the session's guests must
    stay up); sshd is made unkillable so the guest stays reachable."""
    guest = vm_factory_module.start("explain-global", kernel="hook", memory=512)
    guest.ssh(["sh", "-c", "for p in $(pgrep -x sshd); do echo -1000 > /proc/$p/oom_score_adj; done"])
    return guest


def test_explain_predicts_a_global_oom(small_guest, tmp_path):
    lab, policies = Lab(small_guest), Policies(small_guest, tmp_path)
    holders = spec(task("big", 120), task("mid", 90), task("job", 60), memcg=None)
    try:
        with lab.scenario("pred-global", holders) as s:
            policies.apply(doc("pred", {"match": {"comm": "lab-big"}, "action": "protect"},
                               {"match": {"comm": "lab-job"}, "action": "prefer", "tier": 1}))
            result = explain(small_guest, tmp_path, s, name="pred", oom="global")
            report = s.oom()
    finally:
        policies.remove_all()
    assert result["oom"]["kind"] == "global" and result["victim"]["pid"] == s.pids["job"], result
    assert result["kernel_victim"]["pid"] == s.pids["big"], result
    killed_by(report, "job", "pred", constraint="CONSTRAINT_NONE")
