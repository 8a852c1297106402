"""The README's first command runs playbooks/demo.yml twice against a hook-kernel guest
(tests/demo boots one of its own); here the same playbook runs against the session's
hook guest, so the suite shows what the demo shows: the policy is compiled, pinned and
verified, and a second run changes nothing; playbooks/status.yml (the demo's last step)
shows the policy in the guest's row."""

import os
import re

from vmharness import REPO, fleet_status, play, run_playbook

DEMO = os.path.join(REPO, "playbooks", "demo.yml")
RECAP = re.compile(r"^\S+\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
POLICY = "pg-batch-web"


def recap(done):
    """(ok, changed, unreachable, failed) of the single host."""
    found = RECAP.findall(done.stdout)
    assert len(found) == 1, done.stdout + done.stderr
    return tuple(int(n) for n in found[0])


def test_demo_playbook_pins_and_verifies_then_changes_nothing(hook_vm, tmp_path):
    inventory = hook_vm.inventory(tmp_path)
    try:
        first = run_playbook(DEMO, inventory)
        second = run_playbook(DEMO, inventory)
        row, _table = fleet_status(hook_vm, tmp_path, on_host=False)  # the demo installs no host command
        assert "backend=evaluate_task" in first.stdout
        assert recap(first)[1] >= 1 and recap(first)[3] == 0, first.stdout
        assert recap(second)[1:] == (0, 0, 0), second.stdout
        assert "'policy_name': '%s'" % POLICY in second.stdout or \
            '"policy_name": "%s"' % POLICY in second.stdout, second.stdout
        assert row["policies"].startswith(POLICY + " (evaluate_task, "), row
    finally:
        play(hook_vm, [{"ebpf.oom.policy": {"name": POLICY, "state": "absent"}}], tmp_path)
