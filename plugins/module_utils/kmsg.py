# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""OOM kills as the kernel log tells them: /dev/kmsg records and the OOM reports in them.

Layer 2 (parsing): imports nothing from the engine.

A kill's report: the `... invoked oom-killer` header (on the hook kernel ending with
`policy_name=`), the `oom-kill:constraint=...` summary, and the
`...: Killed process PID (comm) total-vm:...` line.  Events are dicts with
EVENT_KEYS (None where unknown); events.py merges them with the observer's.

Process names and cgroup names are chosen by whoever runs or makes them, and the kernel
prints them as they are: every field is read from where the kernel put it (anchored
patterns, fixed fields first), so that no name can pass for another field.
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

# The report's first line: kernel text, but for the invoker's comm at its start and, on
# the hook kernel, the policy name at its end. `policy_name=` is read there only, never
# from another line (a task-dump line ends with a name the process chose).
_INVOKED_RE = re.compile(r"(?P<invoker>.*) invoked oom-killer: gfp_mask=\S+, order=-?\d+, "
                         r"oom_score_adj=-?\d+(?:, policy_name=(?P<policy>.*))?")
_KILLED_RE = re.compile(r"(?P<message>[^:]*): Killed process (?P<pid>\d+) \((?P<rest>.*)")
_KILLED_FIELD_RE = re.compile(r"([A-Za-z][A-Za-z_-]*):(-?\d+)(kB)?")
# The `oom-kill:` summary (dump_oom_summary, cpuset_print_current_mems_allowed,
# mem_cgroup_print_oom_context), whose cpuset name, memcg paths and comm are printed
# as they are, commas and '=' included:
#   constraint=C,nodemask=N[,cpuset=NAME,mems_allowed=M](,global_oom|,oom_memcg=PATH)
#   ,task_memcg=PATH,task=COMM,pid=P,uid=U
# The fixed fields are read from its ends (constraint first, pid and uid last); the
# middle is cut every way the kernel could have printed it, and a field is reported
# only when every way agrees on it (summary_fields).
_SUMMARY_HEAD_RE = re.compile(r"constraint=(?P<constraint>CONSTRAINT_[A-Z_]+),"
                              r"nodemask=(?:\(null\)|[0-9-]*(?:,[0-9][0-9-]*)*)")
_SUMMARY_TAIL_RE = re.compile(r",pid=(?P<pid>\d+),uid=(?P<uid>\d+)\Z")
_NODE_LIST_RE = re.compile(r"[0-9-]*(?:,[0-9][0-9-]*)*")
TASK_COMM_MAX = 15  # a task's comm: TASK_COMM_LEN without its NUL
_OOM_GROUP_RE = re.compile(r"Tasks in /.* are going to be killed due to memory\.oom\.group set")
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


def _cuts(text, sep):
    """(before, after) at every occurrence of ``sep`` in ``text``."""
    at = text.find(sep)
    while at >= 0:
        yield text[:at], text[at + len(sep):]
        at = text.find(sep, at + 1)


def _memcgs(text):
    """(oom_memcg or None in a global OOM, task_memcg) for every way the kernel could have
    printed ``text`` (`,global_oom,task_memcg=P` or `,oom_memcg=P,task_memcg=P`): both
    paths absolute, the task's cgroup the OOM's or one below it."""
    if text.startswith(",global_oom,task_memcg=/"):
        yield None, text[len(",global_oom,task_memcg="):]
    if text.startswith(",oom_memcg=/"):
        for oom, task in _cuts(text[len(",oom_memcg="):], ",task_memcg="):
            if task == oom or task.startswith(oom.rstrip("/") + "/"):
                yield oom, task


def _readings(middle, comm):
    """(cpuset, oom_memcg, task_memcg, task) for every way of cutting the summary between
    its nodemask and its pid; ``comm``, when known, is the task's."""
    for before, task in _cuts(middle, ",task="):
        if (task != comm) if comm is not None else len(task) > TASK_COMM_MAX:
            continue
        starts = [(None, before)]
        if before.startswith(",cpuset="):  # a cgroup's name: "/" (the root) or no "/" at all
            starts = [(name, after[_NODE_LIST_RE.match(after).end():])
                      for name, after in _cuts(before[len(",cpuset="):], ",mems_allowed=")
                      if name == "/" or "/" not in name]
        for cpuset, rest in starts:
            for oom, memcg in _memcgs(rest):
                yield cpuset, oom, memcg, task


