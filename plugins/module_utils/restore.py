# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The boot restore: apply every policy kept in the state dir again; and the off switch.

Layer 6 (what the host does by itself): imports the backends, state, pins,
the layout, the observer's name and the leaf helpers.  Run by `ebpf-oom restore`
(cli.py) from ebpf-oom-restore.service, early at boot: a declarative policy's cgroup
rules need no cgroup to exist yet, its programs follow the cgroups systemd makes
afterwards.

The off switch (`ebpf-oom off` / `ebpf-oom on`): switch_off() writes the marker
STATE_DIR/off (root, 0644), then detaches every loaded policy and keeps each one's
copy in the state dir; while the marker is there restore_all() restores no policy
(held() names them), only the OOM observer, which decides nothing.  switch_on()
removes the marker and restores them all.  The marker is trusted as the state dir
is (root's, 0700).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os

from . import backends, bpffs, pins, state
from .state import off_path, switched_off  # noqa: F401  (the off switch's marker: restore.switched_off)
from .errors import EngineError, LoaderError
from .files import read_file, write_atomic
from .names import check_name
from .observer import OBSERVER_NAME


class Superseded(LoaderError):
    """The kept copy changed or went while it was being restored: that change stands."""


def restore_one(name):
    """Re-apply the kept policy ``name``; raises whatever stops it (Superseded: an apply
    or a removal of the policy came first, and is kept)."""
    check_name(name, LoaderError)
    obj_path, record = state.load(name)

    def still_kept():  # with the bpffs lock held, under which applies write the copy
        try:
            now = state.load(name)[1]
        except LoaderError:
            now = None
        if now != record:
            raise Superseded("policy %s: its kept copy changed while it was being restored; "
                             "the change stands" % name)

    try:
        backends.apply_record(name, obj_path, record, persist=True, guard=still_kept)
    except Superseded:
        raise
    except LoaderError:
        still_kept()  # a failure because the copy changed or went (before the lock): Superseded
        raise


def restore_all():
    """Re-apply every policy kept in STATE_DIR -> (ok_names, {name: reason}); an
    object.o whose sha256 is not the record's is refused.

    One policy's failure, whatever it is (a malformed record raises anything from a
    KeyError to a TypeError), is reported under its name and the others are restored:
    a bad record must not cost the host its other policies.  While the host is switched
    off, policies are not restored (held() names them): only the OOM observer.  A policy
    applied or removed while it was being restored keeps what that did (Superseded):
    the kept copy is read again with the lock held that every apply takes."""
    ok, failed = [], {}
    held_back = held()
    for name in state.saved_names():
        if name in held_back:
            continue
        try:
            restore_one(name)
            ok.append(name)
        except Superseded:
            ok.append(name)  # applied or removed meanwhile, by what the operator ran
        except Exception as exc:  # pylint: disable=broad-except
            failed[name] = _error_text(exc)
    return ok, failed


def _error_text(exc):
    return str(exc) if isinstance(exc, EngineError) else "%s: %s" % (type(exc).__name__, exc)


def held():
    """The recorded policies the boot restore does not restore because the host is off."""
    if switched_off() is None:
        return []
    return [name for name in state.saved_names() if name != OBSERVER_NAME]


def switch_off(by=None):
    """Switch the host off (``by``: who, said in the marker): the marker first (so the boot restore holds the policies back
    from now on), then every loaded policy but the observer detached, each with the
    backend that applied it (a score_adj policy's values are put back), and its copy in
    the state dir kept.  -> (marked: whether the marker is new, detached names,
    names detached that have no copy to restore, {name: reason} for the ones that
    could not be detached)."""
    marked = switched_off() is None
    if marked:
        bpffs.make_dir(bpffs.roots()[1])
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        write_atomic(off_path(), "switched off at %s%s\n" % (stamp, " by " + by if by else ""), 0o644)
    detached, unrecorded, failed = [], [], {}
    for name in pins.policy_names(bpffs.mounted_root()):
        if name == OBSERVER_NAME:
            continue
        copy = [(path, read_file(path)) for path in state.paths(name)[1:]]
        try:
            backends.remove(name)
        except Exception as exc:  # pylint: disable=broad-except
            failed[name] = _error_text(exc)
            continue
        detached.append(name)
        if None in [data for _path, data in copy]:
            unrecorded.append(name)
            continue
        bpffs.make_dir(state.paths(name)[0])  # the remove dropped the copy: put it back
        for path, data in copy:
            write_atomic(path, data, state.STATE_FILE_MODE)
    return marked, detached, unrecorded, failed


def switch_on():
    """Remove the marker, then restore every recorded policy: (was it off, restore_all())."""
    was_off = os.path.lexists(off_path())
    if was_off:
        os.unlink(off_path())
    return was_off, restore_all()
