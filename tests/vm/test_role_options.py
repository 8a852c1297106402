"""What a converge of a host-class role costs on the session's hook guest, and two options
of the role ebpf.oom.bpf_oom, each shown by one converge.

database_server, converged then converged again: the first run changes the host in two
tasks that reach it (the package check and ebpf.oom.host, which does the rest in one
module run); the second runs the same two and changes nothing.

bpf_oom_enabled: false switches the host off (the listed policy detached, the marker
naming the role), true switches it on again; a host switched off by hand (`ebpf-oom off`)
stays off through a converge that asks for nothing else, with a warning.

bpf_oom_purge: a policy put on the guest through ebpf.oom.compile and ebpf.oom.policy,
which the role does not list, is gone after the converge: its pins under bpffs, its copy
for the boot restore, and ebpf.oom.verify no longer knows it; the policy the role lists is
there and verifies. (The purged one decides nothing: the role applies the listed policies
before it purges, so a host keeps its deciding policy when a new one fails to apply; a
deciding policy renamed in one converge is refused beside the old one, with a message
that says to remove it first.)

bpf_oom_compile_on_host: the role copies the C sources to the guest and clang there
compiles them against the guest's own BTF; the policy (bpf/examples/select_target.bpf.c,
named in the OOM reports by bpf/examples/policy_name.bpf.c) then decides a real memcg OOM:
it kills the small task, where the kernel's heuristic would kill the big one.

Each test removes what the role put there (policies, observer, the objects, the boot
restore's unit enabled), so that later tests of the session guest start clean.
"""

import datetime
import json
import os

import pytest

from lab import doc, killed_by, spec, task
from vmharness import REPO, host_tasks, loaded, play, result_of, role, run_playbook

BPFFS = "/sys/fs/bpf/ebpf_oom"
RECORDS = "/var/lib/ebpf-oom/policies"
OBJECTS = "/var/lib/ebpf-oom/objects"
EBPF_OOM = "/usr/lib/ebpf-oom/ebpf-oom"  # the host command the role installs
STATUS = os.path.join(REPO, "playbooks", "status.yml")
EXAMPLES = os.path.join(REPO, "bpf", "examples")

# bpf_oom_purge: a policy put there beside the role (a C program that names OOMs and
# decides nothing), and the one the role lists.
PURGED = "purged"
KEPT = "kept"
KEPT_DOC = doc(KEPT, {"match": {"comm": "lab-mid"}, "action": "prefer", "tier": 1})

# bpf_oom_compile_on_host: the deciding C policy and the program that names it in reports.
COMPILED = "hostcc"
NAMER = "hostcc_name"


def loaded_records(guest, tmp_path):
    """The loaded policies' records (ebpf.oom.kernel_info)."""
    return play(guest, [{"name": "info", "ebpf.oom.kernel_info": {}}], tmp_path)["info"]["policies"]


def listing(guest, path):
    """The entries of a directory in the guest; None when it does not exist."""
    done = guest.ssh(["ls", "-A", path], check=False)
    return done.stdout.split() if done.returncode == 0 else None


def undo(guest, tmp_path, policies, files=()):
    """What the role added that later tests of the session guest would notice: the
    policies, the observer, files it wrote, the boot restore enabled."""
    try:
        play(guest, [{"name": "remove " + name,
                      "ebpf.oom.policy": {"name": name, "state": "absent"}} for name in policies]
             + [{"name": "observer", "ebpf.oom.observer": {"state": "absent"}}], tmp_path)
    finally:
        if files:
            guest.ssh(["rm", "-f", "--"] + list(files), check=False)
        guest.ssh(["systemctl", "disable", "ebpf-oom-restore.service"], check=False)


