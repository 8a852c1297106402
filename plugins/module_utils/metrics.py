# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""OOM kill metrics for node_exporter's textfile collector, counted so that they only grow.

Layer 5 (callers): imports the layout (for the state dir), the observer (what pairs
two records of one kill) and the leaf helpers.  Fed with events.collect()'s result
by ebpf.oom.events_info and by `ebpf-oom events --metrics-file` (cli.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from . import bpffs
from .files import read_text, write_atomic
from .observer import MATCH_WINDOW_S

METRIC_PREFIX = "ebpf_oom_"
UNKNOWN = "unknown"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
# In the state dir: what the metrics writer counted, so that its counters only grow
# while the kernel log scrolls away and the observer's ring wraps.
METRICS_STATE = "metrics-state.json"


def _label(value):
    text = UNKNOWN if value is None else str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def count_kills(events, state, boot_id):
    """The next counting state after seeing `events` (all known ones), from the last `state`.

    State: boot_id; totals and last ({json [policy, cgroup]: kills since boot / the latest
    kill's Unix time}); seen [[pid, monotonic]], the events still known. An event counts
    once, with the labels of its first sight: it stays "seen" while either source still
    has it (same pid, close in time), whether the kernel log, the observer or both report
    it. A new boot starts from zero."""
    fresh = not isinstance(state, dict) or state.get("boot_id") != boot_id
    totals = {} if fresh else dict(state.get("totals") or {})
    last = {} if fresh else dict(state.get("last") or {})
    old = [] if fresh else list(state.get("seen") or [])
    seen = []
    for ev in events:
        match = None
        for entry in old:
            if entry[0] == ev["pid"] and abs(entry[1] - ev["monotonic"]) <= MATCH_WINDOW_S:
                match = entry
                break
        if match is None:
            key = json.dumps([UNKNOWN if ev["policy"] is None else ev["policy"],
                              UNKNOWN if ev["memcg"] is None else ev["memcg"]])
            totals[key] = totals.get(key, 0) + 1
            if ev["timestamp"] is not None:
                last[key] = max(last.get(key, 0), ev["timestamp"])
            match = [ev["pid"], ev["monotonic"]]
        else:
            old.remove(match)
        seen.append(match)
    return {"boot_id": boot_id, "totals": totals, "last": last, "seen": seen}


def metrics_text(state, observer):
    """The metrics file's text: `state` from count_kills(), `observer` as collect() returns it."""
    def labelled(table, fmt):
        rows = sorted((tuple(_label(v) for v in json.loads(k)), value) for k, value in table.items())
        return [('{policy="%s",cgroup="%s"}' % key, fmt % value) for key, value in rows]

    out = []

    def family(name, kind, help_text, samples):
        out.append("# HELP %s%s %s" % (METRIC_PREFIX, name, help_text))
        out.append("# TYPE %s%s %s" % (METRIC_PREFIX, name, kind))
        for labels, value in samples:
            out.append("%s%s%s %s" % (METRIC_PREFIX, name, labels, value))

    family("kills_total", "counter", "OOM kills since boot by policy and memory cgroup "
           "(as first seen in the kernel log or by the observer).", labelled(state["totals"], "%d"))
    family("last_kill_timestamp_seconds", "gauge",
           "Time of the latest OOM kill by policy and memory cgroup.", labelled(state.get("last", {}), "%.3f"))
    family("observer_loaded", "gauge", "1 when the OOM observer is loaded.",
           [("", "1" if observer.get("loaded") else "0")])
    if observer.get("loaded"):
        family("observer_kills_total", "counter",
               "Every OOM victim the kernel marked since the observer was loaded.",
               [("", "%d" % (observer.get("kills") or 0))])
    return "\n".join(out) + "\n"


def write_metrics(path, text, check_mode=False, force=False):
    """Replace `path` with `text` atomically (0644); returns (changed, old text or None).

    Unchanged text is left alone unless `force` (the timer forces, so the file's
    mtime shows the collector is alive)."""
    before = read_text(path)
    changed = before != text
    if not check_mode and (changed or force):
        write_atomic(path, text, 0o644)
    return changed, before


def update_metrics(path, found, check_mode=False, force=False, state_dir=None):
    """Count the kills of collect()'s result `found` and write the metrics file `path`.

    The counting state lives in the state dir (bpffs.roots()'s, 0600); neither it nor the
    file is written in check mode. Returns (changed, old text or None, new text)."""
    state_path = os.path.join(state_dir or bpffs.roots()[1], METRICS_STATE)
    try:
        state = json.loads(read_text(state_path) or "null")
    except ValueError:
        state = None
    boot_id = (read_text(BOOT_ID) or "").strip()
    state = count_kills(found["all_events"], state, boot_id)
    text = metrics_text(state, found["observer"])
    changed, before = write_metrics(path, text, check_mode=check_mode, force=force)
    if not check_mode:
        if not os.path.isdir(os.path.dirname(state_path)):
            os.makedirs(os.path.dirname(state_path), 0o755)
        write_atomic(state_path, json.dumps(state, sort_keys=True), 0o600)
    return changed, before, text
