"""The OOM checks of the VM tests can fail: tests/vm/lab.py's helpers and oomlab's
kernel-log parser are fed made-up reports of wrong kills, and each must be refused.

A check that passes a wrong kill proves nothing; these are the kills a reader of the
suite showed the earlier helpers accepted (a protected task as a second kill, the
trigger first, a double kill that hides the next OOM's verdict, kills the parser lost).
"""

import importlib.machinery
import importlib.util
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "vm"))

import lab  # noqa: E402  (tests/vm on the path)
from lab import MEMCG, Report, killed_by, predicted  # noqa: E402


def load_oomlab():
    path = os.path.join(REPO, "molecule", "shared", "files", "oomlab")
    loader = importlib.machinery.SourceFileLoader("oomlab", path)
    spec = importlib.util.spec_from_loader("oomlab", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


oomlab = load_oomlab()

PIDS = {"big": 101, "mid": 102, "small": 103}
TRIGGER = 199
COMMS = {101: "lab-big", 102: "lab-mid", 103: "lab-small", 199: "lab-trigger"}


def header(policy="lang"):
    return ("lab-trigger invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, "
            "oom_score_adj=0, policy_name=%s" % policy)


def kill_lines(pid, constraint=MEMCG):
    return ["oom-kill:constraint=%s,nodemask=(null),cpuset=/,mems_allowed=0,"
            "oom_memcg=/oomlab/x,task_memcg=/oomlab/x/a,task=%s,pid=%d,uid=0"
            % (constraint, COMMS[pid], pid),
            "Memory cgroup out of memory: Killed process %d (%s) total-vm:30000kB, "
            "anon-rss:20000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:80kB "
            "oom_score_adj:0" % (pid, COMMS[pid])]


def log_of(*ooms, policy="lang"):
    """A kernel log: one OOM report per item, each with its kills (pids) in order."""
    lines = []
    for kills in ooms:
        lines.append(header(policy))
        lines.append("Tasks state (memory values in pages):")
        for pid in kills:
            lines += kill_lines(pid)
    return lines


def report_of(log, outcome="kills"):
    """What oomlab's `oom` answers for this log (the same fields, made by its parser)."""
    names = dict((pid, name) for name, pid in PIDS.items())
    names[TRIGGER] = "trigger"
    reports = oomlab.oom_reports(log)
    kills = [k[0] for r in reports for k in r["kills"]]
    return Report({
        "outcome": outcome, "pids": dict(PIDS), "trigger_pid": TRIGGER,
        "killed": sorted(n for n, p in PIDS.items() if p in kills),
        "reports": reports,
        "victims": [names[k] for k in kills], "victim_pids": kills,
        "policies": [r["policy"] for r in reports],
        "constraints": [r["constraint"] for r in reports], "log": log})


# ------------------------------------------------------------------ the parser

def test_parser_keeps_every_kill_of_a_report_in_order():
    """One header, then kills of big and mid: both, big first (the old parser kept
    only the last, and read this as "mid was killed")."""
    reports = oomlab.oom_reports(log_of([101, 102]))
    assert reports == [{"policy": "lang", "constraint": MEMCG,
                        "kills": [[101, "lab-big"], [102, "lab-mid"]]}]


def test_parser_keeps_a_kill_before_any_header_as_a_report_of_its_own():
    log = kill_lines(102) + log_of([101])
    reports = oomlab.oom_reports(log)
    assert reports == [{"policy": None, "constraint": None, "kills": [[102, "lab-mid"]]},
                       {"policy": "lang", "constraint": MEMCG, "kills": [[101, "lab-big"]]}]


def test_parser_reads_successive_reports_and_their_policies():
    log = log_of([102]) + [header("default")] + kill_lines(101)
    assert [(r["policy"], [k[0] for k in r["kills"]]) for r in oomlab.oom_reports(log)] == [
        ("lang", [102]), ("default", [101])]


def test_parser_ignores_the_reapers_lines_and_the_labs_marker():
    log = ["oomlab: begin x 1"] + log_of([102]) + [
        "oom_reaper: reaped process 102 (lab-mid), now anon-rss:0kB, file-rss:0kB"]
    assert [k for r in oomlab.oom_reports(log) for k in r["kills"]] == [[102, "lab-mid"]]


# ------------------------------------------------------------------ killed_by

def test_killed_by_passes_the_one_kill_the_policy_names():
    killed_by(report_of(log_of([102])), "mid", "lang", spared=["big"])


@pytest.mark.parametrize("ooms,why", [
    ([[102, 101]], "the protected task as the second kill of the OOM"),
    ([[102], [101]], "the protected task as the kill of a second report"),
    ([[TRIGGER, 102]], "the trigger first, the victim after"),
    ([[TRIGGER]], "the trigger alone"),
    ([[101]], "the protected task first"),
    ([[103]], "another task than the one named"),
    ([[102, 103]], "a double kill: it hides the next OOM's verdict"),
    ([[]], "a report without a kill"),
    ([], "no report at all"),
])
def test_killed_by_fails_a_wrong_kill(ooms, why):
    with pytest.raises(AssertionError):
        killed_by(report_of(log_of(*ooms)), "mid", "lang", spared=["big"])


def test_killed_by_fails_a_report_that_names_another_policy():
    with pytest.raises(AssertionError):
        killed_by(report_of(log_of([102], policy="default")), "mid", "lang", spared=["big"])


def test_killed_by_fails_a_headerless_kill_its_policy_unknown():
    with pytest.raises(AssertionError):
        killed_by(report_of(kill_lines(102)), "mid", "lang", spared=["big"])


def test_killed_by_fails_a_spared_task_that_died_without_a_kill_report():
    report = report_of(log_of([102]))
    report["killed"] = ["big", "mid"]
    with pytest.raises(AssertionError):
        killed_by(report, "mid", "lang", spared=["big"])


def test_killed_by_fails_a_victim_that_is_still_alive():
    report = report_of(log_of([102]))
    report["killed"] = []
    with pytest.raises(AssertionError):
        killed_by(report, "mid", "lang", spared=["big"])


def test_killed_by_fails_a_memcg_check_of_a_global_oom():
    log = [header()] + [line.replace(MEMCG, "CONSTRAINT_NONE") for line in kill_lines(102)]
    with pytest.raises(AssertionError):
        killed_by(report_of(log), "mid", "lang", spared=["big"])


def test_a_later_kill_needs_its_reason_and_follows_the_order_given():
    report = report_of(log_of([102, 103]))
    killed_by(report, "mid", "lang", spared=["big"], then=["small"], why="a test's reason")
    with pytest.raises(AssertionError):
        killed_by(report, "mid", "lang", spared=["big"], then=["small"])
    with pytest.raises(AssertionError):  # the order given is not the order of the kills
        killed_by(report_of(log_of([103, 102])), "mid", "lang", spared=["big"],
                  then=["small"], why="a test's reason")
    with pytest.raises(AssertionError):  # a spared task cannot be allowed to die
        killed_by(report_of(log_of([102, 101])), "mid", "lang", spared=["big"],
                  then=["big"], why="a test's reason")


# ------------------------------------------------------------------ predicted

def explained(*pids):
    return {"victim": {"pid": pids[0]}, "ranking": [{"pid": pid} for pid in pids]}


def test_predicted_passes_successive_kills_in_the_ranking_order():
    predicted(explained(102, 103, 101), report_of(log_of([102])), report_of(log_of([103])))


def test_predicted_fails_kills_out_of_the_ranking_order():
    with pytest.raises(AssertionError):
        predicted(explained(102, 103, 101), report_of(log_of([103])), report_of(log_of([102])))


def test_predicted_fails_a_prediction_whose_victim_is_not_its_first_rank():
    bad = {"victim": {"pid": 103}, "ranking": [{"pid": 102}, {"pid": 103}]}
    with pytest.raises(AssertionError):
        predicted(bad, report_of(log_of([102])))


def test_the_helpers_no_longer_pool_the_kills_of_several_ooms():
    """killed_in_order looked at the kills of all OOMs together, so a double kill in the
    first OOM hid the verdict of the next: it is gone; each OOM is checked by itself."""
    assert not hasattr(lab, "killed_in_order")


def played_with(*tasks):
    """A PlayResult of made-up (name, action, result) tasks, as the results_json callback
    writes them."""
    import json
    import subprocess

    import vmharness
    out = {"tasks": [{"task": n, "host": "g", "action": a, "result": r} for n, a, r in tasks]}
    return vmharness.PlayResult(subprocess.CompletedProcess([], 0, json.dumps(out), ""), [])


def test_host_tasks_count_what_ran_on_the_host_and_nothing_else():
    from vmharness import host_tasks
    played = played_with(("check", "ansible.builtin.assert", {}),
                         ("look", "ansible.builtin.command", {"changed": False}),
                         ("install", "ansible.builtin.package", {"skipped": True}),
                         ("facts", "set_fact", {}),
                         ("converge", "ebpf.oom.host", {"changed": True}),
                         ("failed", "ebpf.oom.verify", {"failed": True}))
    assert host_tasks(played) == ["look", "converge", "failed"]
    # a controller-only action that is not in the list counts (an undercount would hide cost)
    assert host_tasks(played_with(("ping", "ansible.builtin.ping", {}))) == ["ping"]
