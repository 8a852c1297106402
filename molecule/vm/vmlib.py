# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What build-image, vmctl and the VM test fixtures share (standard library only).

The image is identified by a hash of what goes into it (package list,
customization script, suite, layout version), so that a changed package list
gives a new image directory and an unchanged one is found again.
"""

import hashlib
import json
import os
import shlex
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CUSTOMIZE = os.path.join(HERE, "customize")
KERNEL_BUILD = os.path.join(REPO, "molecule", "kernel", "build")

SUITE = "bookworm"
# Bumped when build-image lays out the image differently for the same packages.
LAYOUT_VERSION = "1"
PACKAGES = (
    # PID 1, device manager, bus (hostnamectl, logind), the SSH door.
    "systemd-sysv", "udev", "dbus", "openssh-server",
    # Ansible copies files with sftp (also what OpenSSH 9's scp speaks).
    "openssh-sftp-server",
    # Ansible's interpreter; the engine runs on Debian's python3 alone.
    "python3",
    # On-host BPF: library, inspection, compiling policies.
    "libbpf1", "bpftool", "clang", "libbpf-dev",
    # ip, ps/pkill/free; fsck.ext4 for the root file system in fstab.
    "iproute2", "procps", "e2fsprogs",
    # The "stock" kernel and its initrd.
    "linux-image-amd64", "initramfs-tools", "zstd",
    # GRUB's userland as on a BIOS Debian host (update-grub, grub-reboot, grub-set-default,
    # grub-editenv, /etc/grub.d): a `vmctl start --boot disk` guest boots through its own
    # /boot/grub/grub.cfg and grubenv. Not grub-pc: its postinst wants to grub-install.
    "grub2-common",
    # Ansible's apt module needs it (to install a local .deb) and cannot install it itself:
    # the image carries no package lists.
    "python3-apt",
)

IMAGE_FILES = ("base.img", "vmlinuz", "initrd.img", "id_ed25519", "id_ed25519.pub")

SSH_OPTIONS = (
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "BatchMode=yes",
    "-o", "IdentitiesOnly=yes",
    "-o", "ConnectTimeout=10",
    # A guest that stops answering ends the session within two minutes.
    "-o", "ServerAliveInterval=15",
    "-o", "ServerAliveCountMax=8",
)
# What the inventory line hands to Ansible (it brings its own ControlPersist). A guest that
# reboots under an open connection never resets it (QEMU's user network keeps the host's
# side open), so a command sent on it would wait forever: the keepalive ends it within a
# minute, and Ansible's reboot module asks again on a new connection.
ANSIBLE_SSH_ARGS = ("-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
                    " -o ServerAliveInterval=10 -o ServerAliveCountMax=6")


def cache_dir():
    return os.environ.get("EBPF_OOM_CACHE", "/var/cache/ebpf-oom")


def image_key():
    """sha256 over everything that decides the image's content."""
    digest = hashlib.sha256()
    for part in (LAYOUT_VERSION, SUITE, "\n".join(PACKAGES)):
        digest.update(part.encode() + b"\0")
    with open(CUSTOMIZE, "rb") as handle:
        digest.update(handle.read())
    return digest.hexdigest()


def image_dir():
    """Where the image for this checkout lives (whether built or not)."""
    return os.path.join(cache_dir(), "image", image_key())


def image_ready(path):
    return all(os.path.isfile(os.path.join(path, name)) for name in IMAGE_FILES)


def vm_root():
    return os.path.join(cache_dir(), "vm")


def guest_dir(name):
    return os.path.join(vm_root(), name)


def state_path(name):
    return os.path.join(guest_dir(name), "state.json")


def load_state(name):
    """The guest's recorded state (vmctl writes it), or None if there is no such guest."""
    try:
        with open(state_path(name)) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def control_path(name):
    """The ssh ControlPath for a guest (unix socket paths are short: ~100 bytes)."""
    path = os.path.join(guest_dir(name), "ssh.ctl")
    if len(path) <= 80:
        return path
    short = os.path.join(tempfile.gettempdir(), "ebpf-oom-ssh-%d" % os.getuid())
    os.makedirs(short, mode=0o700, exist_ok=True)
    return os.path.join(short, hashlib.sha256(path.encode()).hexdigest()[:16])


def ssh_options(port, key, control=None):
    """ssh/scp options for a guest's forwarded port; multiplexed when control is a path."""
    argv = ["-o", "Port=%d" % port, "-i", key] + list(SSH_OPTIONS)
    if control:
        argv += ["-o", "ControlMaster=auto", "-o", "ControlPersist=60",
                 "-o", "ControlPath=" + control]
    return argv


def ssh_argv(port, key, control=None):
    """ssh to a guest up to the destination; append the remote command's words."""
    return ["ssh"] + ssh_options(port, key, control) + ["--", "root@127.0.0.1"]


def inventory_line(name, port, key):
    fields = [
        name,
        "ansible_host=127.0.0.1",
        "ansible_port=%d" % port,
        "ansible_user=root",
        "ansible_ssh_private_key_file=" + key,
        "ansible_python_interpreter=/usr/bin/python3",
        "ansible_ssh_common_args=" + shlex.quote(ANSIBLE_SSH_ARGS),
    ]
    return " ".join(fields)
