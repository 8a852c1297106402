# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""OOM kill events: the kernel log, the observer's maps, and metrics.

Two sources tell what the OOM killer did on a host:

* the kernel log (/dev/kmsg): the OOM report, including the hook kernel's
  `policy_name=`, the `oom-kill:constraint=...` summary and the
  `...: Killed process PID (comm) total-vm:...` line. It scrolls away;
* the observer (bpf/observer.bpf.c, deployed by the loader as `observer`):
  counts every oom/mark_victim and keeps the last OBSERVER_VICTIMS victims in
  pinned maps, for as long as it is loaded.

`collect()` reads both and merges the records of one kill; `metrics_text()`
renders node_exporter textfile-collector metrics; `write_metrics()` replaces
the file atomically; `apply_observer()` deploys the observer through the
loader. `main(argv)` is the command line behind `ebpf-oom events
[--metrics-file PATH]`, which the role's metrics timer runs.

Standard library only: this file also runs outside Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import ctypes
import datetime
import errno
import json
import os
import re
import sys
import tempfile
import time

from . import bpffs, libbpf, loader

OBSERVER_NAME = "observer"
OBSERVER_SOURCE = "observer.bpf.c"
# Builds the raw_tp fallback program from the same source.
OBSERVER_RAW_TP_DEFINE = "OBSERVER_RAW_TP"
# Builds of bpf/observer.bpf.c (compiler defines), in the order to try them.
OBSERVER_VARIANTS = (("tp_btf", {}), ("raw_tp", {OBSERVER_RAW_TP_DEFINE: None}))
OBSERVER_VICTIMS_MAP = "victims"
OBSERVER_STATS_MAP = "stats"

# ---- bpf/observer.h, mirrored field by field (tests/unit checks they agree) ----
OBSERVER_VICTIMS = 64
OBSERVER_COMM_LEN = 16
OBSERVER_F_TASK = 1
OBSERVER_F_RAW_TP = 2


