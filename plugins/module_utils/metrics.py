# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""OOM kill metrics for node_exporter's textfile collector, counted so that they only grow,
and what the host's policies do now (loaded? what do their cgroup rules match?).

Layer 5 (callers): imports verify (whether a policy runs as recorded, what its cgroup rules
match), state and pins (which policies there are), the layout (for the state dir), the
observer (what pairs two records of one kill) and the leaf helpers.  Fed with
events.collect()'s result by ebpf.oom.events_info and by `ebpf-oom events --metrics-file`
(cli.py).

Labels stay bounded: a kill is counted by policy, by the policy's cgroup rule whose path
holds the victim's memory cgroup (`rule`) and by that cgroup's path cut to `cgroup_depth`
levels (`cgroup`), never by a full path that names a pod or a job.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from . import bpffs, pins, state as kept, verify
from .errors import LoaderError
from .files import read_text, write_atomic
from .observer import MATCH_WINDOW_S, OBSERVER_NAME

METRIC_PREFIX = "ebpf_oom_"
UNKNOWN = "unknown"
NO_RULE = "none"
CGROUP_DEPTH = 1
BOOT_ID = "/proc/sys/kernel/random/boot_id"
# In the state dir: what the metrics writer counted, so that its counters only grow
# while the kernel log scrolls away and the observer's ring wraps.
METRICS_STATE = "metrics-state.json"


def _label(value):
    text = UNKNOWN if value is None else str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def cut(path, depth):
    """A cgroup path cut to its first `depth` levels ('/a/b/c', 1 -> '/a'; 0 -> '/')."""
    if path is None:
        return UNKNOWN
    return "/" + "/".join([p for p in path.split("/") if p][:depth])


def covering_rule(memcg, rule_paths):
    """The deepest of a policy's cgroup rule paths that is `memcg` or one of its ancestors:
    the rule whose cgroup held the victim; NO_RULE when none does."""
    if memcg is None:
        return UNKNOWN
    found = [p for p in rule_paths
             if p == "/" or memcg == p.rstrip("/") or memcg.startswith(p.rstrip("/") + "/")]
    return max(found, key=len) if found else NO_RULE


def kill_labels(ev, rules, depth):
    """(policy, rule, cgroup) of a kill event; `rules` is {policy: {rule path: ...}}."""
    if ev["policy"] is None:
        return UNKNOWN, UNKNOWN, cut(ev["memcg"], depth)
    return ev["policy"], covering_rule(ev["memcg"], rules.get(ev["policy"], {})), cut(ev["memcg"], depth)


def count_kills(events, state, boot_id, rules=None, depth=CGROUP_DEPTH):
    """The next counting state after seeing `events` (all known ones), from the last `state`.

    State: boot_id; labels (the label scheme); totals and last ({json [policy, rule,
    cgroup]: kills since boot / the latest kill's Unix time}); seen [[pid, monotonic]], the
    events still known. An event counts once, with the labels of its first sight (`rules`,
    {policy: {rule path: ...}}, the policies' cgroup rules then): it stays "seen" while either
    source still has it (same pid, close in time), whether the kernel log, the observer or
    both report it. A new boot, or another label scheme (`depth`), starts from zero."""
    scheme = "policy,rule,cgroup/%d" % depth
    fresh = (not isinstance(state, dict) or state.get("boot_id") != boot_id
             or state.get("labels") != scheme)
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
            key = json.dumps(list(kill_labels(ev, rules or {}, depth)))
            totals[key] = totals.get(key, 0) + 1
            if ev["timestamp"] is not None:
                last[key] = max(last.get(key, 0), ev["timestamp"])
            match = [ev["pid"], ev["monotonic"]]
        else:
            old.remove(match)
        seen.append(match)
    return {"boot_id": boot_id, "labels": scheme, "totals": totals, "last": last, "seen": seen}


def policy_status():
    """What the host's policies do now: {loaded: {policy: 1 when it is loaded and verifies,
    else 0}, rules: {policy: {cgroup rule path: live cgroups it matches}}}, for every policy
    recorded for the boot restore or loaded (never the observer)."""
    names = set(kept.saved_names()) | set(pins.policy_names(bpffs.mounted_root()))
    out = {"loaded": {}, "rules": {}}
    for name in sorted(names - {OBSERVER_NAME}):
        try:
            found = verify.verify(name=name)
        except LoaderError:  # not a policy name: nothing of ours runs under it
            found = {"policies": [], "problems": [name]}
        out["loaded"][name] = 1 if found["policies"] and not found["problems"] else 0
        for facts in found["policies"]:
            if facts.get("cgroups"):
                out["rules"][name] = dict((path, len(ids)) for path, ids in facts["cgroups"].items())
    return out


