"""The score_adj agent's life under the role, on the stock guest (Debian's own kernel, no
hook: backend auto takes score_adj there).

batch_worker, first in check mode (it fails nothing and starts no agent on a guest without
the role's units), then converged with the metrics timer on: its document is applied with
score_adj and the agent (ebpf-oom-agent.service) is active and enabled. Its rules, plus two
naming the lab's cgroups the way its defaults name a preemptible job's slice and a job
agent's unit, steer a real memory cgroup OOM: the job dies, though a task no rule matches
and the agent-tier task are larger; the agent-tier task, the largest, is spared. The
stock kernel's report names no policy. playbooks/status.yml shows the guest on score_adj
with its agent, the row `ebpf-oom status` prints on the guest.

Then the uninstall of docs/operations.md, as written (bpf_oom_state: absent): it stops
the agent after the policies are gone, disables it and removes its unit; the values it
wrote are back; no unit and no file of the collection is left; run again, it changes
nothing. (That a converge changes nothing the second time, the agent included, the
Molecule scenario stock_kernel shows.)
"""

import pytest

from lab import adj, killed_by, spec, task
from vmharness import UNINSTALL, documented_play, fleet_status, leftovers, play, result_of

AGENT_UNIT = "ebpf-oom-agent.service"
RESTORE_UNIT = "ebpf-oom-restore.service"
STOCK = None  # a stock kernel's OOM report names no policy
POLICY = "batch"  # batch_worker_policy_name's default

LAB = "role-sa"
# The kernel alone would kill agentd (the largest), then other; the job dies first.
SPEC = spec(task("job", 20, cgroup="jobs/job"), task("other", 45),
            task("agentd", 70, adj=7))
EXTRA_RULES = [
    {"match": {"cgroup": "/oomlab/%s/jobs" % LAB}, "action": "prefer", "tier": 1},
    {"match": {"cgroup": "/oomlab/%s/agentd" % LAB, "comm": "lab-agentd"},
     "action": "prefer", "tier": 1000},
]
BATCH_WORKER = {"name": "converge", "ansible.builtin.include_role": {"name": "ebpf.oom.batch_worker"},
                "vars": {"bpf_oom_install_packages": False, "bpf_oom_metrics": True,
                         "batch_worker_extra_rules": EXTRA_RULES}}

CONVERGE = "Converge the host"  # the role's one ebpf.oom.host task


def unit_state(guest, unit=AGENT_UNIT):
    """(LoadState, ActiveState, UnitFileState) of a unit, as systemd sees it."""
    keys = ("LoadState", "ActiveState", "UnitFileState")
    shown = guest.ssh(["systemctl", "show", "--property=" + ",".join(keys), unit]).stdout
    found = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    return tuple(found.get(key) for key in keys)


def values(guest, scene, *names):
    return [adj(guest, scene.pids[name]) for name in names]


def undo(guest, tmp_path):
    """Whatever the tests left when they failed before the uninstall (after it: nothing),
    so that later tests of the session guest start clean: the policy (its values put back),
    the observer, the agent, the metrics timer, the boot restore enabled."""
    try:
        play(guest, [{"name": "remove", "ebpf.oom.policy": {"name": POLICY, "state": "absent"}},
                     {"name": "observer", "ebpf.oom.observer": {"state": "absent"}}],
             tmp_path, check=False)
    finally:
        for unit in (AGENT_UNIT, "ebpf-oom-metrics.timer", RESTORE_UNIT):
            guest.ssh(["systemctl", "disable", "--now", unit], check=False)
        guest.ssh(["rm", "-f", "/etc/systemd/system/" + AGENT_UNIT,
                   "/etc/systemd/system/ebpf-oom-metrics.timer",
                   "/etc/systemd/system/ebpf-oom-metrics.service"], check=False)
        guest.ssh(["systemctl", "daemon-reload"], check=False)


@pytest.fixture(scope="module")
def scene(stock_lab):
    """The lab's tasks, alive from before the role's first run to after the uninstall."""
    with stock_lab.scenario(LAB, SPEC) as s:
        yield s


@pytest.fixture(scope="module")
def converged(stock_vm, scene, tmp_path_factory):
    """batch_worker in check mode, then converged; the boot restore started, as it is on a
    host since its boot. Everything it left is undone at the end, failed or not."""
    tmp = tmp_path_factory.mktemp("role-score-adj")
    try:
        before = unit_state(stock_vm)
        checked = play(stock_vm, [BATCH_WORKER], tmp, check_mode=True)
        after_check = unit_state(stock_vm)
        converge = play(stock_vm, [BATCH_WORKER], tmp)
        stock_vm.ssh(["systemctl", "start", RESTORE_UNIT])
        yield dict(tmp=tmp, before=before, checked=checked, after_check=after_check,
                   converge=converge, agent=unit_state(stock_vm),
                   steered=values(stock_vm, scene, "job", "other", "agentd"),
                   status=fleet_status(stock_vm, tmp))
    finally:
        undo(stock_vm, tmp)


