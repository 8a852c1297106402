# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shadow mode: what the policies that judge OOMs without deciding them would have done.

Layer 4 (beside the loader, reading what it pinned): imports pins, the cgroup rules, the
observer (its time window), the layout, the policy language, the kernel binding and the
leaf helpers; read-only.

A declarative policy on the hook backend runs in one of two modes (bpf/generic.h): it
decides each OOM (`enforce`), or judges every candidate of every OOM as it would and
decides none (`shadow`), logging per OOM the task it would have killed and the task the
kernel killed, and counting the OOMs it judged, the ones that ended in a kill, and of
those the ones whose victim was not its choice.  read() reads that for every policy
that has it; pair() hangs each verdict on the kill event it concerns.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os

from . import abi, bpffs, cgrouprules, cgroups, language, libbpf, pins
from .observer import MATCH_WINDOW_S, c_string, check_value_size

DEFAULT_MODE = language.MODES[0]


def mode_of(document):
    """The mode a policy document asks for."""
    return (document or {}).get("mode", DEFAULT_MODE)


def live_mode(layout):
    """The mode the policy's programs run in now (its mode map), or None without one."""
    pin = layout.map(abi.MODE_MAP)
    if not os.path.exists(pin):
        return None
    with libbpf.pinned(pin) as fd:
        raw = libbpf.map_lookup(fd, bytes(4), 4)
    value = int.from_bytes(raw or bytes(4), "little")
    return dict((v, k) for k, v in abi.MODES.items()).get(value, "unknown (%d)" % value)


def _rule_name(index):
    return "fallback" if index < 0 else language.rule_path(index)


def verdict(v, paths):
    """One logged verdict (abi.Verdict) as a dict; ``paths``: {cgroup id: path}."""
    would = None
    if v.pid:
        would = {"pid": v.pid, "comm": c_string(v.comm),
                 "cgroup": paths.get(v.cgroup_id), "rule": _rule_name(v.rule), "tier": v.tier}
    return {"seq": v.seq, "start": v.start_ns / 1e9, "end": v.end_ns / 1e9,
            "memcg_oom": bool(v.flags & abi.EBPF_OOM_V_MEMCG),
            "would_abort": bool(v.flags & abi.EBPF_OOM_V_ABORT),
            "would_kill": would, "killed": v.killed or None,
            "agrees": bool(v.killed) and v.killed == v.pid}


def read_policy(layout):
    """What policy ``layout`` judged in shadow: dict(policy, mode, judged, kills,
    disagreements, verdicts (oldest first)), or None when it has no shadow log."""
    log_pin, stats_pin = layout.map(abi.SHADOW_LOG_MAP), layout.map(abi.SHADOW_STATS_MAP)
    if not (os.path.exists(log_pin) and os.path.exists(stats_pin)):
        return None
    with libbpf.pinned(stats_pin) as stats_fd, libbpf.pinned(log_pin) as log_fd:
        for fd, struct, pin in ((stats_fd, abi.ShadowStats, stats_pin), (log_fd, abi.Verdict, log_pin)):
            check_value_size(fd, struct, pin, "apply the policy again")
        raw = libbpf.map_lookup(stats_fd, bytes(4), ctypes.sizeof(abi.ShadowStats))
        items = libbpf.map_items(log_fd)
    stats = abi.ShadowStats.from_buffer_copy(raw) if raw else abi.ShadowStats()
    logged = sorted((abi.Verdict.from_buffer_copy(v) for _k, v in items), key=lambda v: v.seq)
    logged = [v for v in logged if v.seq]
    mount = cgrouprules.v2_mount()
    paths = cgroups.memcg_paths(set(v.cgroup_id for v in logged), mount) if mount else {}
    return {"policy": layout.name, "mode": live_mode(layout), "judged": stats.judged,
            "kills": stats.kills, "disagreements": stats.disagreements,
            "verdicts": [verdict(v, paths) for v in logged]}


def read(root=None):
    """read_policy() of every loaded policy that has a shadow log (one that ran in shadow
    mode at some time since it was loaded keeps its verdicts after a switch to enforce)."""
    root = root or bpffs.mounted_root()
    found = []
    for name in pins.policy_names(root):
        layout = bpffs.Layout(root, name)
        if pins.read_record(layout) is None:
            continue
        judged = read_policy(layout)
        if judged is not None and judged["judged"]:
            found.append(judged)
    return found


def pair(events, judged):
    """Each event gains `shadow`: the verdicts of the OOM that killed it, one per policy
    that judged that OOM in shadow ([] when none did). A verdict belongs to the event of
    the task the kernel marked first in that OOM (same pid, its time within the OOM)."""
    for ev in events:
        ev["shadow"] = []
        for policy in judged:
            for v in policy["verdicts"]:
                # the observer stamps the kill inside the OOM; the kernel log (another clock)
                # close to it: the pid is the key, the time tells a reused pid apart
                if v["killed"] == ev["pid"] and \
                        v["start"] - MATCH_WINDOW_S <= ev["monotonic"] <= v["end"] + MATCH_WINDOW_S:
                    ev["shadow"].append({"policy": policy["policy"], "would_kill": v["would_kill"],
                                         "would_abort": v["would_abort"], "agrees": v["agrees"]})
                    break
    return events


def summary(judged):
    """Per policy: mode, OOMs judged, kills, disagreements (events_info's `shadow_policies`)."""
    return [dict((k, p[k]) for k in ("policy", "mode", "judged", "kills", "disagreements"))
            for p in judged]
