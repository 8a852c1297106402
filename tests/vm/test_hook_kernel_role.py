"""A stock Debian guest moves to the hook kernel through playbooks/hook_kernel.yml (the role
ebpf.oom.hook_kernel) and back, booting from its own disk through GRUB as a real host does:
installing a package, update-grub, a one-shot entry and a reboot really change its kernel.

1. database_server (bpf_oom_backend auto) on the guest's Debian kernel: score_adj, agent.
2. A broken kernel package (Debian's kernel without its initrd: it cannot mount its root and
   panics): the trial boot fails, the guest comes back on its old kernel by itself
   (panic= from the role, GRUB's one-shot entry spent), the play fails the host naming the
   reason, the old kernel stays GRUB's default, the package is gone, the policy still runs
   on score_adj with its agent.
3. The hook kernel, built by the role (the test kernel's configuration, so the build tree
   and ccache of the suite's kernel serve it): kernel_info says evaluate_task, GRUB's
   default is the hook kernel; run again, the play changes nothing and builds nothing.
4. database_server again: the policy moves to the hook, the agent stops, and a real OOM
   follows the policy with policy_name= in the kernel's report.
5. hook_kernel_state=absent: the guest runs its Debian kernel again, the package is gone.
"""

import os
import subprocess

import pytest

from lab import Lab, killed_by, spec, task
from vmharness import REPO, play, playbook, vmlib

PLAYBOOK = os.path.join(REPO, "playbooks", "hook_kernel.yml")
POLICY = "database"
BROKEN_RELEASE = "6.1.0-ebpf-oom-broken"
LAB = "hk-db"
# The kernel alone kills db (the largest); the policy spares it (tier 1000) and kills web.
SPEC = spec(task("web", 40), task("db", 90))
DATABASE = {"name": "converge", "ansible.builtin.include_role": {"name": "ebpf.oom.database_server"},
            "vars": {"bpf_oom_install_packages": False, "database_server_extra_rules": [
                {"match": {"cgroup": "/oomlab/%s/db" % LAB}, "action": "prefer", "tier": 1000}]}}


def broken_package(tmp_path):
    """linux-image-BROKEN_RELEASE: Debian's own kernel without an initrd, whose disk and file
    system drivers are modules: it panics "VFS: Unable to mount root fs"."""
    root = tmp_path / "broken"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "boot").mkdir()
    (root / "DEBIAN" / "control").write_text(
        "Package: linux-image-%s\nVersion: 1\nArchitecture: amd64\nMaintainer: ebpf.oom tests\n"
        "Section: kernel\nPriority: optional\nDescription: a kernel that cannot mount its root\n"
        % BROKEN_RELEASE)
    with open(os.path.join(vmlib.image_dir(), "vmlinuz"), "rb") as source:
        (root / "boot" / ("vmlinuz-" + BROKEN_RELEASE)).write_bytes(source.read())
    deb = tmp_path / ("linux-image-%s_1_amd64.deb" % BROKEN_RELEASE)
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
                   check=True, capture_output=True)
    return str(deb)


def kernel(guest):
    return guest.ssh(["uname", "-r"]).stdout.strip()


def grub_default(guest, tmp_path):
    """The release GRUB boots by default, as ebpf.oom.boot_kernel reads it (check mode)."""
    found = play(guest, [{"name": "menu", "ebpf.oom.boot_kernel": {"release": kernel(guest)}}],
                 tmp_path, check_mode=True)["menu"]
    return found["default"], found["releases"]


def hook_packages(guest):
    listed = guest.ssh(["dpkg-query", "--show", "--showformat=${db:Status-Abbrev} ${Package}\n",
                        "linux-image-*-ebpf-oom-*"], check=False).stdout
    return sorted(line.split()[-1] for line in listed.splitlines() if line.startswith("ii "))


def info(guest, tmp_path):
    return play(guest, [{"name": "info", "ebpf.oom.kernel_info": {}}], tmp_path)["info"]