def metrics_text(state, observer, status=None, judged=()):
    """The metrics file's text: `state` from count_kills(), `observer` as collect() returns it,
    `status` from policy_status(), `judged` collect()'s shadow_policies."""
    status = status or {"loaded": {}, "rules": {}}

    def labelled(table, fmt):
        rows = sorted((tuple(_label(v) for v in json.loads(k)), value) for k, value in table.items())
        return [('{policy="%s",rule="%s",cgroup="%s"}' % key, fmt % value) for key, value in rows]

    out = []

    def family(name, kind, help_text, samples):
        out.append("# HELP %s%s %s" % (METRIC_PREFIX, name, help_text))
        out.append("# TYPE %s%s %s" % (METRIC_PREFIX, name, kind))
        for labels, value in samples:
            out.append("%s%s%s %s" % (METRIC_PREFIX, name, labels, value))

    family("kills_total", "counter", "OOM kills since boot by policy, the policy's cgroup rule that "
           "held the victim, and the victim's memory cgroup cut to a few levels (as first seen in "
           "the kernel log or by the observer).", labelled(state["totals"], "%d"))
    family("last_kill_timestamp_seconds", "gauge",
           "Time of the latest OOM kill by policy, rule and cgroup.", labelled(state.get("last", {}), "%.3f"))
    family("observer_loaded", "gauge", "1 when the OOM observer is loaded.",
           [("", "1" if observer.get("loaded") else "0")])
    if observer.get("loaded"):
        family("observer_kills_total", "counter",
               "Every OOM victim the kernel marked since the observer was loaded.",
               [("", "%d" % (observer.get("kills") or 0))])
    family("policy_loaded", "gauge", "1 for a policy that is loaded and verifies, 0 for one "
           "recorded for the boot restore but not loaded (or not as recorded).",
           [('{policy="%s"}' % _label(name), "%d" % value) for name, value in sorted(status["loaded"].items())])
    family("rule_matches", "gauge", "Live cgroups each cgroup rule of a loaded declarative policy "
           "matches now (0: the rule matches nothing).",
           [('{policy="%s",rule="%s"}' % (_label(name), _label(path)), "%d" % count)
            for name, rules in sorted(status["rules"].items()) for path, count in sorted(rules.items())])
    family("shadow_kills_total", "counter", "OOM kills a policy judged in shadow mode since it was "
           "loaded (it recorded the victim it would have chosen).",
           [('{policy="%s"}' % _label(p["policy"]), "%d" % p["kills"]) for p in judged])
    family("shadow_disagreements_total", "counter", "Of those, the kills whose victim is not the task "
           "the policy would have killed.",
           [('{policy="%s"}' % _label(p["policy"]), "%d" % p["disagreements"]) for p in judged])
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


def update_metrics(path, found, check_mode=False, force=False, state_dir=None,
                   cgroup_depth=CGROUP_DEPTH, status=None):
    """Count the kills of collect()'s result `found` and write the metrics file `path`.

    `status` is policy_status() (looked up when None). The counting state lives in the
    state dir (bpffs.roots()'s, 0600); neither it nor the file is written in check mode.
    Returns (changed, old text or None, new text)."""
    status = policy_status() if status is None else status
    state_path = os.path.join(state_dir or bpffs.roots()[1], METRICS_STATE)
    try:
        state = json.loads(read_text(state_path) or "null")
    except ValueError:
        state = None
    boot_id = (read_text(BOOT_ID) or "").strip()
    state = count_kills(found["all_events"], state, boot_id, status["rules"], cgroup_depth)
    text = metrics_text(state, found["observer"], status, found.get("shadow_policies", ()))
    changed, before = write_metrics(path, text, check_mode=check_mode, force=force)
    if not check_mode:
        if not os.path.isdir(os.path.dirname(state_path)):
            os.makedirs(os.path.dirname(state_path), 0o755)
        write_atomic(state_path, json.dumps(state, sort_keys=True), 0o600)
    return changed, before, text
