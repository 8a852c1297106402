"""The OOM observer in production: the role ebpf.oom.bpf_oom deploys and verifies it on the
hook guest and on the stock guest (Debian's kernel, no hook: its policies are skipped, the
observer runs all the same), real OOMs (tests/vm/lab.py) kill tasks by pid, and the observer
counts exactly the kills triggered. ebpf.oom.events_info names the victims; the role's metrics
timer writes the metrics file, parsed back by prometheus_client: kills by policy, rule and a
cut cgroup path, and on the hook guest whether the policy is loaded and what its cgroup rules
match. The boot restore logs a rule that matches nothing as a notice. At the end the
policy, the observer and the metrics timer go again.
"""

import pytest
from prometheus_client.parser import text_string_to_metric_families

import vmharness
from lab import killed_by
from vmharness import play, result_of

METRICS = "/var/lib/ebpf-oom-test/ebpf_oom.prom"
POLICY = "obsvm"
LAB = "events"
JOBS = "/oomlab/%s/jobs" % LAB
CONVERGE = "Converge the host"  # the role's one ebpf.oom.host task
NEVER = "/ebpf-oom-test/never.slice"
# The memory cgroup that runs out (JOBS) holds two jobs; the trigger allocates there until
# the OOM killer acts. One rule covers JOBS, one names a path that never exists.
SPEC = {"memcg": "jobs", "trigger": {"cgroup": "jobs/trigger"},
        "tasks": [{"name": "job1", "mb": 30, "cgroup": "jobs/job1"},
                  {"name": "job2", "mb": 40, "cgroup": "jobs/job2"}]}
DOCUMENT = {"name": POLICY, "fallback": "kernel",
            "rules": [{"match": {"cgroup": JOBS}, "action": "prefer", "tier": 1},
                      {"match": {"cgroup": NEVER}, "action": "prefer", "tier": 2}]}


def role(**variables):
    """The role as a task, with the test's settings (the guests have the packages)."""
    return vmharness.role(**dict(dict(bpf_oom_on_unsupported="skip", bpf_oom_metrics=True,
                                      bpf_oom_metrics_file=METRICS), **variables))


def observer_kills(guest, tmp_path):
    played = play(guest, [{"name": "seen", "ebpf.oom.events_info": {"sources": ["observer"]}}], tmp_path)
    observer = played["seen"]["observer"]
    assert observer["loaded"], observer
    return observer["kills"]


def metrics(guest):
    """The metrics file as the role's timer service writes it now: {(name, labels): value}."""
    guest.ssh(["systemctl", "start", "ebpf-oom-metrics.service"])
    text = guest.ssh(["cat", METRICS]).stdout
    return dict(((s.name, tuple(sorted(s.labels.items()))), s.value)
                for family in text_string_to_metric_families(text) for s in family.samples)


def kills_of(samples):
    return dict((labels, v) for (name, labels), v in samples.items() if name == "ebpf_oom_kills_total")


def undo(guest, tmp_path, policies=()):
    """What the role added that other tests of the session guest would notice: the
    policies, the observer, the metrics timer. (The role's own removal, every variable
    off, is Molecule's and the off switch test's; a role run costs minutes in TCG.)"""
    play(guest, [{"name": "remove " + name, "ebpf.oom.policy": {"name": name, "state": "absent"}}
                 for name in policies]
         + [{"name": "observer", "ebpf.oom.observer": {"state": "absent"}}], tmp_path)
    guest.ssh(["systemctl", "disable", "--now", "ebpf-oom-metrics.timer"], check=False)


@pytest.fixture(scope="module")
def hook_role(hook_vm, tmp_path_factory):
    """The role on the hook guest with one declarative policy (one converge: a second one
    changes nothing, as Molecule's idempotence step shows for the same role)."""
    tmp = tmp_path_factory.mktemp("hook-role")
    try:
        yield play(hook_vm, [role(bpf_oom_policies=[{"name": POLICY, "policy": DOCUMENT}])], tmp)
    finally:
        undo(hook_vm, tmp, [POLICY])


@pytest.fixture(scope="module")
def stock_role(stock_vm, tmp_path_factory):
    """The role on the stock guest asked for the hook backend, which it lacks (skip mode, no
    policy): one converge."""
    tmp = tmp_path_factory.mktemp("stock-role")
    try:
        yield play(stock_vm, [role(bpf_oom_backend="evaluate_task")], tmp)
    finally:
        undo(stock_vm, tmp)