@pytest.mark.timeout(1800)
def test_role_purge_removes_a_policy_the_role_does_not_list(hook_vm, tmp_path):
    purged_object = "/root/%s.bpf.o" % PURGED
    try:
        play(hook_vm, [
            {"name": "compile", "ebpf.oom.compile": {
                "src": os.path.join(EXAMPLES, "policy_name.bpf.c"), "policy_name": PURGED},
             "delegate_to": "localhost", "register": "built"},
            {"name": "copy", "ansible.builtin.copy": {
                "src": "{{ built.object }}", "dest": purged_object, "mode": "0600"}},
            {"name": "load", "ebpf.oom.policy": {
                "name": PURGED, "object": purged_object, "globals": {"policy_name": PURGED}}},
        ], tmp_path)
        before = listing(hook_vm, BPFFS + "/" + PURGED)
        played = play(hook_vm, [role(bpf_oom_purge=True,
                                     bpf_oom_policies=[{"name": KEPT, "policy": KEPT_DOC}])],
                      tmp_path)
        names = loaded(hook_vm, tmp_path)
        pinned = listing(hook_vm, BPFFS)
        kept_pins = listing(hook_vm, BPFFS + "/" + KEPT)
        recorded = listing(hook_vm, RECORDS)
        checks = play(hook_vm, [
            {"name": "all", "ebpf.oom.verify": {}},
            {"name": "kept", "ebpf.oom.verify": {"name": KEPT, "policy_name": KEPT}},
            {"name": "purged", "ebpf.oom.verify": {"name": PURGED}, "ignore_errors": True},
        ], tmp_path)
    finally:
        undo(hook_vm, tmp_path, [KEPT, PURGED], [purged_object])

    # before the converge, the unlisted policy ran: its record and its links pinned
    assert before and "record" in before and any(p.startswith("link_") for p in before), before
    # the role removed it, not what it lists, and then applied the listed one
    converged = result_of(played, "Converge the host")
    assert converged["purged"] == [PURGED], converged
    assert list(converged["policies"]) == [KEPT], converged
    assert converged["policies"][KEPT]["action"] == "created", converged
    assert converged["verified"] == ["observer", KEPT], converged
    # applied before the purge: a host keeps a deciding policy while the new one fails to apply
    changes = converged["changes"]
    assert changes.index("policies: %s: created" % KEPT) < changes.index("purge: %s: removed" % PURGED), changes
    # its pins, its copy for the boot restore and its place among the loaded are gone
    assert PURGED not in pinned and KEPT in pinned and "observer" in pinned, pinned
    assert PURGED not in recorded and KEPT in recorded, recorded
    assert PURGED not in names and KEPT in names, names
    # verify checks the listed policy and knows nothing of the purged one
    assert [p["name"] for p in checks["all"]["policies"]] == sorted(pinned), checks["all"]
    assert not checks["kept"].get("failed") and checks["kept"]["problems"] == [], checks["kept"]
    assert "record" in kept_pins and any(p.startswith("link_") for p in kept_pins), kept_pins
    assert checks["purged"].get("failed"), checks["purged"]


@pytest.mark.timeout(1800)
def test_role_compile_on_host_converges_and_enforces_by_a_real_oom(hook_vm, hook_lab, tmp_path):
    files = ["%s/%s.bpf.%s" % (OBJECTS, name, ext) for name in (COMPILED, NAMER)
             for ext in ("c", "o")]
    # The kernel's heuristic kills the largest task (big); the policy kills small.
    scenario = spec(task("big", 60), task("mid", 40), task("small", 20))
    try:
        with hook_lab.scenario("compile-on-host", scenario) as s:
            entries = [{"name": COMPILED, "src": os.path.join(EXAMPLES, "select_target.bpf.c"),
                        "globals": {"target_pid": s.pids["small"]}},
                       {"name": NAMER, "src": os.path.join(EXAMPLES, "policy_name.bpf.c"),
                        "globals": {"policy_name": COMPILED}}]
            played = play(hook_vm, [role(bpf_oom_compile_on_host=True,
                                         bpf_oom_install_packages=True,
                                         bpf_oom_policies=entries)], tmp_path)
            names = loaded(hook_vm, tmp_path)
            report = s.oom()
    finally:
        undo(hook_vm, tmp_path, [COMPILED, NAMER], files)

    # the packages a compiling host needs were there (the image has them): none installed
    found = result_of(played, "Look for the BPF runtime (and the compiler where objects are "
                              "built on the host)")
    have = [line.split()[1] for line in found["stdout_lines"] if line.startswith("ii ")]
    assert {"clang", "libbpf-dev"} <= set(have), found
    assert result_of(played, "Install what is missing of it").get("skipped"), played
    # clang compiled both sources in the guest, against a vmlinux.h of the guest's BTF
    assert result_of(played, "Compile C policies once for the fleet, on the controller").get(
        "skipped"), played
    compiled = result_of(played, "Compile C policies on the host, against its own BTF")
    assert [r["item"]["name"] for r in compiled["results"]] == [COMPILED, NAMER], compiled
    for one in compiled["results"]:
        assert one["changed"] and one["object"] == "%s/%s.bpf.o" % (OBJECTS, one["item"]["name"])
        assert one["vmlinux"].startswith("/var/cache/ebpf-oom/vmlinux/"), one
    verified = result_of(played, "Converge the host")["verified"]
    assert [name for name in verified if name != "observer"] == [COMPILED, NAMER], verified
    assert COMPILED in names and NAMER in names, names
    # the compiled policy decided the OOM: small died, big (the kernel's choice) and mid live
    killed_by(report, "small", COMPILED, spared=["big", "mid"])


