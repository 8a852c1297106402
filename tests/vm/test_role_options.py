"""What a converge of a host-class role costs on the session's hook guest, and two options
of the role ebpf.oom.bpf_oom, each shown by one converge.

database_server, converged then converged again: the first run changes the host in two
tasks that reach it (the package check and ebpf.oom.host, which does the rest in one
module run); the second runs the same two and changes nothing. playbooks/status.yml shows
the guest's row (with a next version of the policy beside it in shadow mode, a role
entry's `mode`); then docs/operations.md's uninstall (bpf_oom_state: absent) leaves no
unit, path or pin of the collection, and run again changes nothing.

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

bpf_oom_install_packages: on a guest without libbpf1 and bpftool, the converge installs them
(before the kernel check, which without libbpf finds no backend) and attaches its policy.

Each test removes what the role put there (policies, observer, the objects, the boot
restore's unit enabled), so that later tests of the session guest start clean.
"""

import hashlib
import os
import subprocess

import pytest

from lab import doc, killed_by, spec, task
from vmharness import (REPO, UNINSTALL, documented_play, fleet_status, host_tasks, leftovers, loaded, play,
                       result_of, role)

BPFFS = "/sys/fs/bpf/ebpf_oom"
RECORDS = "/var/lib/ebpf-oom/policies"
OBJECTS = "/var/lib/ebpf-oom/objects"
EBPF_OOM = "/usr/lib/ebpf-oom/ebpf-oom"  # the host command the role installs
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


# A next version of the class policy, tried in shadow beside it (docs/operations.md).
NEXT_DB = {"name": "db-next", "mode": "shadow",
           "rules": [{"match": {"cgroup": "/db"}, "action": "prefer", "tier": 2}],
           "fallback": {"action": "prefer", "tier": 1}}


@pytest.mark.timeout(1800)
def test_database_server_converges_in_two_host_tasks_reruns_unchanged_and_uninstalls(hook_vm, tmp_path):
    converge = {"name": "converge", "ansible.builtin.include_role": {"name": "ebpf.oom.database_server"},
                "vars": {"bpf_oom_policies": [{"name": "db-next", "policy": dict(NEXT_DB, mode="enforce"),
                                               "mode": "shadow"}]}}
    try:
        first = play(hook_vm, [converge], tmp_path)
        second = play(hook_vm, [converge], tmp_path)
        row, shown = fleet_status(hook_vm, tmp_path)
        record = [p for p in loaded_records(hook_vm, tmp_path) if p["name"] == "database"][0]
        installed = leftovers(hook_vm)
        uninstall = result_of(play(hook_vm, documented_play(UNINSTALL), tmp_path), "Converge the host")
        after = leftovers(hook_vm)
        again = result_of(play(hook_vm, documented_play(UNINSTALL), tmp_path), "Converge the host")
    finally:
        undo(hook_vm, tmp_path, ["database", "db-next"])
    both = ["Look for the BPF runtime (and the compiler where objects are built on the host)",
            "Converge the host"]
    assert [name.split(" : ", 1)[-1] for name in host_tasks(first)] == both, first
    assert result_of(first, "Converge the host")["policies"]["database"]["action"] == "created", first
    # the entry's mode over its document's: the next version judges beside the class policy
    assert result_of(first, "Converge the host")["policies"]["db-next"]["action"] == "created", first
    assert [name.split(" : ", 1)[-1] for name in host_tasks(second)] == both, second
    assert second.changed == [], second
    # playbooks/status.yml: the guest's row names the policy, its backend and object, the
    # observer, no agent, not off (and it is the row `ebpf-oom status` gives on the host)
    assert row["backend"] == "evaluate_task" and row["observer"] == "yes", row
    assert (row["agent"], row["off"], row["version"]) == ("no", "no", record["collection_version"]), row
    assert row["policies"].startswith("database (evaluate_task, %s, " % record["object_sha256"][:12]), row
    assert "%s | %s | evaluate_task | database (" % (hook_vm.name, row["kernel"]) in shown, shown
    assert ", db-next (evaluate_task shadow, " in row["policies"], row
    # docs/operations.md's uninstall on the hook guest: the policy, the observer's pins,
    # the units, the engine, the link on PATH and the state were there, and are gone
    units, paths, pinned = installed
    assert "ebpf-oom-restore.service" in " ".join(units) and "/usr/local/sbin/ebpf-oom" in paths, installed
    assert "database" in pinned and "observer" in pinned, installed
    assert sorted(uninstall["purged"]) == ["database", "db-next"], uninstall
    assert after == ([], [], []), after
    assert not again["changed"] and again["changes"] == [], again


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