class ObserverVictim(ctypes.Structure):
    _fields_ = [
        ("seq", ctypes.c_uint64),
        ("mono_ns", ctypes.c_uint64),
        ("memcg_id", ctypes.c_uint64),
        ("anon_rss", ctypes.c_uint64),
        ("file_rss", ctypes.c_uint64),
        ("shmem_rss", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("tgid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("oom_score_adj", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
        ("comm", ctypes.c_char * OBSERVER_COMM_LEN),
        ("pad", ctypes.c_uint32),
    ]


class ObserverStats(ctypes.Structure):
    _fields_ = [("kills", ctypes.c_uint64)]


# ---- the kernel log ----

KMSG = "/dev/kmsg"
KMSG_READ_SIZE = 16384  # larger than any record (the kernel refuses smaller reads with EINVAL)
LOG_KERN = 0  # syslog facility of kernel messages; user space writes others
# Records of one kill are this close in time (the observer fires just before the
# kernel prints "Killed process"); used to pair them.
MATCH_WINDOW_S = 5.0
# An OOM report's records are stored within this time (even when a slow serial console
# holds up printk); a report older than this lends nothing to a later kill.
REPORT_SPAN_S = 60.0

CONSTRAINTS = {
    "CONSTRAINT_NONE": "global",
    "CONSTRAINT_CPUSET": "cpuset",
    "CONSTRAINT_MEMORY_POLICY": "mempolicy",
    "CONSTRAINT_MEMCG": "memcg",
}

_INVOKED_RE = re.compile(r"^(?P<invoker>.*) invoked oom-killer: ")
_POLICY_RE = re.compile(r"(?:^|[\s,])policy_name=(?P<policy>\S+)")
_KILLED_RE = re.compile(r"^(?P<message>[^:]*): Killed process (?P<pid>\d+) \((?P<rest>.*)$")
_KILLED_FIELD_RE = re.compile(r"([A-Za-z][A-Za-z_-]*):(-?\d+)(kB)?")
_SUMMARY_KEYS = ("constraint", "nodemask", "cpuset", "mems_allowed", "oom_memcg", "global_oom",
                 "task_memcg", "task", "pid", "uid")
_VICTIM_KEYS = ("task_memcg", "task", "pid", "uid")
_SUMMARY_TAIL_RE = re.compile(r",task=(?P<task>.*),pid=(?P<pid>\d+),uid=(?P<uid>\d+)\s*$")
_OOM_GROUP_RE = re.compile(r"are going to be killed due to memory\.oom\.group set")
# The report ends without a kill.
_NO_KILL_RE = re.compile(r"^Out of memory and no killable processes|is already exiting\. Skip killing")
# "Killed process" fields -> event keys
_KILLED_FIELDS = {
    "total-vm": "total_vm_kb",
    "anon-rss": "anon_rss_kb",
    "file-rss": "file_rss_kb",
    "shmem-rss": "shmem_rss_kb",
    "UID": "uid",
    "pgtables": "pgtables_kb",
    "oom_score_adj": "oom_score_adj",
}
EVENT_KEYS = ("time", "timestamp", "monotonic", "pid", "comm", "uid", "memcg", "memcg_id",
              "oom_memcg", "constraint", "policy", "invoker", "rss_kb", "anon_rss_kb",
              "file_rss_kb", "shmem_rss_kb", "total_vm_kb", "pgtables_kb", "oom_score_adj",
              "sources", "kmsg_seq", "observer_seq")


class KmsgRecord(object):
    """One /dev/kmsg record: syslog priority, sequence number, time (µs) and text."""

    __slots__ = ("facility", "level", "seq", "usec", "message")

    def __init__(self, facility, level, seq, usec, message):
        self.facility, self.level, self.seq, self.usec, self.message = facility, level, seq, usec, message

    def __repr__(self):
        return "KmsgRecord(%d,%d,%d,%d,%r)" % (self.facility, self.level, self.seq, self.usec, self.message)


def parse_kmsg_record(data):
    """A KmsgRecord from one /dev/kmsg read ("PRI,SEQ,USEC,FLAGS;text\\n KEY=v\\n"), or None."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    head, sep, rest = data.partition(";")
    if not sep:
        return None
    fields = head.split(",")
    if len(fields) < 3:
        return None
    try:
        prio, seq, usec = int(fields[0]), int(fields[1]), int(fields[2])
    except ValueError:
        return None
    if prio < 0 or seq < 0 or usec < 0:
        return None
    # continuation lines (" SUBSYSTEM=...") carry metadata, not text
    message = rest.split("\n", 1)[0]
    return KmsgRecord(prio >> 3, prio & 7, seq, usec, message)


def parse_kmsg_lines(lines):
    """KmsgRecords from an iterable of raw lines (bytes or str); malformed lines are dropped."""
    out = []
    for line in lines:
        rec = parse_kmsg_record(line)
        if rec is not None:
            out.append(rec)
    return out


def read_kmsg(path=KMSG):
    """Every record still in the kernel's ring buffer, oldest first (needs CAP_SYSLOG)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    records = []
    try:
        while True:
            try:
                data = os.read(fd, KMSG_READ_SIZE)
            except OSError as e:
                if e.errno == errno.EPIPE:  # records were overwritten while reading: go on
                    continue
                if e.errno == errno.EAGAIN:
                    break
                raise
            if not data:
                break
            rec = parse_kmsg_record(data)
            if rec is not None:
                records.append(rec)
    finally:
        os.close(fd)
    return records


def _parse_killed(match):
    """Event fields from a "Killed process" line; a truncated line gives fewer fields."""
    ev = {"pid": int(match.group("pid")), "comm": None}
    rest = match.group("rest")
    cut = rest.rfind(") total-vm:")
    if cut < 0 and rest.endswith(")"):
        cut = len(rest) - 1
    if cut >= 0:
        ev["comm"] = rest[:cut]
        for key, value, _unit in _KILLED_FIELD_RE.findall(rest[cut + 1:]):
            if key in _KILLED_FIELDS:
                ev[_KILLED_FIELDS[key]] = int(value)
    message = match.group("message")
    ev["constraint"] = "memcg" if message.startswith("Memory cgroup") else "global"
    return ev


def _parse_summary(text, summary):
    """Add the fields of an `oom-kill:` summary piece to `summary`; True if it was one."""
    if text.startswith("oom-kill:"):
        text = text[len("oom-kill:"):]
    elif not (text.startswith(",") and summary is not None and "uid" not in summary):
        return False
    tail = _SUMMARY_TAIL_RE.search(text)
    if tail:
        summary.update(task=tail.group("task"), pid=int(tail.group("pid")), uid=int(tail.group("uid")))
        text = text[:tail.start()]
    for part in text.split(","):
        key, eq, value = part.partition("=")
        key = key.strip()
        if key in _SUMMARY_KEYS and key not in ("task", "pid", "uid"):
            summary[key] = value if eq else True
    return True


def parse_oom_reports(records):
    """OOM kill events (dicts with EVENT_KEYS, source kmsg) from KmsgRecords.

    Each "Killed process" line is one event. The report that precedes it (the
    "invoked oom-killer" header, `policy_name=`, the `oom-kill:` summary; lost
    when the kernel rate-limits or the buffer wrapped) adds the policy, the
    invoker and the memory cgroups. Other messages may be interleaved, and a
    summary may arrive in several records (pr_cont).
    """
    events = []
    report = None  # context of the current OOM report
    for rec in records:
        if rec.facility != LOG_KERN:
            continue
        text = rec.message
        m = _INVOKED_RE.match(text)
        if m:
            report = _new_report(rec, m.group("invoker"))
        elif report is not None and rec.usec - report["usec"] > REPORT_SPAN_S * 1e6:
            report = None  # this report is over
        pm = _POLICY_RE.search(text)
        if pm:
            report = report or _new_report(rec)
            report["policy"] = pm.group("policy")
        if text.startswith("oom-kill:"):
            report = report or _new_report(rec)
            report["summary"] = {}
            _parse_summary(text, report["summary"])
            continue
        if report is not None and report.get("summary") is not None and _parse_summary(text, report["summary"]):
            continue
        if report is not None and _OOM_GROUP_RE.search(text):
            report["group"] = True
            continue
        if _NO_KILL_RE.search(text):
            report = None
            continue
        m = _KILLED_RE.match(text)
        if not m:
            continue
        ev = _parse_killed(m)
        ev.update(kmsg_seq=rec.seq, monotonic=rec.usec / 1e6, sources=["kmsg"])
        if report is not None:
            ev["policy"] = report.get("policy")
            ev["invoker"] = report.get("invoker")
            summary = report.get("summary") or {}
            if summary.get("pid") in (None, ev["pid"]) or report["group"]:
                ev["oom_memcg"] = summary.get("oom_memcg")
                if summary.get("pid") == ev["pid"]:
                    ev["memcg"] = summary.get("task_memcg")
                    if ev["comm"] is None:
                        ev["comm"] = summary.get("task")
                if summary.get("constraint") in CONSTRAINTS:
                    ev["constraint"] = CONSTRAINTS[summary["constraint"]]
            if report["group"]:  # the next kills of the group share the report, not the victim
                report["summary"] = dict((k, v) for k, v in summary.items() if k not in _VICTIM_KEYS)
                report["summary"]["uid"] = None  # complete: no more pieces
            else:
                report = None
        events.append(_complete(ev))
    return events


def _new_report(rec, invoker=None):
    return {"usec": rec.usec, "invoker": invoker, "policy": None, "summary": None, "group": False}


def _complete(ev):
    """Fill every EVENT_KEYS key (None when unknown) and the total RSS."""
    out = dict((k, ev.get(k)) for k in EVENT_KEYS)
    parts = [out[k] for k in ("anon_rss_kb", "file_rss_kb", "shmem_rss_kb")]
    if out["rss_kb"] is None and any(p is not None for p in parts):
        out["rss_kb"] = sum(p or 0 for p in parts)
    return out


# ---- the observer's pinned maps ----

def observer_layout(root=None):
    """The observer's pins (the loader's layout, under bpffs.roots()'s root)."""
    return bpffs.Layout(root or bpffs.roots()[0], OBSERVER_NAME)


def _c_string(raw):
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def victim_event(v, page_kb):
    """An event (EVENT_KEYS, source observer) from an ObserverVictim."""
    ev = {"pid": v.pid, "monotonic": v.mono_ns / 1e9, "observer_seq": v.seq, "sources": ["observer"]}
    if v.flags & OBSERVER_F_TASK:
        ev.update(comm=_c_string(v.comm), uid=v.uid, oom_score_adj=v.oom_score_adj,
                  memcg_id=v.memcg_id or None, anon_rss_kb=v.anon_rss * page_kb,
                  file_rss_kb=v.file_rss * page_kb, shmem_rss_kb=v.shmem_rss * page_kb)
    return _complete(ev)


def read_observer(root=None):
    """The observer's state: dict(loaded, kills, events) (events oldest first)."""
    layout = observer_layout(root)
    stats_pin, victims_pin = layout.map(OBSERVER_STATS_MAP), layout.map(OBSERVER_VICTIMS_MAP)
    if not (os.path.exists(stats_pin) and os.path.exists(victims_pin)):
        return {"loaded": False, "kills": None, "events": []}
    with libbpf.pinned(stats_pin) as stats_fd, libbpf.pinned(victims_pin) as victims_fd:
        for fd, struct, pin in ((stats_fd, ObserverStats, stats_pin), (victims_fd, ObserverVictim, victims_pin)):
            size = libbpf.map_info(fd)["value_size"]
            if size != ctypes.sizeof(struct):
                raise OSError(errno.EPROTO, "%s holds %d-byte values, this collection reads %d: "
                              "re-deploy the observer" % (pin, size, ctypes.sizeof(struct)))
        raw = libbpf.map_lookup(stats_fd, bytes(4), ctypes.sizeof(ObserverStats))
        items = libbpf.map_items(victims_fd)
    kills = ObserverStats.from_buffer_copy(raw).kills if raw else 0
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    victims = sorted((ObserverVictim.from_buffer_copy(v) for _k, v in items), key=lambda v: v.seq)
    return {"loaded": True, "kills": kills, "events": [victim_event(v, page_kb) for v in victims if v.seq]}


def apply_observer(objects, check_mode=False, persist=True):
    """Deploy the observer from the first of `objects` the kernel accepts.

    `objects` are builds of bpf/observer.bpf.c in OBSERVER_VARIANTS order (tp_btf, then the
    raw_tp fallback). Returns loader.apply()'s result plus `object`; raises
    loader.LoaderError naming every variant's failure when none loads."""
    failures = []
    for path in objects:
        try:
            result = loader.apply(OBSERVER_NAME, path, check_mode=check_mode, persist=persist)
        except loader.LoaderError as e:
            failures.append((path, e))
            continue
        result["object"] = path
        return result
    raise loader.LoaderError("no build of the OOM observer loads: " +
                             "; ".join("%s: %s" % (p, e) for p, e in failures),
                             failures[-1][1].log_tail if failures else "")


def memcg_mount(mountinfo="/proc/self/mountinfo"):
    """(mount point, root inside the hierarchy) of the memory cgroup hierarchy, or None.

    cgroup v1 with a memory controller wins over the unified (v2) hierarchy.
    """
    v2 = None
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) < sep + 4:
            continue
        fstype, superopts = fields[sep + 1], fields[sep + 3]
        if fstype == "cgroup" and "memory" in superopts.split(","):
            return fields[4], fields[3]
        if fstype == "cgroup2" and v2 is None:
            v2 = (fields[4], fields[3])
    return v2


def memcg_paths(ids, mount=None):
    """{memory cgroup id: path as the kernel prints it} for the cgroups in `ids` that exist."""
    mount = mount or memcg_mount()
    wanted, found = set(i for i in ids if i), {}
    if not mount or not wanted:
        return found
    top, inner = mount
    for dirpath, _dirs, _files in os.walk(top):
        try:
            ino = os.stat(dirpath).st_ino
        except OSError:
            continue
        if ino in wanted:
            rel = os.path.relpath(dirpath, top)
            found[ino] = os.path.normpath(os.path.join(inner, "" if rel == "." else rel))
            if len(found) == len(wanted):
                break
    return found


# ---- merging, filtering, time ----

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


UTC = datetime.timezone.utc
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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


def collect(since=None, policies=None, sources=("kmsg", "observer"), kmsg_path=KMSG, bpffs_root=None):
    """What events_info returns: dict(events, observer, warnings); see that module's RETURN."""
    since = parse_since(since) if since is not None else None
    warnings = []
    kmsg_events, observer = [], {"loaded": False, "kills": None, "events": []}
    if "kmsg" in sources:
        try:
            kmsg_events = parse_oom_reports(read_kmsg(kmsg_path))
        except OSError as e:
            warnings.append("cannot read the kernel log %s: %s" % (kmsg_path, e.strerror or e))
    if "observer" in sources:
        try:
            observer = read_observer(bpffs_root)
        except (OSError, libbpf.BpfError) as e:
            warnings.append("cannot read the observer's maps: %s" % e)
        if not observer["loaded"] and "kmsg" not in sources:
            warnings.append("the OOM observer is not loaded (no pins under %s)" % observer_layout(bpffs_root).dir)
    events = merge(kmsg_events, observer["events"])
    missing = [e["memcg_id"] for e in events if e["memcg"] is None and e["memcg_id"]]
    if missing:
        paths = memcg_paths(missing)
        for ev in events:
            if ev["memcg"] is None and ev["memcg_id"] in paths:
                ev["memcg"] = paths[ev["memcg_id"]]
    set_wall_time(events)
    all_events = events
    events = filter_events(events, since=since, policies=policies)
    return {"events": events, "all_events": all_events, "warnings": warnings,
            "observer": {"loaded": observer["loaded"], "kills": observer["kills"]}}


# ---- metrics (node_exporter textfile collector) ----

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


def _replace(path, text, mode):
    """Write `text` to `path` through a temporary file in its directory and a rename."""
    # node_exporter reads only *.prom: the temporary name must not end so
    fd, tmp = tempfile.mkstemp(prefix=".ebpf_oom-", suffix=".tmp", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def write_metrics(path, text, check_mode=False, force=False):
    """Replace `path` with `text` atomically (0644); returns (changed, old text or None).

    Unchanged text is left alone unless `force` (the timer forces, so the file's
    mtime shows the collector is alive)."""
    before = _read_text(path)
    changed = before != text
    if not check_mode and (changed or force):
        _replace(path, text, 0o644)
    return changed, before


def update_metrics(path, found, check_mode=False, force=False, state_dir=None):
    """Count the kills of collect()'s result `found` and write the metrics file `path`.

    The counting state lives in the state dir (bpffs.roots()'s, 0600); neither it nor the
    file is written in check mode. Returns (changed, old text or None, new text)."""
    state_path = os.path.join(state_dir or bpffs.roots()[1], METRICS_STATE)
    try:
        state = json.loads(_read_text(state_path) or "null")
    except ValueError:
        state = None
    boot_id = (_read_text(BOOT_ID) or "").strip()
    state = count_kills(found["all_events"], state, boot_id)
    text = metrics_text(state, found["observer"])
    changed, before = write_metrics(path, text, check_mode=check_mode, force=force)
    if not check_mode:
        if not os.path.isdir(os.path.dirname(state_path)):
            os.makedirs(os.path.dirname(state_path), 0o755)
        _replace(state_path, json.dumps(state, sort_keys=True), 0o600)
    return changed, before, text


def main(argv=None):
    """Command line (`ebpf-oom events`, installed by the role): print the events as JSON, or
    write the metrics file (the metrics timer's job). Returns the exit status."""
    parser = argparse.ArgumentParser(prog="ebpf-oom events", description="OOM kill events of this host.")
    parser.add_argument("--metrics-file", help="write node_exporter textfile metrics here (atomically)")
    parser.add_argument("--since", help="events since a duration ago (15m), Unix seconds or ISO 8601")
    parser.add_argument("--policy", action="append", help="only events of this policy (repeatable)")
    args = parser.parse_args(argv)
    try:
        result = collect(since=args.since, policies=args.policy)
    except ValueError as e:
        parser.error(str(e))
    for warning in result["warnings"]:
        sys.stderr.write("ebpf-oom events: warning: %s\n" % warning)
    if args.metrics_file:
        try:
            update_metrics(args.metrics_file, result, force=True)
        except OSError as e:
            sys.stderr.write("ebpf-oom events: cannot write %s: %s\n" % (args.metrics_file, e))
            return 1
    else:
        json.dump({"events": result["events"], "observer": result["observer"]}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    return 0
