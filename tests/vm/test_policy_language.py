"""Declarative policies decide real OOMs, as ebpf.oom.explain predicted: every action,
match kind and option the policy language documents (schemas/README.md), in the
session's hook-kernel guest.

Each test starts tasks in a memory cgroup of its own (tests/vm/lab.py), applies a
document through ebpf.oom.policy (the action plugin validates it and compiles the
generic program on the controller, the module renders it on the guest) and, in the
same play, asks ebpf.oom.explain which task an OOM of that memory cgroup would kill;
then it fills the cgroup until it runs out of memory and checks which task the kernel
killed, by pid: the one the document names, the one explain predicted, and that the
OOM report names the document. The memory cgroup's limit is set just above what its
tasks hold, so the allocating trigger is the smallest task when the OOM comes (and
starts after the prediction): whoever else dies, the policy (or the kernel's heuristic)
chose.
"""

import pytest

from lab import LAB_ROOT, doc, killed_by, predicted, spec, task
from vmharness import play


def memcg(scene):
    """ebpf.oom.explain's `oom` for the scenario's memory cgroup running out."""
    return {"memcg": scene.spec["memcg"]}


def two_tiers(scene, first, second):
    """The document whose tier 1 is cgroup `first` of the scenario, tier 2 `second`."""
    return doc("lang",
               {"match": {"cgroup": scene.path(first)}, "action": "prefer", "tier": 1},
               {"match": {"cgroup": scene.path(second)}, "action": "prefer", "tier": 2})


def apply(policies, scene, document):
    """Apply the document and explain it; explain's answer."""
    return policies.apply(document, explain=memcg(scene))["explain"]


# ------------------------------------------------------------------ the baseline

def test_without_policy_the_kernel_kills_the_largest_task_as_explain_says(hook_vm, hook_lab,
                                                                          hook_policies, tmp_path):
    """The baseline the other tests depart from: the same kind of tasks, no policy; explain's
    kernel_victim (here of a document previewed, not applied) is the kernel's own choice."""
    hook_policies.apply()
    with hook_lab.scenario("baseline", spec(task("big", 60), task("mid", 30),
                                            task("adj", 70, adj=-500))) as s:
        preview = {"ebpf.oom.explain": {"policy": doc("preview", {"match": {"pid": 1},
                                                                  "action": "protect"}),
                                        "oom": memcg(s)}}
        explained = play(hook_vm, [dict(preview, name="explain")], tmp_path)["explain"]
        report = s.oom()
    killed_by(report, "big", "default", spared=["mid", "adj"])
    assert explained["kernel_victim"]["pid"] == s.pids["big"], explained


# ------------------------------------------------------------------ protect

def test_protect_by_comm_spares_the_task_the_kernel_would_kill(hook_lab, hook_policies):
    with hook_lab.scenario("protect-comm", spec(task("big", 60), task("mid", 30),
                                                task("small", 20))) as s:
        explained = apply(hook_policies, s, doc("lang", {"match": {"comm": "lab-big"},
                                                         "action": "protect"}))
        first = s.oom()
        killed_by(first, "mid", "lang", spared=["big", "small"])
        second = s.oom()
    killed_by(second, "small", "lang", spared=["big"])
    predicted(explained, first, second)


def test_protect_by_uid_spares_the_task_the_kernel_would_kill(hook_lab, hook_policies):
    with hook_lab.scenario("protect-uid", spec(task("big", 60, uid=1001), task("mid", 30))) as s:
        explained = apply(hook_policies, s, doc("lang", {"match": {"uid": 1001}, "action": "protect"}))
        report = s.oom()
    killed_by(report, "mid", "lang", spared=["big"])
    predicted(explained, report)


def test_fallback_protect_spares_every_task_no_rule_ranks(hook_lab, hook_policies):
    """fallback: protect -> unmatched tasks are never killed; only ranked ones die."""
    with hook_lab.scenario("fallback-protect",
                           spec(task("big", 60), task("mid", 40), task("job", 20))) as s:
        explained = apply(hook_policies, s, doc("lang", {"match": {"comm": "lab-job"},
                                                         "action": "prefer", "tier": 1},
                                                scope="memcg", fallback="protect"))
        first = s.oom()
        killed_by(first, "job", "lang", spared=["big", "mid"])
        second = s.oom(stall=2)
    predicted(explained, first)
    assert [r["pid"] for r in explained["ranking"]] == [s.pids["job"]], explained
    # Nothing ranked is left: every remaining task is protected, the memcg OOM kills nobody.
    assert second.outcome == "stalled" and second.killed == [] and second.victims == [], second


# ------------------------------------------------------------------ select

def test_select_by_pid_kills_that_task_not_the_largest(hook_lab, hook_policies):
    with hook_lab.scenario("select-pid", spec(task("big", 60), task("small", 20),
                                              task("other", 30))) as s:
        explained = apply(hook_policies, s, doc("lang", {"match": {"pid": s.pids["small"]},
                                                         "action": "select"}))
        first = s.oom()
        killed_by(first, "small", "lang", spared=["big", "other"])
        second = s.oom()
    # nothing selected is left: the kernel's own choice, the largest
    killed_by(second, "big", "lang", spared=["other"])
    predicted(explained, first, second)