def summary_fields(text, comm=None):
    """The fields of an `oom-kill:` summary (its text after "oom-kill:") that the kernel
    printed, whatever the names in it: constraint, pid and uid from its ends; cpuset,
    oom_memcg, task_memcg and task only when every way of reading it gives the same."""
    out = {}
    head = _SUMMARY_HEAD_RE.match(text)
    tail = _SUMMARY_TAIL_RE.search(text)
    if head:
        out["constraint"] = head.group("constraint")
    if tail:
        out.update(pid=int(tail.group("pid")), uid=int(tail.group("uid")))
    if not (head and tail and head.end() <= tail.start()):
        return out
    readings = set(_readings(text[head.end():tail.start()], comm))
    for index, key in enumerate(("cpuset", "oom_memcg", "task_memcg", "task")):
        values = set(r[index] for r in readings)
        if len(values) == 1:
            out[key] = values.pop()
    return out


def parse_oom_reports(records):
    """OOM kill events (dicts with EVENT_KEYS, source kmsg) from KmsgRecords.

    Each "Killed process" line is one event. The report that precedes it (the
    "invoked oom-killer" header with the hook kernel's `policy_name=`, the
    `oom-kill:` summary; lost when the kernel rate-limits or the buffer wrapped)
    adds the policy, the invoker and the memory cgroups. Other messages may be
    interleaved, and a summary may arrive in several records (pr_cont).
    """
    events = []
    report = None  # context of the current OOM report
    for rec in records:
        if rec.facility != LOG_KERN:
            continue
        text = rec.message
        m = _INVOKED_RE.fullmatch(text)
        if m:
            report = _new_report(rec, m.group("invoker"), m.group("policy"))
            continue
        if report is not None and rec.usec - report["usec"] > REPORT_SPAN_S * 1e6:
            report = None  # this report is over
        if text.startswith("oom-kill:"):
            report = report or _new_report(rec)
            report["summary"] = text[len("oom-kill:"):]
            continue
        summary = report and report["summary"]
        if summary is not None and text.startswith(",") and not _SUMMARY_TAIL_RE.search(summary):
            report["summary"] += text  # a piece printed with pr_cont
            continue
        if report is not None and _OOM_GROUP_RE.fullmatch(text):
            report["group"] = True
            continue
        if _NO_KILL_RE.search(text):
            report = None
            continue
        m = _KILLED_RE.fullmatch(text)
        if not m:
            continue
        ev = _parse_killed(m)
        ev.update(kmsg_seq=rec.seq, monotonic=rec.usec / 1e6, sources=["kmsg"])
        if report is not None:
            _add_report(ev, report)
            if not report["group"]:  # the next kills of a group share the report
                report = None
        events.append(complete(ev))
    return events


def _add_report(ev, report):
    """What the report says about the kill ``ev``: policy, invoker, and from the summary
    the constraint, the OOM's memory cgroup and, for its victim, the task's."""
    ev["policy"] = report["policy"]
    ev["invoker"] = report["invoker"]
    if report["summary"] is None:
        return
    tail = _SUMMARY_TAIL_RE.search(report["summary"])
    victim = tail is not None and int(tail.group("pid")) == ev["pid"]
    fields = summary_fields(report["summary"], ev["comm"] if victim else None)
    if victim or tail is None or report["group"]:
        ev["oom_memcg"] = fields.get("oom_memcg")
        if fields.get("constraint") in CONSTRAINTS:
            ev["constraint"] = CONSTRAINTS[fields["constraint"]]
    if victim:
        ev["memcg"] = fields.get("task_memcg")
        if ev["comm"] is None:
            ev["comm"] = fields.get("task")


def _new_report(rec, invoker=None, policy=None):
    return {"usec": rec.usec, "invoker": invoker, "policy": policy, "summary": None, "group": False}


def complete(ev):
    """Fill every EVENT_KEYS key (None when unknown) and the total RSS."""
    out = dict((k, ev.get(k)) for k in EVENT_KEYS)
    parts = [out[k] for k in ("anon_rss_kb", "file_rss_kb", "shmem_rss_kb")]
    if out["rss_kb"] is None and any(p is not None for p in parts):
        out["rss_kb"] = sum(p or 0 for p in parts)
    return out
