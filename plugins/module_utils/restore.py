# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The boot restore: apply every policy kept in the state dir again.

Layer 6 (what the host does by itself): imports the backends, the loader, state, maps
and the leaf helpers.  Run by `ebpf-oom restore` (cli.py) from ebpf-oom-restore.service,
early at boot: a declarative policy's cgroup rules need no cgroup to exist yet, its
programs follow the cgroups systemd makes afterwards.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from . import backends, loader, state
from .errors import EngineError, LoaderError
from .maps import record_entries
from .names import check_name


def restore_one(name):
    """Re-apply the kept policy ``name``; raises whatever stops it."""
    check_name(name, LoaderError)
    obj_path, record = state.load(name)
    document = record.get("document")
    if document is None:
        loader.apply(name, obj_path, globals=record.get("globals"),
                     maps=record_entries(record.get("maps") or {}), persist=True)
    else:
        backends.for_record(record).apply(name, obj_path, document, persist=True)


def restore_all():
    """Re-apply every policy kept in STATE_DIR -> (ok_names, {name: reason}); an
    object.o whose sha256 is not the record's is refused.

    One policy's failure, whatever it is (a malformed record raises anything from a
    KeyError to a TypeError), is reported under its name and the others are restored:
    a bad record must not cost the host its other policies."""
    ok, failed = [], {}
    for name in state.saved_names():
        try:
            restore_one(name)
            ok.append(name)
        except Exception as exc:  # pylint: disable=broad-except
            failed[name] = str(exc) if isinstance(exc, EngineError) \
                else "%s: %s" % (type(exc).__name__, exc)
    return ok, failed
