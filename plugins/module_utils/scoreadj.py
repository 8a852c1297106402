# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The score_adj backend's arithmetic and bookkeeping: the oom_score_adj each class of a
policy document gets (its bands), what a document asks that oom_score_adj cannot say,
and the ledger of the values written over, from which every one is put back.

Layer 3 (what is kept): imports the layout, the policy language, the ABI, the kernel binding and the
leaf helpers.  Used by the backend (backends.py), its agent (agent.py), verify and
events.

Bands.  Without the hook the kernel kills the process with the most badness: its
pages + oom_score_adj x totalpages / 1000 (totalpages: RAM + swap, or the memory
cgroup's limit).  A class becomes a value:
    protect                       -1000 (the kernel never kills it)
    select                        +1000
    prefer tiers dying before     positive values, the lowest tier highest; with
      the processes no rule         select in the document, below +1000
      matches
    a prefer fallback's own tier  0
    prefer tiers dying after      negative values down to -999
      them (a prefer fallback)
    no rule matches               the process keeps its own value
Adjacent levels are spread as far apart as -999..+1000 allows: the gap between two
levels is how much larger (in thousandths of totalpages) a process of the later level
must be to die first, the one case in which the order differs from the hook's.

The ledger.  RUN_DIR/score_adj.json (root, 0600; RUN_DIR defaults to /run/ebpf-oom,
EBPF_OOM_RUN_DIR overrides it): per process the agent wrote (by pid, with its start
time, so that a reused pid is not mistaken for it) the value it overwrote and the one
it wrote, and the last processes that exited carrying a value it wrote (for events).
Changed under RUN_DIR/score_adj.lock; an entry is saved before its value is written.
A value is put back only while the process still carries what was written (another
writer's later value stands).  The policy's oom_adjusted map holds the same processes,
each with its start time, original and written value, so that its programs report
them and note a child that inherits a written value at once (with its parent's
original); the sweep takes such a child into the ledger (Ledger.adopt) even when every
event about it was lost.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import time

from . import abi, bpffs, language, libbpf
from .errors import RenderError
from .files import read_file, write_atomic

ADJ_MIN = -1000           # OOM_SCORE_ADJ_MIN: the kernel never kills the process
ADJ_MAX = 1000            # OOM_SCORE_ADJ_MAX
UNMATCHED = 0             # where the processes no rule matches are taken to be
RUN_DIR = "/run/ebpf-oom"
LEDGER = "score_adj.json"
LOCK = "score_adj.lock"
SWEEP_EVERY = 30          # seconds between two sweeps of the agent
EXITED_KEPT = 512         # exited processes remembered (events attribute kills by them)
FILE_MODE = 0o600
DIR_MODE = 0o700
BACKEND = "score_adj"  # the backend's name (backends.ScoreAdj), in the records it writes
AGENT_UNIT = "ebpf-oom-agent.service"
AGENT_LOCK = "agent.lock"  # the agent holds it while it runs
SELECT = "select"


def run_dir():
    return os.environ.get("EBPF_OOM_RUN_DIR") or RUN_DIR


PID_NS_INIT_INO = 0xEFFFFFFC  # PROC_PID_INIT_INO: the inode number of the initial pid namespace


def pid_namespace_problem(proc="/proc"):
    """Why this process cannot write the oom_score_adj of the processes the programs
    report, or None: they name processes by their pids in the initial pid namespace,
    and the values are written through this process's /proc."""
    link = os.path.join(proc, "self", "ns", "pid")
    try:
        name, inode = os.readlink(link), os.stat(link).st_ino
    except OSError as exc:
        return "cannot read its pid namespace (%s): %s" % (link, exc.strerror or exc)
    if inode != PID_NS_INIT_INO:
        return ("it runs in the pid namespace %s, not the host's initial one: the programs name "
                "processes by their host pids, which are other processes here or none. Run it in "
                "the host's pid namespace (a container: hostPID)" % name)
    return None


def agent_running():
    """True while an agent (agent.py) holds its lock on this host."""
    try:
        fd = os.open(os.path.join(run_dir(), AGENT_LOCK), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- bands

def refusals(document):
    """What the document asks that oom_score_adj cannot say ('path: reason' lines)."""
    doc = language.normalize(document)
    errors = []
    for i, rule in enumerate(doc["rules"]):
        if rule.get("action") == "abort":
            errors.append("%s.action: 'abort' cannot be expressed through oom_score_adj (no value "
                          "stops an OOM from killing); the score_adj backend refuses it. Use the "
                          "evaluate_task backend (a kernel with the hook)" % language.rule_path(i))
    if doc["fallback"].get("action") == "protect":
        errors.append("fallback: 'protect' cannot be expressed through oom_score_adj: the score_adj "
                      "backend writes only the processes a rule matches, every other one keeps its "
                      "value. Protect processes by rules (action: protect), or use the "
                      "evaluate_task backend (a kernel with the hook)")
    return errors


def warnings(document):
    """What the score_adj backend does differently from the document's letter."""
    doc = language.normalize(document)
    found = []
    ranked = [(language.rule_path(i), r) for i, r in enumerate(doc["rules"])] + \
        [("fallback", doc["fallback"])]
    for where, rule in ranked:
        if rule.get("action") == "prefer" and rule.get("by") == "rss":
            found.append("%s.by: rss: with the score_adj backend the kernel ranks the processes "
                         "of a tier by its own badness (rss + swap + page tables), not by rss"
                         % where)
    if doc["scope"] != "both":
        found.append("scope: %s: with the score_adj backend oom_score_adj steers every OOM, "
                     "global and memcg alike" % doc["scope"])
    return found


class Bands(object):
    """The oom_score_adj a document gives each of its rules (see the file's docstring).

    rules: [value per rule]; levels: [(what, value)] from the first to die to the last
    (the unmatched processes at UNMATCHED, protect left out); gap: the smallest
    difference between adjacent levels.  RenderError for a document refusals() refuses."""

    def __init__(self, document):
        errors = refusals(document)
        if errors:
            raise RenderError("\n".join(errors))
        doc = language.normalize(document)
        self.warnings = warnings(document)
        fallback = doc["fallback"]
        pivot = fallback["tier"] if fallback.get("action") == "prefer" else None
        rules = doc["rules"]
        tiers = sorted(set(r["tier"] for r in rules if r.get("action") == "prefer"))
        before = ([SELECT] if any(r.get("action") == "select" for r in rules) else []) + \
            [t for t in tiers if pivot is None or t < pivot]
        after = [t for t in tiers if pivot is not None and t > pivot]
        value = {pivot: UNMATCHED}
        for i, key in enumerate(before):
            value[key] = ADJ_MAX * (len(before) - i) // len(before)
        for j, tier in enumerate(after):
            value[tier] = -((ADJ_MAX - 1) * (j + 1) // len(after))
        self.rules = [ADJ_MIN if r["action"] == "protect" else
                      value[SELECT] if r["action"] == SELECT else value[r["tier"]]
                      for r in rules]
        unmatched = "tier %d (fallback)" % pivot if pivot is not None else "no rule matches"
        self.levels = [("select" if key == SELECT else "tier %d" % key, value[key]) for key in before] \
            + [(unmatched, UNMATCHED)] + [("tier %d" % t, value[t]) for t in after]
        steps = [a[1] - b[1] for a, b in zip(self.levels, self.levels[1:])]
        self.gap = min(steps) if steps else None

    def value(self, rule):
        """The value of a process whose first matching rule is ``rule`` (-1: none -> None)."""
        return self.rules[rule] if 0 <= rule < len(self.rules) else None


# ---------------------------------------------------------------- /proc

def _proc(pid, name):
    return "/proc/%d/%s" % (pid, name)


def _start_of(stat):
    try:
        return int(stat.rsplit(b")", 1)[1].split()[19])
    except (AttributeError, IndexError, ValueError):
        return None


def start_time(pid):
    """The process's start time (clock ticks after boot, /proc/PID/stat), or None when gone."""
    return _start_of(read_file(_proc(pid, "stat")))


class LedgerError(ValueError):
    """The ledger file holds something else than a ledger."""


def _ints(values, count):
    return isinstance(values, list) and len(values) == count and \
        all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def ticks(ns):
    """A start_boottime in ns as /proc/PID/stat's starttime (clock ticks: nsec_to_clock_t)."""
    return ns // abi.EBPF_OOM_NS_PER_TICK


def read_adj(pid):
    """The process's oom_score_adj, or None when it is gone."""
    data = read_file(_proc(pid, "oom_score_adj"))
    try:
        return int(data)
    except (TypeError, ValueError):
        return None


def write_adj(pid, value, start):
    """Write the oom_score_adj of the process at ``pid`` that started at ``start`` (clock
    ticks, as start_time()); None, or the errno when the kernel refused (ESRCH/ENOENT: it
    is gone; EACCES: lowering it needs CAP_SYS_RESOURCE).  Its /proc directory is opened
    once, and both its start and the value go through it: a pid reused in between names
    another directory, and the old one answers ESRCH."""
    try:
        proc = os.open("/proc/%d" % pid, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        return exc.errno
    try:
        fd = os.open("stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
        try:
            stat = os.read(fd, 4096)
        finally:
            os.close(fd)
        if _start_of(stat) != start:
            return errno.ESRCH  # another process has the pid now
        fd = os.open("oom_score_adj", os.O_WRONLY | os.O_CLOEXEC, dir_fd=proc)
        try:
            os.write(fd, str(value).encode("ascii"))
        finally:
            os.close(fd)
    except OSError as exc:
        return exc.errno
    finally:
        os.close(proc)
    return None


def comm(pid):
    data = read_file(_proc(pid, "comm"))
    return data.decode("utf-8", "replace").strip() if data is not None else "?"


GONE = (errno.ESRCH, errno.ENOENT)


# ---------------------------------------------------------------- the ledger

class Ledger(object):
    """The values written over, under the lock (``with Ledger.locked() as ledger``).
    A process that carries -1000 (the kernel never kills it) before anything was written
    is left alone: the hook's prefer and select pass it over too.

    tasks: {pid: [start time, original value, written value]}; exited: [[pid, start,
    written, policy, when]], the last EXITED_KEPT; policy: the name of the policy that
    wrote.  ``adjusted``: fd of the policy's oom_adjusted map, kept in step (or None)."""

    def __init__(self, data, path):
        self.path = path
        self.policy = data.get("policy")
        self.tasks = dict((int(pid), list(entry)) for pid, entry in data.get("tasks", {}).items())
        self.exited = [list(e) for e in data.get("exited", [])]
        self.set_aside = None     # where locked() moved an unreadable ledger
        self.adjusted = None
        self.errors = []          # what the kernel refused in the last apply()
        self._held = {}           # entries let go in apply(), saved until their values are back
        self._saved = self._dump()

    @staticmethod
    def read(path=None):
        """The ledger as saved (no lock): for verify and events; LedgerError when the file
        is not a ledger."""
        path = path or os.path.join(run_dir(), LEDGER)
        try:
            data = json.loads((read_file(path) or b"{}").decode("ascii"))
            ledger = Ledger(data, path)
            if not all(_ints(e, 3) for e in ledger.tasks.values()) or \
                    not all(len(e) == 5 and _ints(e[:3] + e[4:], 4) for e in ledger.exited) or \
                    not isinstance(ledger.policy, (str, type(None))):
                raise ValueError("an entry is not a list of integers")
        except (AttributeError, TypeError, ValueError) as exc:
            raise LedgerError("%s is not a ledger: %s" % (path, exc))
        return ledger

    @classmethod
    @contextlib.contextmanager
    def locked(cls):
        """The ledger under its lock; saved when changed, at the latest on leaving."""
        base = run_dir()
        bpffs.make_dir(base, DIR_MODE)
        fd = os.open(os.path.join(base, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            path = os.path.join(base, LEDGER)
            try:
                ledger = cls.read(path)
            except LedgerError:
                # Kept for a human (the values it names are not put back by themselves);
                # a new ledger starts, so that the agent and removals go on.
                aside = "%s.corrupt-%d" % (path, time.time())
                os.rename(path, aside)
                ledger = Ledger({}, path)
                ledger.set_aside = aside
            yield ledger
            ledger.save()
        finally:
            os.close(fd)

    def _dump(self):
        tasks = dict(self._held, **dict((str(p), e) for p, e in self.tasks.items()))
        return json.dumps({"policy": self.policy, "exited": self.exited, "tasks": tasks},
                          sort_keys=True)

    def save(self):
        data = self._dump()
        if data != self._saved:
            write_atomic(self.path, data.encode("ascii") + b"\n", FILE_MODE)
            self._saved = data

    # ---- the oom_adjusted map

    def _note(self, pid):
        """Note the process in oom_adjusted with its entry (what a child inherits)."""
        if self.adjusted is None:
            return
        start, original, written = self.tasks[pid]
        note = abi.Adjusted(start_ns=start * abi.EBPF_OOM_NS_PER_TICK, original=original,
                            written=written)
        try:
            libbpf.map_update(self.adjusted, pid.to_bytes(4, "little"), bytes(note))
        except libbpf.BpfError as exc:  # full: the sweep still finds the process
            self.errors.append("pid %d: cannot note it in %s: %s" % (pid, abi.ADJUSTED_MAP, exc))

    def _unmark(self, pid):
        if self.adjusted is not None:
            libbpf.map_delete(self.adjusted, pid.to_bytes(4, "little"))

    def _notes(self):
        return dict((int.from_bytes(key, "little"), abi.Adjusted.from_buffer_copy(value))
                    for key, value in libbpf.map_items(self.adjusted, 4, ctypes.sizeof(abi.Adjusted)))

    def adopt(self):
        """Take in the children the fork program noted (they inherited a value written
        here) that the ledger does not know yet, their events lost or not handled yet:
        each while it still carries that value, with its parent's original."""
        if self.adjusted is None:
            return
        for pid, note in self._notes().items():
            if pid in self.tasks:
                continue
            start = start_time(pid)
            if start is not None and start == ticks(note.start_ns) and read_adj(pid) == note.written:
                self.tasks[pid] = [start, note.original, note.written]
            else:
                self._unmark(pid)

    def sync_map(self):
        """Make oom_adjusted hold exactly the ledger's processes, each with its entry."""
        if self.adjusted is None:
            return
        notes = self._notes()
        for pid in set(notes) - set(self.tasks):
            self._unmark(pid)
        for pid, (start, original, written) in self.tasks.items():
            note = notes.get(pid)
            if note is None or (ticks(note.start_ns), note.original, note.written) != \
                    (start, original, written):
                self._note(pid)

    # ---- changes

    def forget(self, pid, exited=False):
        entry = self.tasks.pop(pid, None)
        if entry is None:
            return
        self._unmark(pid)
        if exited and entry[2] != entry[1]:
            self.exited.append([pid, entry[0], entry[2], self.policy, int(time.time())])
            del self.exited[:-EXITED_KEPT]

    def _entry(self, pid, start):
        """The entry of the process now at ``pid`` (a stale one of a reused pid is dropped)."""
        entry = self.tasks.get(pid)
        if entry is not None and entry[0] != start:
            self.forget(pid, exited=True)
            entry = None
        return entry

    def apply(self, changes, policy):
        """Make each process carry what its class says: ``changes`` is [(pid, value or
        None: no rule matches, parent tgid or None[, the start_boottime in ns of the
        process the change is about: a change about another process, whose pid this one
        reuses, is dropped])], in the order the classes were seen (a later change of a
        pid wins).  A child of a process written here inherited the
        value written: it is noted with the parent's original.  Every value is written
        with its process's entry saved (a new one before, one let go until after): a crash
        in between loses no original.  Returns the number of values written; what the
        kernel refused is in ``errors``."""
        self.policy = policy
        self.errors = []
        now = {}        # pid -> the value it will carry when the writes are done
        wanted = {}     # pid -> (the value to write, the start of the process it is for)
        for change in changes:
            pid, value, parent = change[:3]
            start = start_time(pid)
            if start is None:
                self.forget(pid, exited=True)
                self._unmark(pid)  # a child noted by the fork program, gone already
                wanted.pop(pid, None)
                continue
            if len(change) > 3 and change[3] is not None and start != ticks(change[3]):
                continue  # an event of the process that had this pid before
            entry = self._entry(pid, start)
            current = now[pid] if pid in now else read_adj(pid)
            if current is None:
                continue
            inherited = self.tasks.get(parent) if parent else None
            if entry is None and inherited is not None and current == inherited[2]:
                entry = self.tasks[pid] = [start, inherited[1], current]
                self._note(pid)
            if value is None:
                if entry is not None:
                    if current == entry[2]:
                        now[pid] = entry[1]
                        wanted[pid] = (entry[1], start)
                    self._held[str(pid)] = entry
                    self.forget(pid)
                continue
            if entry is None and (current == value or current == ADJ_MIN):
                continue    # its own value already; or one the kernel never kills, which
                #             the hook's prefer and select pass over too
            if entry is None:
                entry = self.tasks[pid] = [start, current, value]
                self._note(pid)
            elif entry[2] != value:
                entry[2] = value
                self._note(pid)
            if current != value:
                now[pid] = value
                wanted[pid] = (value, start)
        self.save()
        written = 0
        for pid, (value, start) in wanted.items():
            err = write_adj(pid, value, start)
            if err is None:
                written += 1
                continue
            if err not in GONE:
                self.errors.append("pid %d (%s): cannot write oom_score_adj %d: %s"
                                   % (pid, comm(pid), value, os.strerror(err)))
            self.forget(pid, exited=err in GONE)
        self._held = {}
        self.save()
        return written

    def prune(self, alive=None):
        """Forget the processes that exited (``alive``: pids known to live, not looked at)."""
        for pid, entry in list(self.tasks.items()):
            if (alive is None or pid not in alive) and start_time(pid) != entry[0]:
                self.forget(pid, exited=True)

    def restore_all(self):
        """Put back every value written over (where the process still carries the one
        written) and forget them all -> the number put back."""
        changes = [(pid, None, None) for pid in sorted(self.tasks)]
        restored = self.apply(changes, self.policy)
        self.tasks = {}
        if self.adjusted is not None:
            self.sync_map()
        self.save()
        return restored

    def written_by_agent(self, pid, value, at=None):
        """The policy that wrote ``value`` to process ``pid`` (alive or exited), or None.
        ``at``: the Unix time of the kill, when known: an exited process counts only if
        it was seen gone then or later (a pid reused since is another process)."""
        entry = self.tasks.get(pid)
        if entry is not None and entry[2] == value:
            return self.policy
        for e_pid, _start, e_value, policy, when in reversed(self.exited):
            if e_pid == pid and e_value == value and (at is None or when >= int(at) - 1):
                return policy
        return None


# ---------------------------------------------------------------- what the programs see

def snapshot(layout):
    """The task iterator's records (abi.Task) through the policy's pinned iterator link."""
    with libbpf.pinned(layout.link(abi.TASKS_PROGRAM)) as fd:
        data = libbpf.iter_read(fd, abi.TASKS_PROGRAM)
    size = ctypes.sizeof(abi.Task)
    return [abi.Task.from_buffer_copy(data[at:at + size])
            for at in range(0, len(data) - size + 1, size)]


def sweep(layout, bands, ledger):
    """Every process the iterator sees gets what its class says: the ones a rule
    matches, and every one that carries a value written here (the ledger's, and the
    children the fork program noted); entries of processes that exited are dropped
    -> the number of values written."""
    tasks = snapshot(layout)
    ledger.prune(alive=set(t.pid for t in tasks))
    ledger.adopt()
    ledger.sync_map()
    changes = [(t.pid, bands.value(t.rule), None) for t in tasks
               if t.rule >= 0 or t.pid in ledger.tasks]
    return ledger.apply(changes, layout.name)


def mismatches(layout, bands, ledger):
    """[(pid, comm, rule, wanted, carried)] of the live processes a rule matches whose
    oom_score_adj is not their band's (the iterator's view); a process that carried -1000
    before the agent wrote anything is left alone, as Ledger.apply leaves it."""
    out = []
    for t in snapshot(layout):
        want = bands.value(t.rule)
        if want is None or t.oom_score_adj == want or \
                (t.oom_score_adj == ADJ_MIN and t.pid not in ledger.tasks):
            continue
        out.append((t.pid, t.comm.decode("ascii", "replace"), t.rule, want, t.oom_score_adj))
    return out
