# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The generic object's ABI: bpf/generic.h mirrored name for name, and the names of
its programs, maps and globals (bpf/generic.bpf.c).

tests/unit/test_renderer.py holds the ctypes structs and the constants to the
compiled object's BTF and to generic.h.

Layer 0 (leaf helpers): imports nothing from the engine.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os

# ---- bpf/generic.h ---------------------------------------------------------

EBPF_OOM_MAX_RULES = 64
EBPF_OOM_COMM_LEN = 16
EBPF_OOM_MAX_CGROUP_LEVEL = 16
EBPF_OOM_PATH_LEN = 256

EBPF_OOM_TIER_SELECT = 0
EBPF_OOM_TIER_MIN = 1
EBPF_OOM_TIER_MAX = 1000

EBPF_OOM_SCOPE_GLOBAL = 1
EBPF_OOM_SCOPE_MEMCG = 2

EBPF_OOM_ACT_KERNEL = 0
EBPF_OOM_ACT_PROTECT = 1
EBPF_OOM_ACT_PREFER = 2
EBPF_OOM_ACT_SELECT = 3
EBPF_OOM_ACT_ABORT = 4

EBPF_OOM_DECIDER_NEXT = 0
EBPF_OOM_DECIDER_SCAN = 1

EBPF_OOM_BY_BADNESS = 0
EBPF_OOM_BY_RSS = 1

EBPF_OOM_M_PID = 1
EBPF_OOM_M_COMM = 2
EBPF_OOM_M_CGROUP = 4
EBPF_OOM_M_UID = 8


