"""The emergency off switch (`ebpf-oom off` / `ebpf-oom on`, docs/operations.md), on the
session's hook guest with real OOMs: the role ebpf.oom.bpf_oom puts a policy on the guest;
`off`, through the Ansible task the docs show, detaches it; the next OOM is the kernel's
own (policy_name=default, the task the kernel's heuristic picks); `ebpf-oom restore`, what
the boot service runs, brings nothing back while the host is off; `ebpf-oom on` does, and
the policy decides the next OOM again.
"""

import os
import re

import pytest
import yaml

from lab import doc, killed_by, spec, task
from vmharness import REPO, play

EBPF_OOM = "/usr/lib/ebpf-oom/ebpf-oom"
MARKER = "/var/lib/ebpf-oom/off"
POLICY = "offswitch"
# The kernel's heuristic kills the largest task (big, then mid); the policy kills small.
DOCUMENT = doc(POLICY, {"match": {"comm": "lab-small"}, "action": "prefer", "tier": 1})
OFF_TASK = "Detach every policy; the boot restore brings none back"
# A C policy that decides nothing (Molecule's), compiled on the guest by the role; a
# counter applied before the role, which the role's purge removes.
KILLS_SRC = os.path.join(REPO, "molecule", "default", "files", "kills.bpf.c")
STRAY_SRC = os.path.join(REPO, "bpf", "testing", "counter.bpf.c")


def documented_task(name):
    """The task called `name` in docs/operations.md: the test runs what the docs show."""
    with open(os.path.join(REPO, "docs", "operations.md")) as f:
        blocks = re.findall(r"^```yaml\n(.*?)^```", f.read(), re.M | re.S)
    found = [t for block in blocks for p in yaml.safe_load(block) if isinstance(p, dict)
             for t in p.get("tasks", []) if t.get("name") == name]
    assert len(found) == 1, "docs/operations.md has no single task %r" % name
    return found[0]


def role(**variables):
    """The role as a task (the guest has the packages; other tests' policies stay)."""
    settings = dict(bpf_oom_install_packages=False)
    settings.update(variables)
    return {"name": "converge", "ansible.builtin.include_role": {"name": "ebpf.oom.bpf_oom"},
            "vars": settings}


def loaded(guest, tmp_path):
    """The names of the policies loaded on the guest (kernel_info)."""
    found = play(guest, [{"name": "info", "ebpf.oom.kernel_info": {}}], tmp_path)["info"]
    return sorted(p["name"] for p in found["policies"])


@pytest.fixture(scope="module")
def with_policy(hook_vm, tmp_path_factory):
    """The role on the hook guest with the policy and a C policy compiled on the guest
    (bpf_oom_compile_on_host), purging a policy it does not list (`stray`, applied first);
    at the end the guest is switched on and what is left removed again (with the modules:
    a role run costs minutes in TCG, and the boot restore left enabled has nothing left to
    restore). Yields the role's play."""
    tmp = tmp_path_factory.mktemp("off-switch")
    play(hook_vm, [{"name": "build", "ebpf.oom.compile": {"src": STRAY_SRC, "policy_name": "stray"},
                    "delegate_to": "localhost", "register": "built"},
                   {"name": "copy", "ansible.builtin.copy": {"src": "{{ built.object }}",
                                                             "dest": "/root/stray.bpf.o", "mode": "0600"}},
                   {"name": "stray", "ebpf.oom.policy": {"name": "stray", "object": "/root/stray.bpf.o"}}], tmp)
    try:
        yield play(hook_vm, [role(bpf_oom_purge=True, bpf_oom_compile_on_host=True,
                                  bpf_oom_policies=[{"name": POLICY, "policy": DOCUMENT},
                                                    {"name": "kills", "src": KILLS_SRC}])], tmp)
    finally:
        hook_vm.ssh([EBPF_OOM, "on"], check=False)
        play(hook_vm, [{"name": "remove " + name, "ebpf.oom.policy": {"name": name, "state": "absent"}}
                       for name in (POLICY, "kills", "stray")]
             + [{"name": "observer", "ebpf.oom.observer": {"state": "absent"}}], tmp)


def test_the_role_compiles_on_the_host_and_purges_what_it_does_not_list(hook_vm, with_policy, tmp_path):
    """bpf_oom_compile_on_host: the C source went to the guest and clang there built the
    object the policy runs; bpf_oom_purge: the policy the role does not list is gone."""
    compiled = [r for name, r in with_policy.tasks if name.endswith("Compile C policies on the host, against its own BTF")]
    assert compiled and compiled[-1]["changed"], compiled
    built = hook_vm.ssh(["stat", "-c", "%U %a", "/var/lib/ebpf-oom/objects/kills.bpf.o"]).stdout.split()
    assert built == ["root", "600"]
    names = loaded(hook_vm, tmp_path)
    assert "stray" not in names and "kills" in names and POLICY in names, names


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
    killed_by(kernels, "big", "default")
    # the boot restore brings nothing back while the host is off, and says so
    assert restore.returncode == 0, restore.stderr
    assert "policies not restored: %s" % POLICY in restore.stdout, restore.stdout
    assert POLICY not in after_restore and "observer" in after_restore
    # on: the policy is back, verifies, and decides the next OOM (the kernel would kill mid)
    assert on.returncode == 0, on.stderr
    assert "<5>ebpf-oom: switched on" in on.stdout and "restored policy %s" % POLICY in on.stdout, on.stdout
    assert gone != 0
    assert not verified.get("failed") and verified["policies"][0]["name"] == POLICY, verified
    killed_by(decided, "small", POLICY)
