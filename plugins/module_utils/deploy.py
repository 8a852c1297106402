# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deploying the collection's own BPF programs through the loader: the OOM observer.

Layer 5 (above the loader): imports the loader, the observer's names and the leaf helpers.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from . import loader
from .errors import LoaderError
from .observer import OBSERVER_NAME


def apply_observer(objects, check_mode=False, persist=True):
    """Deploy the observer from the first of `objects` the kernel accepts.

    `objects` are builds of bpf/observer.bpf.c in OBSERVER_VARIANTS order (tp_btf, then the
    raw_tp fallback). Returns loader.apply()'s result plus `object`; raises
    LoaderError naming every variant's failure when none loads."""
    failures = []
    for path in objects:
        try:
            result = loader.apply(OBSERVER_NAME, path, check_mode=check_mode, persist=persist)
        except LoaderError as e:
            failures.append((path, e))
            continue
        result["object"] = path
        return result
    raise LoaderError("no build of the OOM observer loads: " +
                      "; ".join("%s: %s" % (p, e) for p, e in failures),
                      failures[-1][1].log_tail if failures else "")
