# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""OOM kill events of this host: the kernel log's and the observer's, one event per kill.

Layer 5 (callers): imports the observer, the kernel-log parser, the score_adj ledger, the
shadow verdicts and the leaf helpers.

`collect()` reads both sources, merges the records of one kill, names memory
cgroups by path, pairs each kill with the verdicts of the policies that judged its
OOM in shadow mode (shadow.py) and filters by time and policy; ebpf.oom.events_info
returns it, metrics.py counts it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re
import time

from . import cgroups, kmsg, observer, scoreadj, shadow
from .errors import BpfError
from .observer import MATCH_WINDOW_S

UTC = datetime.timezone.utc
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def merge(kmsg_events, observer_events):
    """One event per kill: an observer victim and a kmsg kill of the same pid close in time
    become one event (the kernel log's fields first, the observer's where it has none)."""
    merged = [dict(e) for e in kmsg_events]
    for ov in observer_events:
        best = None
        for ev in merged:
            if ev["pid"] != ov["pid"] or "observer" in ev["sources"]:
                continue
            gap = abs(ev["monotonic"] - ov["monotonic"])
            if gap <= MATCH_WINDOW_S and (best is None or gap < best[0]):
                best = (gap, ev)
        if best is None:
            merged.append(dict(ov))
            continue
        ev = best[1]
        for key, value in ov.items():
            if ev.get(key) is None and value is not None:
                ev[key] = value
        ev["monotonic"] = ov["monotonic"]
        ev["sources"] = ["kmsg", "observer"]
    merged.sort(key=lambda e: e["monotonic"])
    return merged


def set_wall_time(events, now=None, mono_now=None):
    """Set `timestamp` (Unix seconds) and `time` (ISO 8601 UTC) from each event's CLOCK_MONOTONIC time."""
    now = time.time() if now is None else now
    mono_now = time.clock_gettime(time.CLOCK_MONOTONIC) if mono_now is None else mono_now
    for ev in events:
        ts = now - (mono_now - ev["monotonic"])
        ev["timestamp"] = round(ts, 6)
        ev["time"] = datetime.datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return events


def parse_since(value, now=None):
    """Unix seconds from `since`: a duration ago ("90s", "15m", "2h", "7d"), Unix seconds,
    or an ISO 8601 time (UTC unless it says otherwise). ValueError with the accepted forms."""
    now = time.time() if now is None else now
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    m = _DURATION_RE.match(text)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise ValueError("since=%r: use a duration (90s, 15m, 2h, 7d), Unix seconds or an ISO 8601 "
                         "time such as 2026-01-31T12:00:00Z" % (value,))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def filter_events(events, since=None, policies=None):
    """Events at or after `since` (Unix seconds) whose policy is one of `policies`."""
    out = []
    for ev in events:
        if since is not None and ev["timestamp"] < since:
            continue
        if policies and ev["policy"] not in policies:
            continue
        out.append(ev)
    return out


def attribute(events, ledger=None):
    """A kill the kernel reports without a policy (a stock kernel: no hook) is the score_adj
    policy's whose agent wrote the victim's oom_score_adj to that very process (its
    ledger says so): `policy` is set to it."""
    pending = [ev for ev in events if ev["policy"] is None and ev.get("oom_score_adj") is not None]
    if pending and ledger is None:
        try:
            ledger = scoreadj.Ledger.read()
        except (OSError, scoreadj.LedgerError):  # not root, or no ledger to trust
            return events
    for ev in pending:
        ev["policy"] = ledger.written_by_agent(ev["pid"], ev["oom_score_adj"], at=ev.get("timestamp"))
    return events


def collect(since=None, policies=None, sources=("kmsg", "observer"), kmsg_path=kmsg.KMSG, bpffs_root=None):
    """What events_info returns: dict(events, observer, warnings); see that module's RETURN."""
    since = parse_since(since) if since is not None else None
    warnings = []
    kmsg_events, seen = [], {"loaded": False, "kills": None, "events": []}
    if "kmsg" in sources:
        try:
            kmsg_events = kmsg.parse_oom_reports(kmsg.read_kmsg(kmsg_path))
        except OSError as e:
            warnings.append("cannot read the kernel log %s: %s" % (kmsg_path, e.strerror or e))
    if "observer" in sources:
        try:
            seen = observer.read_observer(bpffs_root)
        except (OSError, BpfError) as e:
            warnings.append("cannot read the observer's maps: %s" % e)
        if not seen["loaded"] and "kmsg" not in sources:
            warnings.append("the OOM observer is not loaded (no pins under %s)"
                            % observer.observer_layout(bpffs_root).dir)
    judged = []
    try:
        judged = shadow.read(bpffs_root)
    except (OSError, BpfError) as e:
        warnings.append("cannot read the shadow verdicts: %s" % e)
    events = merge(kmsg_events, seen["events"])
    shadow.pair(events, judged)
    missing = [e["memcg_id"] for e in events if e["memcg"] is None and e["memcg_id"]]
    if missing:
        paths = cgroups.memcg_paths(missing)
        for ev in events:
            if ev["memcg"] is None and ev["memcg_id"] in paths:
                ev["memcg"] = paths[ev["memcg_id"]]
    set_wall_time(events)
    attribute(events)
    all_events = events
    events = filter_events(events, since=since, policies=policies)
    return {"events": events, "all_events": all_events, "warnings": warnings,
            "observer": {"loaded": seen["loaded"], "kills": seen["kills"]},
            "shadow_policies": shadow.summary(judged)}