def test_several_select_tasks_the_one_with_most_badness_dies(hook_lab, hook_policies):
    with hook_lab.scenario("select-many", spec(task("s1", 20), task("s2", 40), task("s3", 10),
                                               task("big", 70))) as s:
        explained = apply(hook_policies, s, doc("lang", {"match": {"comm_prefix": "lab-s"},
                                                         "action": "select"}))
        first = s.oom()
        killed_by(first, "s2", "lang", spared=["s1", "s3", "big"])
        second = s.oom()
    killed_by(second, "s1", "lang", spared=["s3", "big"])
    predicted(explained, first, second)


# ------------------------------------------------------------------ prefer

def test_prefer_cgroup_tier_one_dies_first_even_in_a_cgroup_created_later(hook_lab, hook_policies):
    with hook_lab.scenario("prefer-cgroup", spec(task("web", 35), task("other", 60),
                                                 task("batch", 25, cgroup="batch/job1", late=True),
                                                 cgroups=["batch"])) as s:
        hook_policies.apply(two_tiers(s, "batch", "web"))
        s.start("batch")  # batch existed when the policy was applied, batch/job1 did not
        report = s.oom()
    killed_by(report, "batch", "lang", spared=["web", "other"])


def test_prefer_cgroup_tiers_die_in_order(hook_lab, hook_policies):
    with hook_lab.scenario("prefer-tiers", spec(task("other", 70), task("web", 40),
                                                task("batch", 20, cgroup="batch/job"))) as s:
        explained = apply(hook_policies, s, two_tiers(s, "batch", "web"))
        first = s.oom()
        killed_by(first, "batch", "lang", spared=["web", "other"])
        second = s.oom()
    killed_by(second, "web", "lang", spared=["other"])
    predicted(explained, first, second)


def test_a_process_whose_leader_exited_dies_in_its_tier(hook_lab, hook_policies):
    """Its leader called pthread_exit() while a thread holds 60 MiB: the kernel reads the
    process's memory through the thread, and so does the policy; the process dies first,
    as tier 1, before the larger tier 2 task (it used to be skipped: it outlived it)."""
    with hook_lab.scenario("leaderless", spec(task("zombie", 60, cgroup="tier1", leader_exits=True),
                                              task("web", 70, cgroup="tier2"))) as s:
        explained = apply(hook_policies, s, two_tiers(s, "tier1", "tier2"))
        report = s.oom()
    killed_by(report, "zombie", "lang", spared=["web"])
    predicted(explained, report)


@pytest.mark.parametrize("by,victim", [("rss", "w2"), ("badness", "w1")])
def test_prefer_by_comm_prefix_ranks_a_tier_by_the_flag(hook_lab, hook_policies, by, victim):
    """w2 holds more memory, but oom_score_adj -900 gives it less badness than w1."""
    with hook_lab.scenario("prefer-" + by, spec(task("w1", 30), task("w2", 45, adj=-900),
                                                task("other", 15))) as s:
        explained = apply(hook_policies, s, doc("lang", {"match": {"comm_prefix": "lab-w"},
                                                         "action": "prefer", "tier": 1, "by": by}))
        report = s.oom()
    killed_by(report, victim, "lang", spared=[t for t in ("w1", "w2", "other") if t != victim])
    predicted(explained, report)


def test_a_prefer_fallback_ranks_every_task_no_rule_matches(hook_lab, hook_policies):
    with hook_lab.scenario("prefer-fallback", spec(task("owner", 60, uid=1001), task("a", 20),
                                                   task("b", 35))) as s:
        explained = apply(hook_policies, s, doc("lang", {"match": {"uid": 1001}, "action": "protect"},
                                                fallback={"action": "prefer", "tier": 5}))
        first = s.oom()
        killed_by(first, "b", "lang", spared=["owner", "a"])
        second = s.oom()
    killed_by(second, "a", "lang", spared=["owner"])
    predicted(explained, first, second)


def test_comm_prefix_and_uid_must_both_match(hook_lab, hook_policies):
    """A rule with two keys matches a task only when both hold: the task with the right
    name but another uid, and the one with the right uid but another name, are not ranked."""
    with hook_lab.scenario("combined", spec(task("job-a", 20, uid=1001), task("job-b", 40),
                                            task("tool", 50, uid=1001), task("big", 70))) as s:
        explained = apply(hook_policies, s, doc("lang", {"match": {"comm_prefix": "lab-job",
                                                                   "uid": 1001},
                                                         "action": "select"}))
        report = s.oom()
    killed_by(report, "job-a", "lang", spared=["job-b", "tool", "big"])
    predicted(explained, report)


