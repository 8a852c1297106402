# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The OOM observer: what it is (bpf/observer.bpf.c and bpf/observer.h) and what it saw.

Layer 3 (reading what is pinned): imports the layout, the kernel binding and the
kernel-log parser (for the shape of an event); read-only.

The observer counts every oom/mark_victim and keeps the last OBSERVER_VICTIMS
victims in pinned maps, for as long as it is loaded, on any kernel with BTF, hook
or not.  deploy.py loads it; events.py merges what it saw with the kernel log.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import os

from . import bpffs, libbpf
from .kmsg import complete

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


# Records of one kill are this close in time (the observer fires just before the
# kernel prints "Killed process"); used to pair them.
MATCH_WINDOW_S = 5.0


def observer_layout(root=None):
    """The observer's pins (the loader's layout, under bpffs.roots()'s root)."""
    return bpffs.Layout(root or bpffs.roots()[0], OBSERVER_NAME)


def c_string(raw):
    """The text of a NUL-padded char array (a task's comm) read from a map."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def check_value_size(fd, struct, pin, remedy):
    """OSError (EPROTO) when the pinned map holds values of another size than ``struct``: a
    map made by another version of the collection; ``remedy`` says what to do."""
    size = libbpf.map_info(fd)["value_size"]
    if size != ctypes.sizeof(struct):
        raise OSError(errno.EPROTO, "%s holds %d-byte values, this collection reads %d: %s"
                      % (pin, size, ctypes.sizeof(struct), remedy))


def victim_event(v, page_kb):
    """An event (EVENT_KEYS, source observer) from an ObserverVictim."""
    ev = {"pid": v.pid, "monotonic": v.mono_ns / 1e9, "observer_seq": v.seq, "sources": ["observer"]}
    if v.flags & OBSERVER_F_TASK:
        ev.update(comm=c_string(v.comm), uid=v.uid, oom_score_adj=v.oom_score_adj,
                  memcg_id=v.memcg_id or None, anon_rss_kb=v.anon_rss * page_kb,
                  file_rss_kb=v.file_rss * page_kb, shmem_rss_kb=v.shmem_rss * page_kb)
    return complete(ev)


def read_observer(root=None):
    """The observer's state: dict(loaded, kills, events) (events oldest first)."""
    layout = observer_layout(root)
    stats_pin, victims_pin = layout.map(OBSERVER_STATS_MAP), layout.map(OBSERVER_VICTIMS_MAP)
    if not (os.path.exists(stats_pin) and os.path.exists(victims_pin)):
        return {"loaded": False, "kills": None, "events": []}
    with libbpf.pinned(stats_pin) as stats_fd, libbpf.pinned(victims_pin) as victims_fd:
        for fd, struct, pin in ((stats_fd, ObserverStats, stats_pin), (victims_fd, ObserverVictim, victims_pin)):
            check_value_size(fd, struct, pin, "re-deploy the observer")
        raw = libbpf.map_lookup(stats_fd, bytes(4), ctypes.sizeof(ObserverStats))
        items = libbpf.map_items(victims_fd)
    kills = ObserverStats.from_buffer_copy(raw).kills if raw else 0
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    victims = sorted((ObserverVictim.from_buffer_copy(v) for _k, v in items), key=lambda v: v.seq)
    return {"loaded": True, "kills": kills, "events": [victim_event(v, page_kb) for v in victims if v.seq]}
