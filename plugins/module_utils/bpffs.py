# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bpffs layout: where a policy's pins and its record live.

Layer 2 (layout): imports the kernel binding and the leaf helpers.

    BPFFS_ROOT/                  0700 root (mounted bpffs; mounted when missing)
      <policy>/                  0700 root
        link_<program>           pinned link of each program (keeps it attached)
        map_<map>                pinned map of each of the object's own maps
        record                   pinned 1-entry array map holding the JSON record
        staging/                 only during a replace: the new pins, renamed over

bpffs cannot hold regular files (hence the record map) and refuses names with a
dot (so policy names are [A-Za-z0-9_-]).  Roots default to common.py's paths;
EBPF_OOM_BPFFS_ROOT and EBPF_OOM_STATE_DIR override them (tests, staging hosts).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import stat

from . import libbpf
from .common import BPFFS_MOUNT, BPFFS_ROOT, STATE_DIR
from .errors import BpffsError

BPF_FS_MAGIC = 0xCAFE4A11
DIR_MODE = 0o700
RECORD = "record"
STAGING = "staging"
LINK_PREFIX = "link_"
MAP_PREFIX = "map_"
RECORD_MAP_NAME = "ebpf_oom_record"
RECORD_ALIGN = 256


def roots():
    """(bpffs_root, state_dir), from the environment or common.py."""
    return (os.environ.get("EBPF_OOM_BPFFS_ROOT") or BPFFS_ROOT,
            os.environ.get("EBPF_OOM_STATE_DIR") or STATE_DIR)


def mount_point(root):
    """Where the bpffs holding ``root`` is mounted (its parent directory)."""
    return BPFFS_MOUNT if root == BPFFS_ROOT else os.path.dirname(root.rstrip("/"))


class _Statfs(ctypes.Structure):
    # Only f_type is read; the rest of struct statfs is room for the kernel to fill.
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 256)]


def is_bpffs(path):
    """True when ``path`` is on a bpf filesystem."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = _Statfs()
    if libc.statfs(path.encode(), ctypes.byref(buf)) != 0:
        return False
    return (buf.f_type & 0xFFFFFFFF) == BPF_FS_MAGIC


def mounted_root():
    """The bpffs root when bpffs is mounted where it belongs, else None (nothing there)."""
    root = roots()[0]
    return root if is_bpffs(mount_point(root)) else None


def mount_problem(where):
    """Why bpffs must not be mounted at ``where`` (None: it may). It belongs at
    BPFFS_MOUNT; anywhere else (tests, staging hosts) only on an empty directory, owned
    by root, inside a private directory (owned by root, no access for group or others),
    so that the mount hides nothing anyone else uses: EBPF_OOM_BPFFS_ROOT=/srv/x must
    not put a bpffs over /srv."""
    if where == BPFFS_MOUNT:
        return None
    if not os.path.isabs(where):
        return "%s is not an absolute path" % where
    try:
        parent = os.stat(os.path.dirname(where))
        fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        return exc.strerror
    try:
        if parent.st_uid != 0 or parent.st_mode & 0o077:
            return ("bpffs belongs at %s, and elsewhere it is mounted only inside a private "
                    "directory (owned by root, mode 0700); %s is not one"
                    % (BPFFS_MOUNT, os.path.dirname(where)))
        if os.fstat(fd).st_uid != 0 or os.listdir(fd):
            return "%s is not an empty directory owned by root: a mount would hide it" % where
    finally:
        os.close(fd)
    return None


def ensure_mounted(root):
    """Mount bpffs at ``root``'s mount point when it is not there (see mount_problem);
    returns the mount point."""
    where = mount_point(root)
    if is_bpffs(where):
        return where
    problem = mount_problem(where)
    if problem:
        raise BpffsError(
            "bpffs is not mounted at %s and mounting it failed: %s; mount bpffs there yourself "
            "(`mount -t bpf bpf %s`) or choose a root under %s" % (where, problem, where, BPFFS_MOUNT))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", where.encode(), b"bpf", 0, b"mode=0700") != 0:
        err = ctypes.get_errno()
        raise BpffsError(
            "bpffs is not mounted at %s and mounting it failed: %s; a kernel with "
            "CONFIG_BPF_SYSCALL and root (CAP_SYS_ADMIN) are needed, e.g. "
            "`mount -t bpf bpf %s`" % (where, os.strerror(err), where))
    return where


def make_dir(path, mode=DIR_MODE):
    """Create ``path`` (and parents) with ``mode``, root owned; fix a wrong mode (through
    a descriptor of the directory itself: a symbolic link is refused, never followed)."""
    try:
        os.makedirs(path, mode)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise BpffsError("%s exists and is not a directory" % path)
        raise
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def remove_tree(path):
    """Unlink every pin under ``path`` (links before maps, the record last) and the dirs."""
    if not os.path.lexists(path):
        return False
    names = sorted(os.listdir(path), key=_unpin_order)
    for name in names:
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            remove_tree(full)
        else:
            os.unlink(full)
    os.rmdir(path)
    return True


def _unpin_order(name):
    if name.startswith(LINK_PREFIX):
        return (0, name)
    return (2, name) if name == RECORD else (1, name)


@contextlib.contextmanager
def locked(path):
    """Hold an exclusive flock on directory ``path`` (one writer per root)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Layout:
    """Paths of one policy under a bpffs root."""

    def __init__(self, root, name):
        self.root = root
        self.name = name
        self.dir = os.path.join(root, name)
        self.staging = os.path.join(self.dir, STAGING)
        self.record = os.path.join(self.dir, RECORD)

    def link(self, program, staging=False):
        return os.path.join(self.staging if staging else self.dir, LINK_PREFIX + program)

    def map(self, name, staging=False):
        return os.path.join(self.staging if staging else self.dir, MAP_PREFIX + name)

    def exists(self):
        return os.path.isdir(self.dir)

    def entries(self):
        """Names in the policy directory."""
        return sorted(os.listdir(self.dir)) if self.exists() else []


def encode_record(record):
    """The record map's value: compact JSON, NUL padded to a multiple of RECORD_ALIGN."""
    data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode("ascii")
    size = (len(data) // RECORD_ALIGN + 1) * RECORD_ALIGN
    return data + b"\0" * (size - len(data))


def decode_record(value):
    return json.loads(value.split(b"\0", 1)[0].decode("ascii"))


def write_record(path, record):
    """Pin a new frozen 1-entry array map at ``path`` holding ``record`` as JSON."""
    value = encode_record(record)
    fd = libbpf.map_create(libbpf.BPF_MAP_TYPE_ARRAY, 4, len(value), 1, RECORD_MAP_NAME,
                           flags=libbpf.BPF_F_RDONLY_PROG)
    try:
        libbpf.map_update(fd, b"\0\0\0\0", value)
        libbpf.map_freeze(fd)
        libbpf.obj_pin(fd, path)
    finally:
        os.close(fd)


def read_record(path):
    """The record pinned at ``path``; None when there is no pin; BpffsError when unreadable."""
    if not os.path.lexists(path):
        return None
    try:
        with libbpf.pinned(path) as fd:
            info = libbpf.map_info(fd)
            value = libbpf.map_lookup(fd, b"\0\0\0\0", info["value_size"])
        return decode_record(value or b"")
    except (libbpf.BpfError, ValueError) as exc:
        raise BpffsError("the record %s cannot be read: %s" % (path, exc))
