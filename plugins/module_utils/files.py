# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Regular files: an atomic write, reads that do not follow a symbolic link, reads of
trusted files, and sha256.

Layer 0 (leaf helpers): imports nothing from the engine.

Trusted (what may be compiled or loaded into the kernel): a regular file owned by root,
or by the user running the engine (on a controller that is not root), that no one else
can write (no group or world write bit).  It is checked and read through one file
descriptor, so the bytes read are the bytes of the file checked.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile

READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def write_atomic(path, data, mode=0o644):
    """Replace ``path`` with ``data`` (bytes, or str as UTF-8), given ``mode``, all or nothing.

    The data goes to a temporary file in the same directory (a dot name ending in
    .tmp, which readers of *.prom or *.json skip), is synced, gets its mode, and is
    renamed over ``path``; on any failure the temporary file is removed.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def read_file(path):
    """The bytes of the regular file ``path``, or None when it cannot be read (missing, a
    directory, or a symbolic link: the last is never followed)."""
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            return f.read()
    except OSError:
        return None


def read_text(path):
    """``read_file`` as text (UTF-8), or None."""
    data = read_file(path)
    try:
        return data.decode("utf-8") if data is not None else None
    except UnicodeDecodeError:
        return None


def trust_problem(st, path):
    """Why the file ``path`` (its stat ``st``) is not trusted, or None when it is."""
    if not stat.S_ISREG(st.st_mode):
        return "%s is not a regular file" % path
    if st.st_uid not in (0, os.geteuid()):
        return ("%s is owned by uid %d: only a file owned by root (or by the user running this, "
                "uid %d) is trusted" % (path, st.st_uid, os.geteuid()))
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return ("%s is %s-writable (mode %04o): only a file no one else can write is trusted"
                % (path, "world" if st.st_mode & stat.S_IWOTH else "group", stat.S_IMODE(st.st_mode)))
    return None


def read_trusted(path, error=OSError, follow=True):
    """The bytes of ``path`` if it is trusted (see above), else ``error`` (an exception
    class) saying why; ``follow=False`` refuses a symbolic link."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)  # a FIFO does not block
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise error("%s: %s" % (path, exc.strerror))
    try:
        problem = trust_problem(os.fstat(fd), path)
        if not problem:
            try:
                return b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
            except OSError as exc:
                problem = "%s cannot be read: %s" % (path, exc.strerror)
    finally:
        os.close(fd)
    raise error(problem)


@contextlib.contextmanager
def sent_copy(path, sha256, error=OSError):
    """``path`` itself while ``sha256`` is None; else, for the time of the block, a copy of
    it made by this process (its user's, mode 0600, in a directory of its own) once its
    bytes are checked against ``sha256``: a file the controller sent is trusted by its
    content, whoever owns it (one copied by the connecting user stays that user's when
    the module runs with become).  ``error``: the exception class raised on a mismatch."""
    if sha256 is None or path is None:
        yield path
        return
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError as exc:
        raise error("%s: %s" % (path, exc.strerror))
    try:
        data = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
    finally:
        os.close(fd)
    found = hashlib.sha256(data).hexdigest()
    if found != sha256.lower():
        raise error("refusing to load %s: its sha256 is %s, not the %s of the file sent"
                    % (path, found, sha256.lower()))
    base = tempfile.mkdtemp(prefix="ebpf-oom-")
    try:
        copy = os.path.join(base, os.path.basename(path))
        write_atomic(copy, data, 0o600)
        yield copy
    finally:
        shutil.rmtree(base, ignore_errors=True)


def sha256_file(path):
    """The hex sha256 of the file ``path`` (OSError when it cannot be read)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
