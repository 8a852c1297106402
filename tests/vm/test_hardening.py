"""A process chooses its own name, not its cgroup: renaming itself does not move a workload
out of the tier the host-class roles give it, in real OOMs in the session's hook-kernel
guest.

Each test applies a role's policy document as the role would (read from the role's
defaults, its Jinja expressions rendered over them, applied through ebpf.oom.policy)
and runs a memory cgroup into an OOM (tests/vm/lab.py): a workload named like a
daemon the role protects (prctl PR_SET_NAME, as oomlab names every task) is ranked by
its cgroup, or like any other process when no rule ranks its cgroup.
"""

import os

import pytest
import yaml
from jinja2.nativetypes import NativeEnvironment

from lab import killed_by, spec, task
from vmharness import REPO

BESTEFFORT = "/kubepods.slice/kubepods-besteffort.slice"
BURSTABLE = "/kubepods.slice/kubepods-burstable.slice"


def role_document(role):
    """The policy document the role applies: ``<role>_policy`` from its defaults, with the
    role's own expressions ({{ ... }}) rendered over those defaults."""
    with open(os.path.join(REPO, "roles", role, "defaults", "main.yml")) as handle:
        defaults = yaml.safe_load(handle)
    env = NativeEnvironment()

    def render(value):
        if isinstance(value, dict):
            return dict((k, render(v)) for k, v in value.items())
        if isinstance(value, list):
            return [render(v) for v in value]
        if isinstance(value, str) and "{{" in value:
            return render(env.from_string(value).render(**defaults))
        return value
    return render(defaults["%s_policy" % role])


def test_a_besteffort_pod_named_kubelet_still_dies_first(hook_lab, hook_policies):
    """container_host: the smallest task, in a BestEffort pod, calls itself kubelet; the
    larger Burstable and Guaranteed pods outlive it."""
    document = role_document("container_host")
    with hook_lab.scenario("renamed-kubelet", spec(
            task("hog", 20, comm="kubelet", cgroup=BESTEFFORT + "/kubepods-besteffort-podhog.slice"),
            task("burstable", 40, cgroup=BURSTABLE + "/kubepods-burstable-podb.slice"),
            task("guaranteed", 60, cgroup="/kubepods.slice/kubepods-podg.slice"),
            memcg="/kubepods.slice")) as s:
        hook_policies.apply(document)
        report = s.oom()
    killed_by(report, "hog", document["name"], spared=["burstable", "guaranteed"])


@pytest.mark.parametrize("role,daemon", [("container_host", "kubelet"), ("database_server", "postgres")])
def test_a_process_named_like_a_daemon_outside_its_unit_is_ranked_like_any_other(hook_lab, hook_policies,
                                                                                 role, daemon):
    """container_host (kubelet) and database_server (postgres): a process that calls itself
    like the daemon the role ranks last, outside the daemon's unit, is in the tier of every
    other process; the larger of the two dies (the rule for the daemon would have spared it)."""
    document = role_document(role)
    with hook_lab.scenario("fake-" + daemon, spec(task("fake", 60, comm=daemon), task("other", 30))) as s:
        hook_policies.apply(document)
        report = s.oom()
    killed_by(report, "fake", document["name"], spared=["other"])


def test_a_preemptible_job_named_slurmd_still_dies_first(hook_lab, hook_policies):
    """batch_worker: the smallest job, preemptible, calls itself slurmd; the ordinary job
    outlives it."""
    document = role_document("batch_worker")
    with hook_lab.scenario("renamed-slurmd", spec(
            task("job", 20, comm="slurmd", cgroup="/batch.slice/batch-preemptible.slice/job1"),
            task("other", 40, cgroup="/batch.slice/job2"),
            memcg="/batch.slice")) as s:
        hook_policies.apply(document)
        report = s.oom()
    killed_by(report, "job", document["name"], spared=["other"])