@pytest.fixture(scope="module")
def uninstalled(stock_vm, scene, converged):
    """The uninstall of docs/operations.md."""
    guest, tmp = stock_vm, converged["tmp"]
    first = play(guest, documented_play(UNINSTALL), tmp)
    after = dict(agent=unit_state(guest), values=values(guest, scene, "other", "agentd"),
                 leftovers=leftovers(guest))
    return dict(after, first=result_of(first, CONVERGE),
                second=result_of(play(guest, documented_play(UNINSTALL), tmp), CONVERGE))


@pytest.mark.timeout(2400)
def test_a_check_run_fails_nothing_and_starts_no_agent_on_a_guest_without_the_role(converged):
    checked = converged["checked"]
    assert not checked.failed, checked
    # it says what it would do, and did none of it
    would = result_of(checked, CONVERGE)["parts"]["agent"]
    assert would == ["systemctl enable " + AGENT_UNIT, "systemctl start " + AGENT_UNIT], would
    assert converged["before"] == converged["after_check"] == ("not-found", "inactive", ""), converged


def test_batch_worker_on_the_stock_guest_runs_the_agent_enabled(converged):
    played = converged["converge"]
    facts = result_of(played, "Record whether this host can run OOM policies, and with which backend")[
        "ansible_facts"]
    assert facts["bpf_oom_backend_used"] == "score_adj", facts
    converged_host = result_of(played, CONVERGE)
    applied = converged_host["policies"]
    assert [(name, r["backend"]) for name, r in applied.items()] == [(POLICY, "score_adj")], applied
    assert converged_host["parts"]["agent"] == ["systemctl enable " + AGENT_UNIT, "systemctl start " + AGENT_UNIT]
    assert converged_host["agent"] and POLICY in converged_host["verified"], converged_host
    # auto fell back to score_adj: the host says so (a task warning too)
    assert any("enforced by score_adj" in n for n in converged_host["notices"]), converged_host
    assert converged["agent"] == ("loaded", "active", "enabled"), converged["agent"]
    # job: tier 1 (+1000); other: the fallback tier 500 (0); agentd: tier 1000 (-999)
    assert converged["steered"] == [1000, 0, -999], converged["steered"]


def test_the_status_playbook_shows_the_stock_guest_on_score_adj_with_its_agent(converged):
    row, shown = converged["status"]  # the same row as `ebpf-oom status` on the guest
    assert (row["backend"], row["agent"], row["off"]) == ("score_adj", "yes", "no"), row
    assert row["policies"].startswith("%s (score_adj, " % POLICY), row
    assert "| %s | score_adj | %s (" % (row["kernel"], POLICY) in shown, shown


@pytest.mark.timeout(1200)
def test_a_batch_job_dies_before_a_larger_task_no_rule_matches_and_the_agent_tier_is_spared(
        scene, converged):
    report = scene.oom()
    killed_by(report, "job", STOCK, spared=["other", "agentd"])


@pytest.mark.timeout(2400)
def test_the_uninstall_stops_disables_and_removes_the_agent_once_the_policies_are_gone(uninstalled):
    first = uninstalled["first"]
    changes = first["changes"]
    assert first["purged"] == [POLICY], first
    stop = changes.index("agent: systemctl stop " + AGENT_UNIT)
    assert changes.index("purge: %s: removed" % POLICY) < stop, changes
    assert "agent: systemctl disable " + AGENT_UNIT in changes, changes
    assert "agent: removed /etc/systemd/system/" + AGENT_UNIT in changes, changes
    assert uninstalled["agent"] == ("not-found", "inactive", ""), uninstalled["agent"]


def test_the_uninstall_puts_back_the_values_the_agent_wrote(uninstalled):
    assert uninstalled["values"] == [0, 7], uninstalled["values"]


def test_the_uninstall_leaves_no_unit_no_file_and_no_pin_of_the_collection(uninstalled):
    changes = uninstalled["first"]["changes"]
    for unit in (RESTORE_UNIT, "ebpf-oom-metrics.timer"):  # the restore is active since it ran
        assert "units: systemctl stop " + unit in changes and "units: systemctl disable " + unit in changes, changes
    assert uninstalled["leftovers"] == ([], [], []), uninstalled["leftovers"]


def test_the_uninstall_run_again_changes_nothing(uninstalled):
    second = uninstalled["second"]
    assert not second["changed"] and second["changes"] == [], second
