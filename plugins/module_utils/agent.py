# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The score_adj agent: `ebpf-oom agent` (ebpf-oom-agent.service, Restart=always) keeps
every process a score_adj policy's rules match at its band's oom_score_adj.

Layer 4 (beside the loader): imports scoreadj, the layout, the ABI, the kernel
binding and the leaf helpers.  Standard library over the engine's ctypes libbpf.

It follows the one policy whose record says backend score_adj (none: it waits for one):
    - a sweep when it starts (the records queued before are dropped: the sweep sees
      what they say), when the policy changes, every scoreadj.SWEEP_EVERY seconds and
      when the programs lost events (the ring buffer was full): the policy's pinned
      task iterator classifies every process, and each gets what its class says, as
      does every process that carries a value written (children included: the fork
      program notes them in oom_adjusted, so no lost event hides one);
    - between sweeps, the records the policy's programs push into its ring buffer (exec,
      a new name, another cgroup, new credentials, a new process) get the same, as
      they come;
    - the values it writes over are kept in the ledger (scoreadj.py), saved before each
      write, so that a crash loses nothing: after one (SIGKILL) systemd starts it again
      and it sweeps;
    - when the policy is removed (or replaced by one of another backend), and when the
      agent is stopped (SIGTERM, SIGINT), it puts every value back.
One agent per host: it holds RUN_DIR/agent.lock while it runs (scoreadj.agent_running).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import fcntl
import os
import signal
import socket
import sys
import time

from . import abi, bpffs, libbpf, scoreadj
from .errors import BpfError, BpffsError, RenderError

TICK = 0.5            # seconds: the longest wait between two looks at the policy
LOCK_TRIES = 10       # looks at the agent's lock before giving up (0.2 s apart)
EVENT_SIZE = ctypes.sizeof(abi.AdjEvent)
# sd-daemon(3) priorities: journald files each line at its level.
SD_ERR = "<3>"
SD_WARNING = "<4>"
SD_INFO = "<6>"


def find_policy(root):
    """(layout, record) of the loaded policy that the score_adj backend enforces, or None."""
    if root is None or not os.path.isdir(root):
        return None
    for name in sorted(os.listdir(root)):
        layout = bpffs.Layout(root, name)
        try:
            record = bpffs.read_record(layout.record)
        except BpffsError:
            continue
        if record and record.get("backend") == scoreadj.BACKEND and record.get("document") is not None:
            return layout, record
    return None


def identity(layout):
    """What changes when the policy's record is written again or removed (None: removed)."""
    try:
        st = os.stat(layout.record)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Followed(object):
    """The policy the agent follows: its bands and the fds of its ring buffer, its
    oom_adjusted map and its count of lost events."""

    def __init__(self, layout, record):
        self.layout = layout
        self.name = layout.name
        self.identity = identity(layout)
        self.bands = scoreadj.Bands(record["document"])
        self.fds = {}
        self.ring = None
        try:
            for map_name in (abi.EVENTS_MAP, abi.ADJUSTED_MAP, abi.LOST_MAP):
                self.fds[map_name] = libbpf.obj_get(layout.map(map_name))
            self.ring = libbpf.RingBuffer(self.fds[abi.EVENTS_MAP])
        except BpfError:
            self.close()
            raise
        self.lost = self.lost_events()

    def lost_events(self):
        value = libbpf.map_lookup(self.fds[abi.LOST_MAP], b"\0\0\0\0", 8)
        return int.from_bytes(value or b"", "little")

    def still_there(self):
        return identity(self.layout) == self.identity

    def close(self):
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}


