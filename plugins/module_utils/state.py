# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What survives a reboot: each persisted policy's object and record in the state dir.

Layer 3 (what is kept): imports the layout and the leaf helpers.

    STATE_DIR/policies/<name>/object.o      the object, as loaded
    STATE_DIR/policies/<name>/record.json   its record (with the document, if any)

Both files 0600 root; the boot service (restore.restore_all) loads them again.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from . import bpffs
from .errors import LoaderError
from .files import read_file, read_text, sha256_file, write_atomic

STATE_FILE_MODE = 0o600


def _policies_dir():
    return os.path.join(bpffs.roots()[1], "policies")


def paths(name):
    """(directory, object path, record path) of a policy's copy."""
    base = os.path.join(_policies_dir(), name)
    return base, os.path.join(base, "object.o"), os.path.join(base, "record.json")


def saved_names():
    """The names of the persisted policies, sorted."""
    base = _policies_dir()
    return sorted(os.listdir(base)) if os.path.isdir(base) else []


def saved(name):
    """True when a copy of the policy is kept."""
    return os.path.lexists(paths(name)[0])


def _strays(base):
    """Files of a policy's copy other than its two (a temporary file of a write that was
    killed)."""
    try:
        names = os.listdir(base)
    except OSError:
        return []
    return [os.path.join(base, n) for n in sorted(names) if n not in ("object.o", "record.json")
            and not os.path.isdir(os.path.join(base, n))]


def persist(name, data, record, check_mode):
    """Keep object.o + record.json (and nothing else) for the boot restore; True when
    something changed."""
    base, obj_path, rec_path = paths(name)
    rec = json.dumps(record, sort_keys=True, indent=1).encode("ascii") + b"\n"
    strays = _strays(base)
    if read_file(obj_path) == data and read_file(rec_path) == rec and not strays:
        return False
    if not check_mode:
        for path in (os.path.dirname(os.path.dirname(base)), os.path.dirname(base), base):
            bpffs.make_dir(path)
        write_atomic(obj_path, data, STATE_FILE_MODE)
        write_atomic(rec_path, rec, STATE_FILE_MODE)
        for path in strays:
            os.unlink(path)
    return True


def unpersist(name, check_mode):
    """Remove the policy's copy; True when there was one."""
    base = paths(name)[0]
    if not os.path.lexists(base):
        return False
    if not check_mode:
        for entry in os.listdir(base):
            os.unlink(os.path.join(base, entry))
        os.rmdir(base)
    return True


def store(name, data, record, keep, check_mode):
    """Keep (``keep``) or drop the policy's copy; True when something changed."""
    if keep:
        return persist(name, data, record, check_mode)
    return unpersist(name, check_mode)


def load(name):
    """(object path, record) of a kept policy; LoaderError when either is missing, the
    record is no JSON object or the object is not the one the record names."""
    _base, obj_path, rec_path = paths(name)
    data = read_file(rec_path)
    if data is None:
        raise LoaderError("%s is missing" % rec_path)
    try:
        record = json.loads(data.decode("ascii"))
    except ValueError as exc:
        raise LoaderError("%s is not a JSON record: %s" % (rec_path, exc))
    if not isinstance(record, dict):
        raise LoaderError("%s holds %s, not a record (a JSON object)"
                          % (rec_path, type(record).__name__))
    try:
        sha = sha256_file(obj_path)
    except OSError:
        sha = None
    if sha != record.get("object_sha256"):
        raise LoaderError("%s does not match the recorded object sha256 %s"
                          % (obj_path, record.get("object_sha256")))
    return obj_path, record


OFF_MARKER = "off"  # in the state dir: the host is switched off (restore.py's off switch)


def off_path():
    """The marker that switches the host off."""
    return os.path.join(bpffs.roots()[1], OFF_MARKER)


def switched_off():
    """The marker's text (when the host was switched off, and by whom) while it is off, else None."""
    if not os.path.lexists(off_path()):
        return None
    return (read_text(off_path()) or "").strip() or "switched off"