# ------------------------------------------------------------------ abort

def test_abort_rule_kills_nothing_while_a_matching_task_is_a_candidate(hook_lab, hook_policies):
    with hook_lab.scenario("abort-there", spec(task("backup", 20), task("big", 60))) as s:
        explained = apply(hook_policies, s, doc("lang", {"match": {"comm": "lab-backup"},
                                                         "action": "abort"}, scope="memcg"))
        report = s.oom(stall=3)
    assert report.outcome == "stalled", report
    assert report.killed == [] and report.victims == [], report
    assert report.events["oom"] >= 3 and report.events["oom_kill"] == 0, report
    # explain said so: nobody would die while the matching task is a candidate
    assert explained["victim"] is None and explained["ranking"] == [], explained


def test_abort_rule_kills_normally_when_no_matching_task_is_a_candidate(hook_lab, hook_policies):
    """The matching task lives outside the memory cgroup that runs out: it is not a
    candidate of that OOM, so the OOM ends with a kill (the kernel's choice)."""
    outside = "%s/abort-elsewhere-outside" % LAB_ROOT
    with hook_lab.scenario("abort-elsewhere", spec(task("backup", 10, cgroup=outside),
                                                   task("big", 60), task("mid", 30))) as s:
        explained = apply(hook_policies, s, doc("lang", {"match": {"comm": "lab-backup"},
                                                         "action": "abort"}, scope="memcg"))
        report = s.oom()
    killed_by(report, "big", "lang", spared=["backup", "mid"])
    predicted(explained, report)


# ------------------------------------------------------------------ scope

def test_scope_global_leaves_memcg_ooms_to_the_kernel(hook_lab, hook_policies):
    with hook_lab.scenario("scope-global", spec(task("big", 60), task("mid", 30))) as s:
        explained = apply(hook_policies, s, doc("lang", {"match": {"comm": "lab-mid"},
                                                         "action": "select"}, scope="global"))
        report = s.oom()
    killed_by(report, "big", "default", spared=["mid"])
    assert explained["policy_acts"] is False
    predicted(explained, report)


# ------------------------------------------------------------------ the user story

def story(s):
    return doc("lang",
               {"match": {"comm": "postgres"}, "action": "protect"},
               {"match": {"cgroup": s.path("batch")}, "action": "prefer", "tier": 1},
               {"match": {"cgroup": s.path("web")}, "action": "prefer", "tier": 2})


def postgres(mb):
    return task("postgres", mb, comm="postgres")


def test_story_kills_batch_then_web_never_postgres(hook_lab, hook_policies):
    with hook_lab.scenario("story", spec(postgres(60), task("batch", 20), task("web", 30),
                                         task("other", 15))) as s:
        explained = apply(hook_policies, s, story(s))
        first = s.oom()
        killed_by(first, "batch", "lang", spared=["postgres", "web", "other"])
        second = s.oom()
        killed_by(second, "web", "lang", spared=["postgres", "other"])
        third = s.oom()
    # other last: the kernel's choice among the unranked; never postgres
    killed_by(third, "other", "lang", spared=["postgres"])
    predicted(explained, first, second, third)


# ------------------------------------------------------------------ changes

def test_a_rules_change_hands_over_to_new_programs_and_the_next_oom_follows_it(
        hook_lab, hook_policies):
    with hook_lab.scenario("data-change", spec(task("a", 30), task("b", 30), task("c", 15))) as s:
        first = hook_policies.apply(doc("lang", {"match": {"comm": "lab-a"}, "action": "select"}))
        second = hook_policies.apply(doc("lang", {"match": {"comm": "lab-b"}, "action": "select"}))
        report = s.oom()
    before, after = first["apply lang"], second["apply lang"]
    assert after["action"] == "reloaded", after  # new rule maps, handed over (loader)
    ids = [p["prog_id"] for p in after["record"]["programs"]]
    assert ids and set(ids).isdisjoint(p["prog_id"] for p in before["record"]["programs"])
    assert after["record"]["token"] != before["record"]["token"]
    assert [(c["map"], c["key"]) for c in after["map_changes"]] == [("oom_rules", "00000000")]
    killed_by(report, "b", "lang", spared=["a", "c"])


def test_strict_lint_fails_the_task_before_the_host_changes(hook_vm, hook_policies, tmp_path):
    """strict: true turns the lint's warning (a global-scope document that protects
    everything leaves a global OOM without a victim) into a failed task, and the
    host is left as it was."""
    hook_policies.apply()
    result = hook_policies.apply(doc("lang", {"match": {"cgroup": "/"}, "action": "protect"}),
                                 strict=True, check=False)
    failed = result["apply lang"]
    assert failed["failed"] and "fails lint (strict: true)" in failed["msg"], result
    assert "rules[0]: protect matches every task" in failed["msg"]
    listed = hook_vm.ssh(["ls", "/sys/fs/bpf/ebpf_oom"], check=False).stdout.split()
    assert "lang" not in listed