@pytest.mark.timeout(1800)
def test_database_server_converges_in_two_host_tasks_and_reruns_unchanged(hook_vm, tmp_path):
    converge = {"name": "converge", "ansible.builtin.include_role": {"name": "ebpf.oom.database_server"}}
    table = tmp_path / "status.json"
    try:
        first = play(hook_vm, [converge], tmp_path)
        second = play(hook_vm, [converge], tmp_path)
        shown = run_playbook(STATUS, hook_vm.inventory(tmp_path), extra_vars={"status_json": str(table)})
        on_host = json.loads(hook_vm.ssh(["ebpf-oom", "status", "--json"]).stdout)
        record = [p for p in loaded_records(hook_vm, tmp_path) if p["name"] == "database"][0]
    finally:
        undo(hook_vm, tmp_path, ["database"])
    both = ["Look for the BPF runtime (and the compiler where objects are built on the host)",
            "Converge the host"]
    assert [name.split(" : ", 1)[-1] for name in host_tasks(first)] == both, first
    assert result_of(first, "Converge the host")["policies"]["database"]["action"] == "created", first
    assert [name.split(" : ", 1)[-1] for name in host_tasks(second)] == both, second
    assert second.changed == [], second
    # playbooks/status.yml: the guest's row names the policy, its backend and object, the
    # observer, no agent, not off; the same row as `ebpf-oom status` on the host
    [(host, row)] = json.loads(table.read_text()).items()
    assert host == hook_vm.name, host
    # the same row, but for the second of the last kill (its wall time is worked out from the
    # boot clock at each read, and may cross a second between the two)
    when, when_on_host = row.pop("last kill").split(" ", 1), on_host.pop("last kill").split(" ", 1)
    assert row == on_host and when[1:] == when_on_host[1:], (row, when, on_host, when_on_host)
    if when[0] != "-":
        stamps = [datetime.datetime.strptime(w[0], "%Y-%m-%dT%H:%M:%S") for w in (when, when_on_host)]
        assert abs((stamps[0] - stamps[1]).total_seconds()) <= 1, stamps
    assert row["backend"] == "evaluate_task" and row["observer"] == "yes", row
    assert (row["agent"], row["off"], row["version"]) == ("no", "no", record["collection_version"]), row
    assert row["policies"].startswith("database (evaluate_task, %s, " % record["object_sha256"][:12]), row
    assert "%s | %s | evaluate_task | database (" % (host, row["kernel"]) in shown.stdout, shown.stdout


@pytest.mark.timeout(1800)
def test_the_role_switches_off_and_on_and_never_undoes_an_off_switch_set_by_hand(hook_vm, tmp_path):
    policies = [{"name": KEPT, "policy": KEPT_DOC}]
    marker = "/var/lib/ebpf-oom/off"
    try:
        play(hook_vm, [role(bpf_oom_policies=policies)], tmp_path)
        off = result_of(play(hook_vm, [role(bpf_oom_policies=policies, bpf_oom_enabled=False)], tmp_path),
                        "Converge the host")
        while_off = loaded(hook_vm, tmp_path)
        said = hook_vm.ssh(["cat", marker]).stdout
        on = result_of(play(hook_vm, [role(bpf_oom_policies=policies)], tmp_path), "Converge the host")
        after_on = loaded(hook_vm, tmp_path)
        hook_vm.ssh(["ebpf-oom", "off"])  # on root's PATH
        by_hand = result_of(play(hook_vm, [role(bpf_oom_policies=policies)], tmp_path), "Converge the host")
        still_off = loaded(hook_vm, tmp_path)
    finally:
        hook_vm.ssh([EBPF_OOM, "on"], check=False)
        undo(hook_vm, tmp_path, [KEPT])
    assert "policies: switched the host off" in off["changes"], off
    assert KEPT not in while_off and "observer" in while_off, while_off
    assert "by ebpf.oom.host" in said and off["switched_off"] == said.strip(), (said, off)
    assert "policies: switched the host on" in on["changes"] and on["switched_off"] is None, on
    assert KEPT in after_on, after_on
    assert KEPT not in still_off and not by_hand["changed"], (still_off, by_hand)
    assert by_hand["notices"] and "switched off by hand" in by_hand["notices"][0], by_hand