# The first test of each guest boots it (when the session has not) and converges the role.
@pytest.mark.timeout(1800)
def test_the_role_deploys_and_verifies_the_observer_on_the_hook_guest(hook_role):
    assert_deploys_and_verifies(hook_role)


@pytest.mark.timeout(1800)
def test_the_role_deploys_and_verifies_the_observer_on_the_stock_guest(stock_role):
    assert_deploys_and_verifies(stock_role)


def assert_deploys_and_verifies(first):
    """The converge deployed the observer's tp_btf build and verified it. (Each test names
    its guest's fixture, so that it runs with the other tests of that guest:
    tests/conftest.py groups them by the fixtures they use.)"""
    converged = result_of(first, CONVERGE)
    deployed = converged["observer"]
    assert converged["changed"] and deployed["running"], converged
    assert deployed["action"] == "created" and deployed["variant"] == "tp_btf", deployed
    assert "observer" in converged["verified"], converged


def test_the_stock_guest_is_unsupported_but_observed(stock_role):
    first = stock_role
    facts = result_of(first, "Record whether this host can run OOM policies, and with which backend")[
        "ansible_facts"]
    assert (facts["bpf_oom_supported"], facts["bpf_oom_backend_used"]) == (False, "none"), facts
    converged = result_of(first, CONVERGE)
    assert converged["policies"] == {} and converged["parts"]["policies"] == [], converged
    assert converged["parts"]["agent"] == [] and not converged["agent"], converged


def two_ooms_counted(lab, guest, tmp_path, policy):
    """Two OOMs of the scenario, one kill each, by `policy` as the kernel log names it: the
    larger job dies first; the observer counted exactly these two kills, and events_info
    has each victim by pid from both sources. The metrics while the scenario's cgroups live."""
    before = observer_kills(guest, tmp_path)
    with lab.scenario(LAB, SPEC) as s:
        first = s.oom()
        killed_by(first, "job2", policy, spared=["job1"])
        second = s.oom()
        killed_by(second, "job1", policy, spared=[])
        reports = [first, second]
        samples = metrics(guest)
    after = observer_kills(guest, tmp_path)
    assert after - before == 2
    assert samples[("ebpf_oom_observer_kills_total", ())] == after
    found = play(guest, [{"name": "events", "ebpf.oom.events_info": {}}], tmp_path)
    named = dict((e["pid"], e) for e in found["events"]["events"])
    for report in reports:
        [pid] = report.victim_pids
        assert named[pid]["sources"] == ["kmsg", "observer"] and named[pid]["policy"] == policy, named.get(pid)
    return samples


def test_observer_counts_every_kill_on_the_hook_guest(hook_vm, hook_lab, hook_role, tmp_path):
    samples = two_ooms_counted(hook_lab, hook_vm, tmp_path, POLICY)
    assert samples[("ebpf_oom_policy_loaded", (("policy", POLICY),))] == 1
    assert samples[("ebpf_oom_rule_matches", (("policy", POLICY), ("rule", JOBS)))] == 1
    assert samples[("ebpf_oom_rule_matches", (("policy", POLICY), ("rule", NEVER)))] == 0
    # Labels stay bounded: the rule whose cgroup held the victims, the path cut to one level.
    assert kills_of(samples)[(("cgroup", "/oomlab"), ("policy", POLICY), ("rule", JOBS))] == 2


def test_observer_counts_every_kill_on_the_stock_guest(stock_vm, stock_lab, stock_role, tmp_path):
    samples = two_ooms_counted(stock_lab, stock_vm, tmp_path, None)
    assert kills_of(samples)[(("cgroup", "/oomlab"), ("policy", "unknown"), ("rule", "unknown"))] >= 2
    assert not [key for key in samples if key[0] == "ebpf_oom_policy_loaded"]


def test_boot_restore_logs_a_rule_that_matches_nothing_as_a_notice(hook_vm, hook_role):
    done = hook_vm.ssh(["/usr/lib/ebpf-oom/ebpf-oom", "restore"], check=False)
    assert done.returncode == 0, done.stderr
    assert "<6>ebpf-oom: restored policy observer" in done.stdout.splitlines()
    assert ("<5>ebpf-oom: policy %s: cgroup rule %s matches no cgroup: none lives at that path now; "
            "the rule matches such a cgroup once it is made" % (POLICY, NEVER)) in done.stdout.splitlines()
