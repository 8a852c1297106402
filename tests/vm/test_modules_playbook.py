"""The seed's example program driven only through the ebpf.oom modules, from a playbook
over SSH, on a guest with the hook kernel: compile on the guest against its own BTF, load
and pin, verify; a second run changes nothing; then a real OOM in a memory cgroup kills
target_pid (not the largest task) and the OOM report names the policy.

The workloads (holders in a memory cgroup, the allocating pusher) come from the kernel
smoke test's guest helper (tests/vm/hook_smoke_guest.py: spawn, limit, push, cleanup).
"""

import json
import os
import re

import yaml

from vmharness import run_playbook

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EXAMPLES = os.path.join(REPO, "bpf", "examples")
GUEST_HELPER = os.path.join(HERE, "hook_smoke_guest.py")
OOMLAB = os.path.join(REPO, "molecule", "shared", "files", "oomlab")  # the helper's log parser
GUEST_DIR = "/root/modules-playbook"
CGROUP = "modules-playbook"
POLICY, NAMER, REPORTED = "seed", "seed_name", "seed"
HOLDERS = {"mp-target": 16, "mp-medium": 48, "mp-large": 96}  # MiB each
HEADROOM_MIB = 32

RECAP = re.compile(r"^\S+\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def compile_task(program):
    return {"name": "compile %s on the host against its own BTF" % program,
            "ebpf.oom.compile": {
                "content": "{{ lookup('ansible.builtin.file', examples + '/%s.bpf.c') }}" % program,
                "dest": "%s/%s.bpf.o" % (GUEST_DIR, program),
                "policy_name": REPORTED}}


def object_path(program):
    return "%s/%s.bpf.o" % (GUEST_DIR, program)


APPLY = [{
    "hosts": "ebpf_oom_vms",
    "gather_facts": False,
    "tasks": [
        {"name": "what the kernel offers", "ebpf.oom.kernel_info": {}, "register": "kinfo"},
        {"name": "the hook backend is there",
         "ansible.builtin.assert": {"that": ["kinfo.backend == 'evaluate_task'",
                                             "kinfo.policy_name_supported"]}},
        compile_task("select_target"),
        compile_task("policy_name"),
        {"name": "the seed policy", "ebpf.oom.policy": {
            "name": POLICY, "object": object_path("select_target"), "require_hook": "always",
            "globals": {"target_pid": "{{ target_pid | int }}"}}},
        {"name": "its name in OOM reports", "ebpf.oom.policy": {
            "name": NAMER, "object": object_path("policy_name"),
            "globals": {"policy_name": REPORTED}}},
        {"name": "verify the policy", "ebpf.oom.verify": {
            "name": POLICY, "object": object_path("select_target"), "policy_name": REPORTED},
         "register": "verified"},
        {"name": "verify the name program", "ebpf.oom.verify": {
            "name": NAMER, "object": object_path("policy_name"), "policy_name": REPORTED}},
        {"name": "the verify result", "ansible.builtin.debug": {"var": "verified.policies"}},
    ],
}]

REMOVE = [{
    "hosts": "ebpf_oom_vms",
    "gather_facts": False,
    "tasks": [{"name": "remove %s" % name, "ebpf.oom.policy": {"name": name, "state": "absent"}}
              for name in (POLICY, NAMER)],
}]


def recap(done):
    """(ok, changed, unreachable, failed) of the single host."""
    found = RECAP.findall(done.stdout)
    assert len(found) == 1, done.stdout + done.stderr
    return tuple(int(n) for n in found[0])


def helper(guest, *args):
    done = guest.ssh(["python3", GUEST_DIR + "/helper.py"] + [str(a) for a in args], check=False,
                     timeout=900)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, "helper %s: %s\n%s" % (args, done.stdout, done.stderr)
    return json.loads(lines[-1])


def test_seed_example_through_the_modules_kills_target_pid_and_names_the_policy(hook_vm, tmp_path):
    guest = hook_vm
    inventory = guest.inventory(tmp_path)
    apply_book, remove_book = tmp_path / "apply.yml", tmp_path / "remove.yml"
    apply_book.write_text(yaml.safe_dump(APPLY, sort_keys=False))
    remove_book.write_text(yaml.safe_dump(REMOVE, sort_keys=False))
    guest.ssh(["rm", "-rf", GUEST_DIR])
    guest.ssh(["mkdir", "-p", GUEST_DIR])
    guest.put(GUEST_HELPER, GUEST_DIR + "/helper.py")
    guest.put(OOMLAB, GUEST_DIR + "/oomlab")
    try:
        pids = helper(guest, "spawn", CGROUP, *["%s:%d" % item for item in HOLDERS.items()])["pids"]
        target = pids["mp-target"]
        extra = {"examples": EXAMPLES, "target_pid": target}

        first = run_playbook(apply_book, inventory, extra_vars=extra)
        assert recap(first)[1] == 4, first.stdout  # two compiles, two policies
        assert '"name": "%s"' % POLICY in first.stdout  # the verify result is printed
        pins = guest.ssh(["ls", "/sys/fs/bpf/ebpf_oom/%s" % POLICY]).stdout.split()
        assert "link_select_target" in pins and "record" in pins

        second = run_playbook(apply_book, inventory, extra_vars=extra)
        assert recap(second)[1:] == (0, 0, 0), second.stdout

        helper(guest, "limit", CGROUP, HEADROOM_MIB)
        report = helper(guest, "push", CGROUP)
        kmsg = "\n".join(report["kmsg"])
        assert [k[0] for r in report["reports"] for k in r["kills"]] == [target], kmsg
        assert report["gone"] == [target]
        assert sorted(report["alive"]) == sorted([pids["mp-medium"], pids["mp-large"]])
        # One kill; every OOM report names the policy. The allocator may OOM once more
        # before the victim's memory is freed: the seed policy NEXTs every other task,
        # so that report ends "no killable processes" and kills nothing.
        reported = [r["policy"] for r in report["reports"]]
        assert reported and set(reported) == {REPORTED}, kmsg
    finally:
        guest.ssh(["python3", GUEST_DIR + "/helper.py", "cleanup", CGROUP], check=False)
        removed = run_playbook(remove_book, inventory, check=False)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    paths = ["%s/%s" % (root, name) for root in ("/sys/fs/bpf/ebpf_oom", "/var/lib/ebpf-oom/policies")
             for name in (POLICY, NAMER)]
    left = guest.ssh(["ls", "-d"] + paths, check=False)
    assert left.stdout.split() == [], left.stdout
    progs = json.loads(guest.ssh(["bpftool", "-j", "prog", "show"]).stdout)
    assert not [p for p in progs if p.get("name") in ("select_target", "name_policy")]
