# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deploying the collection's own BPF programs through the loader: the OOM observer.

Layer 5 (above the loader): imports the loader, what is pinned, the observer's names and
the leaf helpers.  Used by ebpf.oom.observer (the role ebpf.oom.bpf_oom deploys it).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from . import loader, pins
from .errors import LoaderError
from .files import sha256_file
from .observer import OBSERVER_NAME, observer_layout


def running_sha256():
    """The sha256 of the observer's object as its record names it, or None."""
    return (pins.read_record(observer_layout()) or {}).get("object_sha256")


def apply_observer(objects, check_mode=False, persist=True):
    """Deploy the observer from the first of `objects` the kernel accepts.

    `objects` are builds of bpf/observer.bpf.c in OBSERVER_VARIANTS order (tp_btf, then the
    raw_tp fallback); the build that runs now is tried first, so that a rerun changes
    nothing and does not try a build this kernel refused.  With `persist` the boot
    restore loads it again.  Returns loader.apply()'s result plus `object`; raises
    LoaderError naming every build's failure when none loads.  Check mode assumes the
    first build tried would load."""
    running = running_sha256()
    ordered = sorted(objects, key=lambda path: sha256_file(path) != running)
    failures = []
    for path in ordered:
        try:
            result = loader.apply(OBSERVER_NAME, path, check_mode=check_mode, persist=persist)
        except LoaderError as e:
            failures.append((path, e))
            continue
        result["object"] = path
        return result
    raise LoaderError("no build of the OOM observer loads: " +
                      "; ".join("%s: %s" % (p, e.message) for p, e in failures),
                      failures[-1][1].log_tail if failures else "")


def remove_observer(check_mode=False):
    """Unload the observer and drop its copy for the boot restore: loader.remove()'s result."""
    return loader.remove(OBSERVER_NAME, check_mode=check_mode)