def policies(found):
    """{policy: backend} of kernel_info's policies (the OOM observer left out)."""
    return dict((p["name"], p.get("backend")) for p in found["policies"] if p["name"] != "observer")


def agent_active(guest):
    return guest.ssh(["systemctl", "is-active", "ebpf-oom-agent.service"], check=False).stdout.strip()


# Four boots under TCG (the failed trial is two), a package build when the cache has none
# (bindeb-pkg over the test kernel's build tree) and seven plays.
@pytest.mark.timeout(2700)
def test_a_stock_guest_moves_to_the_hook_kernel_and_back(disk_vm, tmp_path):
    guest = disk_vm
    stock = kernel(guest)
    assert "-ebpf-oom-" not in stock, stock
    cache = {"hook_kernel_cache": vmlib.cache_dir()}

    # 1. score_adj on the Debian kernel
    play(guest, [DATABASE], tmp_path)
    before = info(guest, tmp_path)
    assert before["backend"] == "score_adj" and before["secure_boot"] is None, before
    assert agent_active(guest) == "active"

    # 2. a kernel that cannot mount its root: back on the old kernel, the host failed
    failed = playbook(guest, PLAYBOOK, tmp_path, dict(cache, hook_kernel_package=broken_package(tmp_path)),
                      check=False)
    assert failed.rc != 0, failed
    assert [task.split(" : ")[-1] for task, _msg in failed.failed] == [
        "Fail the host that did not come up on the hook kernel"], failed
    message = failed.failed[0][1]
    assert ("the trial boot of %s failed: the host came back on %s, GRUB's default" % (BROKEN_RELEASE, stock)
            in " ".join(message.split())), message
    assert kernel(guest) == stock
    assert grub_default(guest, tmp_path) == (stock, [stock]), "the broken entry is gone, stock the default"
    assert hook_packages(guest) == []
    still = info(guest, tmp_path)
    assert still["backend"] == "score_adj" and policies(still) == {POLICY: "score_adj"}, still
    assert agent_active(guest) == "active"

    # 3. the hook kernel, built by the role; then the same play changes nothing
    moved = playbook(guest, PLAYBOOK, tmp_path, cache)
    hook = kernel(guest)
    assert hook.endswith("-ebpf-oom-hook"), hook
    now = info(guest, tmp_path)
    assert now["backend"] == "evaluate_task" and now["kernel_release"] == hook, now
    assert grub_default(guest, tmp_path) == (hook, [hook, stock])
    assert hook_packages(guest) == ["linux-image-" + hook]
    assert "Reboot into it" in [t.split(" : ")[-1] for t in moved.changed], moved
    again = playbook(guest, PLAYBOOK, tmp_path, cache)
    assert again.changed == [], again
    built = [r for t, r in again.tasks if t.endswith(" : Build the package, or find it built")]
    assert built and not built[0].get("changed") and "built" not in built[0]["stderr"], again

    # 4. the policy moves to the hook and follows it in a real OOM
    play(guest, [DATABASE], tmp_path)
    hooked = info(guest, tmp_path)
    assert policies(hooked) == {POLICY: "evaluate_task"}, hooked
    assert agent_active(guest) != "active"
    with Lab(guest).scenario(LAB, SPEC) as scene:
        killed_by(scene.oom(), "web", POLICY, spared=["db"])

    # 5. back to the distribution's kernel
    playbook(guest, PLAYBOOK, tmp_path, dict(cache, hook_kernel_state="absent"))
    assert kernel(guest) == stock
    assert hook_packages(guest) == []
    menu = guest.ssh(["cat", "/boot/grub/grub.cfg"]).stdout
    assert "vmlinuz-" + stock in menu and "-ebpf-oom-" not in menu
    assert 'set default="${saved_entry}"' not in menu, "the role's GRUB settings are gone"
