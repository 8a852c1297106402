"""Cgroup rules stay true over time, with real OOMs in the session's hook guest: a rule
names a path and decides for whatever cgroup lives there, made after the policy, removed
and made again, or made anew by a service restart, or nested however deep below it;
verify says when a path matches nothing; and one policy per host judges OOM victims.

tests/host/test_cgroup_rules.py shows the tracepoint mechanics on the machine's own
kernel; here the victim the kernel kills is the proof.
"""

from lab import doc, killed_by, spec, task
from vmharness import play


def prefer(path, tier=1):
    return {"match": {"cgroup": path}, "action": "prefer", "tier": tier}


def test_a_rule_for_a_cgroup_made_after_the_policy_decides_the_next_oom(hook_lab, hook_policies):
    with hook_lab.scenario("late-cgroup", spec(task("big", 60), task("mid", 40),
                                               task("job", 20, cgroup="late/job", late=True))) as s:
        applied = hook_policies.apply(doc("rules", prefer(s.path("late"))))
        assert applied["apply rules"]["cgroups"] == {s.path("late"): []}
        s.start("job")  # makes late/ and late/job
        report = s.oom()
    killed_by(report, "job", "rules", spared=["big", "mid"])


def test_a_task_nested_70_levels_below_a_rules_cgroup_is_decided_for(hook_lab, hook_policies):
    """A user may nest cgroups without limit below their own delegated subtree: the task
    70 levels below the rule's cgroup is the rule's, and dies before a larger task (it
    used to match no cgroup rule past 64 levels, and lived)."""
    nested = "deep/" + "/".join(["d"] * 70)
    with hook_lab.scenario("deep-cgroup", spec(task("big", 60), task("job", 20, cgroup=nested))) as s:
        hook_policies.apply(doc("rules", prefer(s.path("deep"))))
        report = s.oom()
    killed_by(report, "job", "rules", spared=["big"])


def test_a_cgroup_removed_and_made_again_is_still_decided_for(hook_vm, hook_lab, hook_policies):
    with hook_lab.scenario("again", spec(task("big", 60), task("job1", 20, cgroup="jobs"),
                                         task("job2", 20, cgroup="jobs", late=True))) as s:
        hook_policies.apply(doc("rules", prefer(s.path("jobs"))))
        first = s.oom()
        killed_by(first, "job1", "rules", spared=["big"])
        hook_vm.ssh(["rmdir", "/sys/fs/cgroup" + s.path("jobs")])  # job1 died: it is empty
        s.start("job2")  # a new cgroup at the same path, with a new id
        second = s.oom()
    killed_by(second, "job2", "rules", spared=["big"])


def matched(guest, tmp_path, path):
    """The ids verify reports for a cgroup rule path of policy `rules`."""
    result = play(guest, [{"name": "verify", "ebpf.oom.verify": {"name": "rules"}}], tmp_path)
    return result["verify"]["policies"][0]["cgroups"][path]


def test_a_restarted_service_is_still_decided_for(hook_vm, hook_lab, hook_policies, tmp_path):
    """A systemd service's cgroup is removed when it stops and made anew when it starts:
    the rule on /oomlabsvc.slice/oomlab-web.service decides after a restart."""
    slice_, service = "/oomlabsvc.slice", "/oomlabsvc.slice/oomlab-web.service"
    unit = dict(task("web", 20, unit="oomlab-web.service", slice="oomlabsvc.slice"))
    with hook_lab.scenario("restart", spec(task("big", 60, cgroup=slice_ + "/big"), unit,
                                           memcg=slice_)) as s:
        hook_policies.apply(doc("rules", prefer(service)))
        first = matched(hook_vm, tmp_path, service)
        before = dict(s.pids)
        s.restart("web")
        assert s.pids["web"] != before["web"]
        second = matched(hook_vm, tmp_path, service)
        live = hook_vm.ssh(["stat", "-c", "%i", "/sys/fs/cgroup" + service]).stdout.strip()
        report = s.oom()
    assert len(first) == 1 and second == [int(live)], (first, second, live)
    killed_by(report, "web", "rules", spared=["big"])


def test_verify_warns_about_a_path_that_matches_nothing_and_strict_fails(hook_vm, hook_policies,
                                                                         tmp_path):
    hook_policies.apply(doc("rules", prefer("/no/such/cgroup"), prefer("/", 2)))
    plain = play(hook_vm, [{"name": "verify", "ebpf.oom.verify": {"name": "rules"}}], tmp_path)
    result = plain["verify"]
    assert result["policies"][0]["cgroups"]["/no/such/cgroup"] == []
    assert result["policies"][0]["cgroups"]["/"] == [1]
    assert result["notices"] == ["policy rules: cgroup rule /no/such/cgroup matches no cgroup: "
                                 "none lives at that path now"], result
    strict = play(hook_vm, [{"name": "verify", "ebpf.oom.verify": {"name": "rules", "strict": True}}],
                  tmp_path, check=False)["verify"]
    assert strict["failed"] and "/no/such/cgroup matches no cgroup" in strict["msg"], strict


def test_a_second_policy_that_judges_victims_is_refused_and_the_first_decides(hook_lab,
                                                                              hook_policies):
    with hook_lab.scenario("one-decider", spec(task("big", 60), task("a", 20), task("b", 30))) as s:
        hook_policies.apply(doc("first", {"match": {"comm": "lab-a"}, "action": "select"}))
        result = hook_policies.apply(doc("first", {"match": {"comm": "lab-a"}, "action": "select"}),
                                     doc("second", {"match": {"comm": "lab-b"}, "action": "select"}),
                                     check=False)
        refused = result["apply second"]
        assert refused["failed"], result
        assert "beside policy first, which already does" in refused["msg"], refused
        report = s.oom()
    killed_by(report, "a", "first", spared=["big", "b"])