class Agent(object):
    def __init__(self, root=None, out=sys.stdout, err=sys.stderr, sweep_every=scoreadj.SWEEP_EVERY):
        self.root = root or bpffs.roots()[0]
        self.out = out
        self.err = err
        self.sweep_every = sweep_every
        self.followed = None
        self.refused = None
        self.next_sweep = 0.0
        self.stopping = False

    def say(self, level, text):
        (self.err if level in (SD_ERR, SD_WARNING) else self.out).write(
            "%sebpf-oom agent: %s\n" % (level, text))
        (self.err if level in (SD_ERR, SD_WARNING) else self.out).flush()

    # ---- under the ledger's lock

    def _with_ledger(self, work):
        """work(ledger) under the lock while the followed policy is still loaded; else
        the policy is let go (its values put back when it was removed)."""
        with scoreadj.Ledger.locked() as ledger:
            if ledger.set_aside:
                self.say(SD_ERR, "the ledger of the values written over was not readable: moved "
                         "to %s, a new one starts; the values it names are not put back by "
                         "themselves (see the file)" % ledger.set_aside)
            if self.followed is not None and self.followed.still_there():
                ledger.adjusted = self.followed.fds[abi.ADJUSTED_MAP]
                count = work(ledger)
                for problem in ledger.errors:
                    self.say(SD_WARNING, "policy %s: %s" % (self.followed.name, problem))
                return count
            self._let_go(ledger)
        return 0

    def _let_go(self, ledger):
        """Stop following the policy; put every value back unless it is still loaded as a
        score_adj policy (then it was written again: follow() sweeps with its new rules)."""
        if self.followed is None:
            return
        name = self.followed.name
        self.followed.close()
        self.followed = None
        found = find_policy(self.root)
        if found is None or found[0].name != name:
            put_back = ledger.restore_all()
            self.say(SD_INFO, "policy %s is gone: %d oom_score_adj value(s) put back" % (name, put_back))

    def sweep(self):
        self.next_sweep = time.monotonic() + self.sweep_every
        followed = self.followed
        return self._with_ledger(lambda ledger: scoreadj.sweep(followed.layout, followed.bands,
                                                               ledger))

    def handle(self, records):
        bands = self.followed.bands
        changes = []
        for data in records:
            if len(data) < EVENT_SIZE:
                continue
            ev = abi.AdjEvent.from_buffer_copy(data[:EVENT_SIZE])
            changes.append((ev.pid, bands.value(ev.rule), ev.parent, ev.start_ns))
        return self._with_ledger(lambda ledger: ledger.apply(changes, self.followed.name))

    # ---- the loop

    def follow(self):
        """Follow the score_adj policy loaded now, if any (the one followed so far was
        let go): open its maps, drop the records queued before (the sweep sees what
        they say, and what came since), and sweep."""
        found = find_policy(self.root)
        if found is None or identity(found[0]) == self.refused:
            return False
        try:
            self.followed = Followed(*found)
        except (BpfError, RenderError) as exc:
            self.refused = identity(found[0])  # not again until the policy is written again
            self.say(SD_ERR, "cannot follow policy %s: %s" % (found[0].name, exc))
            return False
        # Queued while no agent read them (or before a restart): applied after the
        # sweep they would put back what the processes were then, or write to the
        # processes that have their pids now.
        dropped = len(self.followed.ring.consume())
        written = self.sweep()
        self.say(SD_INFO, "following policy %s: %d oom_score_adj value(s) written (%d event(s) "
                 "queued before dropped)" % (found[0].name, written, dropped))
        return True

    def step(self):
        """One round: wait (at most TICK) for the programs' records and handle them;
        follow a new or changed policy; sweep when it is time."""
        followed = self.followed
        if followed is None or not followed.still_there():
            if followed is not None:
                with scoreadj.Ledger.locked() as ledger:
                    self._let_go(ledger)
            if not self.follow():
                time.sleep(TICK)
            return
        records = followed.ring.poll(int(TICK * 1000))
        if records and not self.stopping:
            self.handle(records)
        if self.followed is None:
            return
        lost = self.followed.lost_events()
        if lost != self.followed.lost:
            self.say(SD_WARNING, "%d event(s) lost (the ring buffer was full): sweeping"
                     % (lost - self.followed.lost))
            self.followed.lost = lost
            self.next_sweep = 0.0
        if time.monotonic() >= self.next_sweep and not self.stopping:
            self.sweep()

    def stop(self):
        """Put every value back (a clean stop)."""
        with scoreadj.Ledger.locked() as ledger:
            put_back = ledger.restore_all()
        if self.followed is not None:
            self.followed.close()
            self.followed = None
        self.say(SD_INFO, "stopped: %d oom_score_adj value(s) put back" % put_back)

    def run(self):
        def on_signal(_signum, _frame):
            self.stopping = True
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        ready = False
        while not self.stopping:
            self.step()
            if not ready:  # the first step swept: systemctl start returns now (Type=notify)
                notify("READY=1")
                ready = True
        notify("STOPPING=1")
        self.stop()


def notify(state):
    """sd_notify(3): tell systemd ``state`` when it started this process with a
    NOTIFY_SOCKET (the agent's unit is Type=notify); nothing otherwise."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path or path[0] not in "/@":
        return
    if path[0] == "@":  # an abstract socket
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(state.encode("ascii"))
    except OSError:  # systemd went away: nothing to tell
        pass


def main(argv=None, out=sys.stdout, err=sys.stderr):
    """`ebpf-oom agent`: run until SIGTERM or SIGINT; the exit status."""
    problem = scoreadj.pid_namespace_problem()
    if problem:
        err.write("%sebpf-oom agent: refused: %s\n" % (SD_ERR, problem))
        return 1
    base = scoreadj.run_dir()
    bpffs.make_dir(base, scoreadj.DIR_MODE)
    lock = os.path.join(base, scoreadj.AGENT_LOCK)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 scoreadj.FILE_MODE)
    try:
        for _attempt in range(LOCK_TRIES):  # verify may hold it shared for a moment
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                time.sleep(0.2)
        else:
            err.write("%sebpf-oom agent: another agent runs on this host (%s is locked)\n"
                      % (SD_ERR, lock))
            return 1
        Agent(out=out, err=err).run()
        return 0
    finally:
        os.close(fd)