# A host without libbpf1 and bpftool: Debian's packages served from a file repository in the
# guest, which apt then uses alone (the tests carry no traffic beyond this machine). On a
# Debian 12 host iproute2 and libbpf-dev need libbpf1: it is removed from under them (a
# host without iproute2, a container's say, has no libbpf1 at all), which apt's installs
# refuse until libbpf1 is back; so the binding Ansible's apt module needs (python3-apt,
# which it would install first) is put there beforehand, and taken away after.
LOCAL_REPO = "/var/local/ebpf-oom-test-repo"
LOCAL_LIST = "/etc/apt/sources.list.d/ebpf-oom-test.list"
LOCAL_APT_CONF = "/etc/apt/apt.conf.d/00ebpf-oom-test"
REMOVED = ["libbpf1", "bpftool"]
APT_BINDING = ["python3-apt", "python-apt-common", "distro-info-data"]


def packages_index(debs):
    """The Packages file of a flat repository holding the .deb files (dpkg-scanpackages')."""
    entries = []
    for deb in debs:
        control = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True,
                                 check=True).stdout.rstrip("\n")
        data = deb.read_bytes()
        entries.append("%s\nFilename: ./%s\nSize: %d\nSHA256: %s\n" % (
            control, deb.name, len(data), hashlib.sha256(data).hexdigest()))
    return "\n".join(entries)


def package_state(guest, name):
    done = guest.ssh(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", name], check=False)
    return done.stdout.strip()


@pytest.mark.timeout(1800)
def test_a_host_without_libbpf1_gets_it_from_the_role_before_the_kernel_check(hook_vm, tmp_path):
    """The role's package step comes before the kernel check (without libbpf the check
    would find no backend): libbpf1 and bpftool removed from the guest, the converge
    installs them and the policy is attached on the hook."""
    subprocess.run(["apt-get", "download"] + REMOVED + APT_BINDING, cwd=str(tmp_path), check=True,
                   capture_output=True)
    debs = sorted(tmp_path.glob("*.deb"))
    (tmp_path / "Packages").write_text(packages_index(debs))
    removed, binding = ([LOCAL_REPO + "/" + deb.name for deb in debs if deb.name.split("_")[0] in names]
                        for names in (REMOVED, APT_BINDING))
    hook_vm.ssh(["mkdir", "-p", LOCAL_REPO])
    for path in debs + [tmp_path / "Packages"]:
        hook_vm.put(path, LOCAL_REPO + "/")
    hook_vm.ssh(["tee", LOCAL_LIST], input="deb [trusted=yes] file:%s ./\n" % LOCAL_REPO)
    hook_vm.ssh(["tee", LOCAL_APT_CONF],
                input='Dir::Etc::sourcelist "%s";\nDir::Etc::sourceparts "-";\n' % LOCAL_LIST)
    had_binding = package_state(hook_vm, APT_BINDING[0]) == "ii"
    try:
        hook_vm.ssh(["apt-get", "update"])
        hook_vm.ssh(["dpkg", "-i"] + binding)
        hook_vm.ssh(["dpkg", "--remove", "--force-depends"] + REMOVED)
        before = [package_state(hook_vm, name) for name in REMOVED]
        played = play(hook_vm, [role(bpf_oom_install_packages=True,
                                     bpf_oom_policies=[{"name": KEPT, "policy": KEPT_DOC}])], tmp_path)
        after = [package_state(hook_vm, name) for name in REMOVED]
    finally:
        if [package_state(hook_vm, name) for name in REMOVED] != ["ii"] * len(REMOVED):
            hook_vm.ssh(["dpkg", "-i"] + removed, check=False)
        if not had_binding:
            hook_vm.ssh(["dpkg", "--remove"] + APT_BINDING, check=False)
        hook_vm.ssh(["rm", "-rf", LOCAL_REPO, LOCAL_LIST, LOCAL_APT_CONF], check=False)
        hook_vm.ssh(["find", "/var/lib/apt/lists", "-name", "_var_local_ebpf-oom-test-repo_*", "-delete"],
                    check=False)
        undo(hook_vm, tmp_path, [KEPT])
    assert "ii" not in before and after == ["ii", "ii"], (before, after)
    assert result_of(played, "Install what is missing of it")["changed"], played
    converged = result_of(played, "Converge the host")
    assert converged["backend"] == "evaluate_task", converged
    assert converged["policies"][KEPT]["action"] == "created" and KEPT in converged["verified"], converged
