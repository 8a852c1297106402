# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""OOM kills as the kernel log tells them: /dev/kmsg records and the OOM reports in them.

Layer 2 (parsing): imports nothing from the engine.

A kill's report: the `... invoked oom-killer` header, on the hook kernel
`policy_name=`, the `oom-kill:constraint=...` summary, and the
`...: Killed process PID (comm) total-vm:...` line.  Events are dicts with
EVENT_KEYS (None where unknown); events.py merges them with the observer's.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re

KMSG = "/dev/kmsg"
KMSG_READ_SIZE = 16384  # larger than any record (the kernel refuses smaller reads with EINVAL)
LOG_KERN = 0  # syslog facility of kernel messages; user space writes others
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
        events.append(complete(ev))
    return events


def _new_report(rec, invoker=None):
    return {"usec": rec.usec, "invoker": invoker, "policy": None, "summary": None, "group": False}


def complete(ev):
    """Fill every EVENT_KEYS key (None when unknown) and the total RSS."""
    out = dict((k, ev.get(k)) for k in EVENT_KEYS)
    parts = [out[k] for k in ("anon_rss_kb", "file_rss_kb", "shmem_rss_kb")]
    if out["rss_kb"] is None and any(p is not None for p in parts):
        out["rss_kb"] = sum(p or 0 for p in parts)
    return out
