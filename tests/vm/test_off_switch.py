"""The emergency off switch (`ebpf-oom off` / `ebpf-oom on`, docs/operations.md), on the
session's hook guest with real OOMs: the role ebpf.oom.bpf_oom puts a policy on the guest;
`off`, through the Ansible task the docs show, detaches it; the next OOM is the kernel's
own (policy_name=default, the task the kernel's heuristic picks); `ebpf-oom restore`, what
the boot service runs, brings nothing back while the host is off; `ebpf-oom on` does, and
the policy decides the next OOM again.
"""

import pytest

from lab import doc, killed_by, spec, task
from vmharness import documented_task, loaded, play, role

EBPF_OOM = "/usr/lib/ebpf-oom/ebpf-oom"
MARKER = "/var/lib/ebpf-oom/off"
POLICY = "offswitch"
# The kernel's heuristic kills the largest task (big, then mid); the policy kills small.
DOCUMENT = doc(POLICY, {"match": {"comm": "lab-small"}, "action": "prefer", "tier": 1})
OFF_TASK = "Detach every policy; the boot restore brings none back"


@pytest.fixture(scope="module")
def with_policy(hook_vm, tmp_path_factory):
    """The role on the hook guest with the policy; at the end the guest is switched on and
    the policy, the observer and the boot restore removed again."""
    tmp = tmp_path_factory.mktemp("off-switch")
    play(hook_vm, [role(bpf_oom_policies=[{"name": POLICY, "policy": DOCUMENT}])], tmp)
    try:
        yield
    finally:
        hook_vm.ssh([EBPF_OOM, "on"], check=False)
        play(hook_vm, [role(bpf_oom_policies=[{"name": POLICY, "state": "absent"}], bpf_oom_observer=False,
                            bpf_oom_restore_at_boot=False)], tmp)


@pytest.mark.timeout(1800)
def test_off_leaves_ooms_to_the_kernel_until_on_brings_the_policy_back(hook_vm, hook_lab, with_policy,
                                                                       tmp_path):
    assert POLICY in loaded(hook_vm, tmp_path)
    off = [documented_task(OFF_TASK)]
    with hook_lab.scenario("off-switch", spec(task("big", 60), task("mid", 40), task("small", 20))) as s:
        switched = play(hook_vm, off, tmp_path)[OFF_TASK]
        again = play(hook_vm, off, tmp_path)[OFF_TASK]
        marker = hook_vm.ssh(["stat", "-c", "%U %a", MARKER]).stdout.split()
        kept = hook_vm.ssh(["ls", "/var/lib/ebpf-oom/policies/%s" % POLICY]).stdout.split()
        while_off = loaded(hook_vm, tmp_path)
        kernels = s.oom()

        restore = hook_vm.ssh([EBPF_OOM, "restore"], check=False)
        after_restore = loaded(hook_vm, tmp_path)

        on = hook_vm.ssh([EBPF_OOM, "on"], check=False)
        gone = hook_vm.ssh(["test", "-e", MARKER], check=False).returncode
        verified = play(hook_vm, [{"name": "verify", "ebpf.oom.verify": {"name": POLICY}}], tmp_path)["verify"]
        decided = s.oom()

    # off: the policy detached, its record kept, the marker root's; a second off changes nothing
    assert switched["changed"] and "<6>ebpf-oom: detached policy %s" % POLICY in switched["stdout_lines"], switched
    assert any("switched off" in line for line in switched["stdout_lines"]), switched
    assert not again["changed"] and "already off" in again["stdout"], again
    assert marker == ["root", "644"]
    assert sorted(kept) == ["object.o", "record.json"]
    assert POLICY not in while_off and "observer" in while_off
    # the next OOM is the kernel's: its victim, and the report names no policy
    killed_by(kernels, "big", "default", spared=["mid", "small"])
    # the boot restore brings nothing back while the host is off, and says so
    assert restore.returncode == 0, restore.stderr
    assert "policies not restored: %s" % POLICY in restore.stdout, restore.stdout
    assert POLICY not in after_restore and "observer" in after_restore
    # on: the policy is back, verifies, and decides the next OOM (the kernel would kill mid)
    assert on.returncode == 0, on.stderr
    assert "<5>ebpf-oom: switched on" in on.stdout and "restored policy %s" % POLICY in on.stdout, on.stdout
    assert gone != 0
    assert not verified.get("failed") and verified["policies"][0]["name"] == POLICY, verified
    killed_by(decided, "small", POLICY, spared=["mid"])
