"""molecule/vm/vmctl: a small fleet of real guests that Ansible reaches over SSH.

Boots are expensive under TCG: two Debian-kernel guests serve the whole module
(started together), one of them is rebooted once, and the hook-kernel check
uses the session's hook_vm.
"""

import os
import socket
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from vmharness import PREFIX, ansible_env, run_playbook, venv_tool, vmctl, vmlib


@pytest.fixture(scope="module")
def pair(vm_factory_module):
    """Two guests with the image's Debian kernel, booted at the same time."""
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(vm_factory_module.start, name, kernel="stock", memory=768)
                   for name in ("a", "b")]
        return [future.result() for future in futures]


def bzimage_version(path):
    """The version string in a bzImage's setup header ("release (builder) #1 SMP ...")."""
    with open(path, "rb") as handle:
        head = handle.read(0x10000)
    assert head[0x202:0x206] == b"HdrS", "%s is not a bzImage" % path
    start = struct.unpack_from("<H", head, 0x20E)[0] + 0x200
    return head[start:head.index(b"\0", start)].decode()


def qemu_running(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return b"qemu" in handle.read()
    except OSError:
        return False


def assert_runs_kernel(guest, image):
    release = guest.ssh(["uname", "-r"]).stdout.strip()
    version = guest.ssh(["uname", "-v"]).stdout.strip()
    built = bzimage_version(image)
    assert built.startswith(release + " ") and built.endswith(" " + version), (
        "guest runs %s %s, %s holds %s" % (release, version, image, built))


def test_guests_have_their_own_port_hostname_and_disk(pair):
    a, b = pair
    assert a.port != b.port
    assert vmctl("ssh", a.name, "--", "hostname").stdout.strip() == a.name
    assert b.ssh(["hostname"]).stdout.strip() == b.name
    assert a.state["disk"] != b.state["disk"]
    a.ssh(["sh", "-c", "echo a > /root/only-on-a && sync"])
    assert b.ssh(["test", "-e", "/root/only-on-a"], check=False).returncode == 1
    identity = ["cat", "/etc/machine-id", "/etc/ssh/ssh_host_ed25519_key.pub"]
    assert a.ssh(identity).stdout != b.ssh(identity).stdout


def test_guest_is_a_managed_host(pair):
    """systemd as PID 1 with no failed unit, cgroup v2, and the BPF tool chain."""
    guest = pair[0]
    assert guest.ssh(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    assert guest.ssh(["systemctl", "--failed", "--no-legend"]).stdout.strip() == ""
    assert guest.ssh(["stat", "-fc", "%T", "/sys/fs/cgroup"]).stdout.strip() == "cgroup2fs"
    for tool in ("python3", "bpftool", "clang"):
        guest.ssh(["which", tool])
    guest.ssh(["test", "-f", "/usr/include/bpf/bpf_helpers.h"])


def test_stock_guest_boots_the_image_kernel(pair):
    assert_runs_kernel(pair[1], os.path.join(pair[1].state["image"], "vmlinuz"))


def test_inventory_answers_ansible_ping(pair, tmp_path):
    inventory = vmctl("inventory").stdout
    for guest in pair:
        assert guest.inventory_line in inventory.splitlines()
    path = tmp_path / "inventory.ini"
    path.write_text(inventory)
    # Only our two: other sessions' guests may be in the inventory, rebooting.
    done = subprocess.run(
        [venv_tool("ansible"), "all", "-i", str(path), "-m", "ping",
         "--limit", ",".join(guest.name for guest in pair)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=ansible_env(), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for guest in pair:
        assert '%s | SUCCESS' % guest.name in done.stdout
    assert done.stdout.count('"ping": "pong"') == 2


def test_playbook_changes_the_guest_through_its_inventory(pair, tmp_path):
    guest = pair[0]
    playbook = tmp_path / "write.yml"
    playbook.write_text(
        "- hosts: all\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - ansible.builtin.copy:\n"
        "        content: '{{ word }}'\n"
        "        dest: /root/from-ansible\n"
        "        mode: '0600'\n")
    run_playbook(playbook, guest.inventory(tmp_path), extra_vars={"word": "written"})
    assert guest.ssh(["cat", "/root/from-ansible"]).stdout == "written"


def test_put_and_get_copy_files_both_ways(pair, tmp_path):
    guest = pair[0]
    sent = tmp_path / "sent"
    sent.mkdir()
    (sent / "data").write_bytes(os.urandom(4096))
    guest.put(sent, "/root/received")
    guest.get("/root/received/data", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == (sent / "data").read_bytes()


def test_start_refuses_a_taken_name(pair):
    a = pair[0]
    done = vmctl("start", a.name, "--kernel", "stock", check=False)
    assert done.returncode != 0
    assert "already exists" in done.stderr
    assert a.ssh(["true"]).returncode == 0  # and the running guest is untouched


def test_start_without_image_is_a_clear_error(tmp_path):
    env = dict(os.environ, EBPF_OOM_CACHE=str(tmp_path))
    done = vmctl("start", PREFIX + "noimage", "--kernel", "stock", check=False, env=env)
    assert done.returncode != 0
    assert "guest image missing: run molecule/vm/build-image" in done.stderr
    assert not (tmp_path / "vm" / (PREFIX + "noimage")).exists()


def test_start_without_built_hook_kernel_is_a_clear_error(tmp_path):
    """A cache with the image but no kernel: vmctl says so and builds nothing."""
    (tmp_path / "image").mkdir()
    os.symlink(vmlib.image_dir(), str(tmp_path / "image" / vmlib.image_key()))
    env = dict(os.environ, EBPF_OOM_CACHE=str(tmp_path))
    env.pop("EBPF_OOM_HOOK_KERNEL", None)
    done = vmctl("start", PREFIX + "nokernel", "--kernel", "hook", check=False, env=env)
    assert done.returncode != 0
    assert "hook kernel not built: run molecule/kernel/build" in done.stderr
    assert not (tmp_path / "kernel" / "out").exists() or not os.listdir(
        str(tmp_path / "kernel" / "out"))


def test_reboot_is_a_real_reboot(pair):
    a = pair[0]
    a.ssh(["sh", "-c", "echo kept > /root/survives-reboot && sync"])
    before = a.boot_id()
    a.reboot()
    assert a.boot_id() != before
    assert a.ssh(["cat", "/root/survives-reboot"]).stdout == "kept\n"
    assert a.ssh(["hostname"]).stdout.strip() == a.name
    assert a.state["port"] == a.port


def test_stop_destroys_the_guest(pair):
    b = pair[1]
    pid, gdir = b.state["pid"], vmlib.guest_dir(b.name)
    vmctl("stop", b.name)
    assert not os.path.exists(gdir)
    assert not qemu_running(pid)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", b.port), timeout=5).close()
    assert b.name not in vmctl("list").stdout.split()
    assert vmctl("stop", b.name, check=False).returncode != 0


def test_hook_guest_boots_the_built_kernel(hook_vm):
    assert_runs_kernel(hook_vm, hook_vm.state["kernel_image"])