class Rule(ctypes.Structure):
    """struct ebpf_oom_rule"""
    _fields_ = [
        ("comm", ctypes.c_char * EBPF_OOM_COMM_LEN),
        ("comm_mask", ctypes.c_char * EBPF_OOM_COMM_LEN),
        ("match", ctypes.c_uint32),
        ("action", ctypes.c_uint32),
        ("tier", ctypes.c_uint32),
        ("by", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("cgroup_level", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class Path(ctypes.Structure):
    """struct ebpf_oom_path"""
    _fields_ = [
        ("path", ctypes.c_char * EBPF_OOM_PATH_LEN),
    ]


class Config(ctypes.Structure):
    """struct ebpf_oom_config"""
    _fields_ = [
        ("nr_rules", ctypes.c_uint32),
        ("scope", ctypes.c_uint32),
        ("fallback_action", ctypes.c_uint32),
        ("fallback_tier", ctypes.c_uint32),
        ("fallback_by", ctypes.c_uint32),
        ("needs", ctypes.c_uint32),
    ]


class State(ctypes.Structure):
    """struct ebpf_oom_state (written by the program; read by tests and benchmarks)"""
    _fields_ = [
        ("oc", ctypes.c_uint64),
        ("points", ctypes.c_int64),
        ("scans", ctypes.c_uint64),
        ("evaluated", ctypes.c_uint64),
        ("cache_css", ctypes.c_uint64),
        ("cache_comm", ctypes.c_uint64 * 2),
        ("chosen", ctypes.c_uint64),
        ("cache_uid", ctypes.c_uint32),
        ("cache_rule", ctypes.c_int32),
        ("cache_valid", ctypes.c_uint32),
        ("have", ctypes.c_uint32),
        ("tier", ctypes.c_uint32),
        ("shadow", ctypes.c_uint32),
    ]


class Task(ctypes.Structure):
    """struct ebpf_oom_task (a record of the task iterator)"""
    _fields_ = [
        ("cgroup_id", ctypes.c_uint64),
        ("rss", ctypes.c_uint64),
        ("swap", ctypes.c_uint64),
        ("pgtables", ctypes.c_uint64),
        ("points", ctypes.c_int64),
        ("pid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("rule", ctypes.c_int32),
        ("action", ctypes.c_uint32),
        ("tier", ctypes.c_uint32),
        ("by", ctypes.c_uint32),
        ("oom_score_adj", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
        ("comm", ctypes.c_char * EBPF_OOM_COMM_LEN),
    ]


EBPF_OOM_T_IN_MEMCG = 1
EBPF_OOM_T_REAPED = 2
EBPF_OOM_T_VFORK = 4
EBPF_OOM_T_VICTIM = 8

# The score_adj backend's events (oom_adj_events) and the processes it wrote (oom_adjusted).
EBPF_OOM_EVENTS_BYTES = 262144
EBPF_OOM_ADJUSTED_MAX = 65536
EBPF_OOM_NS_PER_TICK = 10000000


class Imagined(ctypes.Structure):
    """struct ebpf_oom_imagined (the value of oom_imagined)"""
    _fields_ = [
        ("totalpages", ctypes.c_uint64),
        ("memcg_id", ctypes.c_uint64),
        ("memcg_level", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class Adjusted(ctypes.Structure):
    """struct ebpf_oom_adjusted (a value of oom_adjusted)"""
    _fields_ = [
        ("start_ns", ctypes.c_uint64),
        ("original", ctypes.c_int32),
        ("written", ctypes.c_int32),
    ]


EBPF_OOM_EV_EXEC = 1
EBPF_OOM_EV_RENAME = 2
EBPF_OOM_EV_ATTACH = 3
EBPF_OOM_EV_FORK = 4
EBPF_OOM_EV_CREDS = 5


class AdjEvent(ctypes.Structure):
    """struct ebpf_oom_adj_event (a record of the oom_adj_events ring buffer)"""
    _fields_ = [
        ("pid", ctypes.c_uint32),
        ("parent", ctypes.c_uint32),
        ("rule", ctypes.c_int32),
        ("action", ctypes.c_uint32),
        ("tier", ctypes.c_uint32),
        ("reason", ctypes.c_uint32),
        ("oom_score_adj", ctypes.c_int32),
        ("pad", ctypes.c_uint32),
        ("comm", ctypes.c_char * EBPF_OOM_COMM_LEN),
        ("start_ns", ctypes.c_uint64),
    ]


EBPF_OOM_MODE_ENFORCE = 0
EBPF_OOM_MODE_SHADOW = 1
EBPF_OOM_VERDICTS = 64
EBPF_OOM_V_ABORT = 1
EBPF_OOM_V_MEMCG = 2
EBPF_OOM_HAVE_RANKED = 1
EBPF_OOM_HAVE_KERNEL = 2
EBPF_OOM_HAVE_ABORT = 4


class Verdict(ctypes.Structure):
    """struct ebpf_oom_verdict (a slot of oom_shadow_log)"""
    _fields_ = [
        ("seq", ctypes.c_uint64),
        ("start_ns", ctypes.c_uint64),
        ("end_ns", ctypes.c_uint64),
        ("cgroup_id", ctypes.c_uint64),
        ("points", ctypes.c_int64),
        ("pid", ctypes.c_uint32),
        ("rule", ctypes.c_int32),
        ("action", ctypes.c_uint32),
        ("tier", ctypes.c_uint32),
        ("killed", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("comm", ctypes.c_char * EBPF_OOM_COMM_LEN),
    ]


class ShadowScan(ctypes.Structure):
    """struct ebpf_oom_shadow_scan (written by the programs only)"""
    _fields_ = [
        ("ranked", Verdict),
        ("kernel", Verdict),
        ("open", ctypes.c_uint32),
        ("have", ctypes.c_uint32),
        ("judged", ctypes.c_uint32),
        ("killed", ctypes.c_uint32),
    ]


class ShadowStats(ctypes.Structure):
    """struct ebpf_oom_shadow_stats (the value of oom_shadow_stats)"""
    _fields_ = [
        ("judged", ctypes.c_uint64),
        ("kills", ctypes.c_uint64),
        ("disagreements", ctypes.c_uint64),
    ]


# C struct name -> ctypes mirror
STRUCTS = {"ebpf_oom_rule": Rule, "ebpf_oom_config": Config, "ebpf_oom_state": State,
           "ebpf_oom_path": Path, "ebpf_oom_task": Task, "ebpf_oom_adj_event": AdjEvent,
           "ebpf_oom_adjusted": Adjusted, "ebpf_oom_imagined": Imagined,
           "ebpf_oom_verdict": Verdict, "ebpf_oom_shadow_scan": ShadowScan,
           "ebpf_oom_shadow_stats": ShadowStats}

# ---- bpf/generic.bpf.c -----------------------------------------------------

GENERIC_SOURCE = os.path.join("bpf", "generic.bpf.c")  # relative to the collection root
RULES_MAP = "oom_rules"
CONFIG_MAP = "oom_config"
STATE_MAP = "oom_state"
PATHS_MAP = "oom_cgroup_paths"    # rule paths -> the rules naming them (written here)
LIVE_MAP = "oom_rule_cgroups"     # rule index -> id of the cgroup at its path now (kept live)
# The hand-over between two instances of a policy: the map both share, the global that
# names each instance (its token), the program that ends an OOM's latch.
DECIDER_MAP = "oom_decider"
TOKEN_GLOBAL = "ebpf_oom_token"
DONE_PROGRAM = "ebpf_oom_done"
# The programs: the hook backend's two, the two that follow cgroups by path, the iterator.
NAME_PROGRAM = "ebpf_oom_name"
EVAL_PROGRAM = "ebpf_oom_eval"
CGROUP_PROGRAMS = ("ebpf_oom_cgroup_mkdir", "ebpf_oom_cgroup_rmdir")
TASKS_PROGRAM = "ebpf_oom_tasks"
# The score_adj backend's programs on the events that can change a process's class,
# its ring buffer, the processes its agent wrote, and the count of events lost.
ADJ_PROGRAMS = ("ebpf_oom_adj_exec", "ebpf_oom_adj_rename", "ebpf_oom_adj_attach",
                "ebpf_oom_adj_fork", "ebpf_oom_adj_exit")
# ... and the one on new credentials: fexit, loaded where the kernel allows tracing programs.
CREDS_PROGRAM = "ebpf_oom_adj_creds"
CREDS_FUNC = "commit_creds"
EVENTS_MAP = "oom_adj_events"
ADJUSTED_MAP = "oom_adjusted"
LOST_MAP = "oom_adj_lost"
# Shadow mode (generic.h): the mode map (key 0, a __u32 EBPF_OOM_MODE_*), the programs
# that judge without deciding and note the kernel's victim, the verdicts and their counts.
MODE_MAP = "oom_mode"
SHADOW_PROGRAMS = ("ebpf_oom_shadow", "ebpf_oom_shadow_kill")
SHADOW_LOG_MAP = "oom_shadow_log"
SHADOW_STATS_MAP = "oom_shadow_stats"
MODES = {"enforce": EBPF_OOM_MODE_ENFORCE, "shadow": EBPF_OOM_MODE_SHADOW}
# The OOM the task iterator imagines (struct ebpf_oom_imagined, key 0).
IMAGINED_MAP = "oom_imagined"
# The longest cgroup path a rule may name: a longer one could not be told from a
# path the kernel cuts to EBPF_OOM_PATH_LEN - 1 bytes.
CGROUP_PATH_MAX = EBPF_OOM_PATH_LEN - 2
