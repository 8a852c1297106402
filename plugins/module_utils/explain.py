# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Explain before it happens: which task an OOM would kill now, and why, with nothing killed.

Layer 5 (above the loader): imports the loader (its trusted open), cgrouprules, maps,
pins, the score_adj bands, the layout, the renderer, the kernel binding and the leaf
helpers.

The generic program's task iterator (ebpf_oom_tasks in bpf/generic.bpf.c) walks every
task and classifies each candidate of the imagined OOM with the same code and the same
rule maps the victim-selection program uses (bpf/classify.h), and computes its points
as oom_badness() does with the imagined OOM's totalpages (written into its map
oom_imagined before each run). A loaded policy (`name`) is explained by its own
iterator, pinned with it: nothing is loaded. Otherwise (a document, or a policy loaded
by an older collection version) it runs from a private load of the object (nothing is
pinned, nothing attached stays), trusted as the loader trusts one (owned by root,
writable by no one else: a loaded policy's maps are bound in, writable), over the
policy's own pinned maps or over a private copy rendered from a document. It needs BTF
and task iterators only, no hook, so a document can be previewed on a stock kernel.

explain(object_path, oom=None, name=None, document=None, top=5, backend=None) -> dict
    victim, ranking (the order successive OOMs would kill in), kernel_victim (the
    kernel's own choice without the policy), counts, no_victim, acts (whether the
    policy acts in this kind of OOM), backend, warnings. See rank() for the rules of
    the hook; under the score_adj backend (a loaded policy's record says so, or
    ``backend`` for a document) the kernel's own heuristic chooses, with the values
    the agent writes: steered() ranks by that badness.
What it cannot see: processes that start, grow or shrink between now and the OOM,
and the kernel's cpuset and mempolicy eligibility; a C policy (its own program) is
refused, as only the shared classification can be replayed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import ctypes
import json
import os

from . import abi, bpffs, cgroups, cgrouprules, language, libbpf, loader, pins, renderer, scoreadj
from .errors import BpfError, ExplainError
from .maps import map_spec, sync_map

PAGE_SIZE = 4096
MEMINFO = "/proc/meminfo"
SHARED_MAPS = (abi.RULES_MAP, abi.CONFIG_MAP, abi.PATHS_MAP, abi.LIVE_MAP)
ACTION_NAMES = dict((a.number, a.name) for a in language.ACTIONS)
BY_NAMES = dict((v, k) for k, v in language.BY.items())
POINTS_MIN = -(1 << 63)
ZERO_KEY = (0).to_bytes(4, "little")


class Imagined(object):
    """The OOM to imagine: global, or the memory cgroup at `path` running out."""

    def __init__(self, path=None):
        self.path = path
        self.memcg_id = self.level = 0
        self.notes = []
        machine = machine_pages()
        self.totalpages = machine
        if path is None:
            return
        problem = language.cgroup_path_problem(path)
        if problem:
            raise ExplainError("oom.memcg: %s" % problem)
        mount = cgrouprules.v2_mount()
        self.memcg_id = cgrouprules.cgroup_id(path, mount)
        if not self.memcg_id:
            raise ExplainError("oom.memcg: no cgroup lives at %s on this host" % path)
        self.level = language.cgroup_level(path)
        limit = memcg_limit_pages(path, mount)
        if limit is None:
            self.notes.append("%s and its ancestors set no memory.max: points are computed with "
                              "the machine's RAM and swap" % path)
        else:
            self.totalpages = min(limit, machine) or 1

    @property
    def kind(self):
        return "memcg" if self.path else "global"


def machine_pages(meminfo=MEMINFO):
    """RAM + swap in pages, as the kernel's totalpages of a global OOM."""
    with open(meminfo) as f:
        fields = dict((line.split(":")[0], line.split()[1]) for line in f if ":" in line)
    return (int(fields["MemTotal"]) + int(fields.get("SwapTotal", 0))) * 1024 // PAGE_SIZE


def memcg_limit_pages(path, mount):
    """memory.max (+ memory.swap.max) in pages of path or its nearest limited ancestor."""
    point, root = mount
    parts = [p for p in path[len(root.rstrip("/")):].split("/") if p]
    for depth in range(len(parts), 0, -1):
        here = os.path.join(point, *parts[:depth])
        limit = _read_limit(os.path.join(here, "memory.max"))
        if limit is not None:
            swap = _read_limit(os.path.join(here, "memory.swap.max")) or 0
            return (limit + swap) // PAGE_SIZE
    return None


def _read_limit(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return None if text == "max" else int(text)


# ---------------------------------------------------------------- the iterator

def _imagined(imagined):
    """The oom_imagined value of an Imagined OOM."""
    value = abi.Imagined()
    value.totalpages, value.memcg_id, value.memcg_level = \
        imagined.totalpages, imagined.memcg_id, imagined.level
    return bytes(value)


@contextlib.contextmanager
def iterator(object_path, imagined, name=None, document=None):
    """The generic program's task iterator, loaded privately over a loaded policy's maps or
    a document's, as a link (link.read_iter() runs it); unloaded at the end."""
    obj = loader.open_object(object_path, ExplainError)
    link = None
    try:
        obj.select([abi.TASKS_PROGRAM])
        rendered = None
        if name is not None:
            _reuse_policy_maps(obj, name)
        else:
            rendered = renderer.render(document)
        obj.load()
        libbpf.map_update(obj.map(abi.IMAGINED_MAP).fd, ZERO_KEY, _imagined(imagined))
        if rendered is not None:
            _fill(obj, rendered)
        (program,) = obj.programs()
        link = program.attach()
        yield link
    except BpfError as exc:
        raise ExplainError("the task iterator did not run: %s" % exc.message, exc.log_tail)
    finally:
        if link is not None:
            link.close()
        obj.close()


def pinned_records(name, imagined):
    """The bytes a loaded policy's own pinned task iterator writes for the imagined OOM
    (backends pin it with the policy): nothing is loaded. None when the policy has no
    such iterator (loaded by an older collection version). One imagined OOM at a time:
    the value is written and the iterator run under the bpffs lock."""
    root = bpffs.mounted_root()
    layout = bpffs.Layout(root or bpffs.roots()[0], name)
    link, value = layout.link(abi.TASKS_PROGRAM), layout.map(abi.IMAGINED_MAP)
    if root is None or not (os.path.lexists(link) and os.path.lexists(value)):
        return None
    try:
        with bpffs.locked(root):
            with libbpf.pinned(value) as fd:
                libbpf.map_update(fd, ZERO_KEY, _imagined(imagined))
            with libbpf.pinned(link) as fd:
                return libbpf.iter_read(fd, abi.TASKS_PROGRAM)
    except BpfError as exc:
        raise ExplainError("the task iterator of policy %s did not run: %s" % (name, exc.message),
                           exc.log_tail)


def snapshot(object_path, imagined, name=None, document=None):
    """The iterator's records (abi.Task) over a loaded policy's maps (its own pinned
    iterator when it has one) or a document's."""
    data = pinned_records(name, imagined) if name is not None else None
    if data is None:
        with iterator(object_path, imagined, name, document) as link:
            data = link.read_iter()
    size = ctypes.sizeof(abi.Task)
    return [abi.Task.from_buffer_copy(data[at:at + size])
            for at in range(0, len(data) - size + 1, size)]


def _reuse_policy_maps(obj, name):
    layout = bpffs.Layout(bpffs.roots()[0], name)
    for map_name in SHARED_MAPS:
        pin = layout.map(map_name)
        if not os.path.lexists(pin):
            raise ExplainError("policy %s has no pinned map %s: it is not a declarative policy "
                               "of this collection version" % (name, map_name))
        with libbpf.pinned(pin) as fd:
            obj.map(map_name).reuse_fd(fd)


def _fill(obj, rendered):
    """A document's map data into the private maps, and the live cgroups of its rules."""
    for map_name, entries in rendered.maps.items():
        m = obj.map(map_name)
        spec = map_spec(map_name, m.type, m.key_size, m.value_size, m.max_entries, entries)
        sync_map(m.fd, map_name, spec)
    cgrouprules.sync(obj.map(abi.LIVE_MAP).fd, rendered.cgroup_rules)


# ---------------------------------------------------------------- the ranking

def killable(t):
    return t.points != POINTS_MIN


def _scan(tasks, imagined):
    """(candidates, the killable ones, those by the kernel's own points, the answer of an
    OOM the policy leaves to the kernel): what rank() and steered() start from."""
    candidates = [t for t in tasks if not imagined.path or t.flags & abi.EBPF_OOM_T_IN_MEMCG]
    alive = [t for t in candidates if killable(t)]
    kernel_order = sorted(alive, key=lambda t: -t.points)
    out = {"candidates": len(candidates), "unkillable": len(candidates) - len(alive),
           "kernel_victim": kernel_order[0] if kernel_order else None, "acts": False,
           "waits_for": [t for t in candidates if t.flags & abi.EBPF_OOM_T_VICTIM],
           "aborted_by": [], "protected": 0, "unranked": 0, "safety_net": False,
           "order": kernel_order}
    return candidates, alive, kernel_order, out


def rank(tasks, config, imagined):
    """What the imagined OOM does, from the records and the policy's config (abi.Config,
    None: no policy). Mirrors the kernel's scan with the generic program on the hook:
      - only candidates of this OOM count (for a memcg OOM, tasks in its subtree);
      - a task the kernel cannot kill (oom_score_adj -1000, reaped, in vfork) never dies;
      - an OOM victim still exiting: the kernel waits for it, nobody dies now;
      - abort (memcg OOMs): while a matching task is a candidate, nobody dies;
      - select and prefer tasks die first, by (tier, points of their `by`);
      - then the others, by the kernel's own points, protected ones never;
      - a global OOM with every killable task protected: the hook kernel's safety net
        lets its own heuristic choose (a kernel without it panics)."""
    candidates, alive, kernel_order, out = _scan(tasks, imagined)
    if config is None or not config.scope & (abi.EBPF_OOM_SCOPE_MEMCG if imagined.path
                                             else abi.EBPF_OOM_SCOPE_GLOBAL):
        return out
    out["acts"] = True
    act = abi
    out["aborted_by"] = [t for t in candidates if t.action == act.EBPF_OOM_ACT_ABORT]
    ranked = sorted((t for t in alive if t.action in (act.EBPF_OOM_ACT_SELECT, act.EBPF_OOM_ACT_PREFER)),
                    key=lambda t: (t.tier, -(t.rss if t.by == act.EBPF_OOM_BY_RSS else t.points)))
    rest = [t for t in kernel_order if t.action == act.EBPF_OOM_ACT_KERNEL]
    protected = [t for t in kernel_order if t.action == act.EBPF_OOM_ACT_PROTECT]
    out["protected"], out["unranked"] = len(protected), len(rest)
    out["order"] = ranked + rest
    if not out["order"] and not imagined.path and protected:
        out["order"], out["safety_net"] = protected, True
    return out


def steered(tasks, imagined, adj_of):
    """What the imagined OOM does on a kernel without the hook, whose own heuristic the
    score_adj backend steers: every candidate the kernel can kill, by oom_badness() with
    the oom_score_adj ``adj_of(task)`` gives it (rss + swap + page tables, plus the value
    times totalpages / 1000; -1000: never). {pid: (value, points)} is in "steered"."""
    candidates, _alive, _kernel_order, out = _scan(tasks, imagined)
    unit = imagined.totalpages // 1000
    values = {}
    for t in candidates:
        value = adj_of(t)
        never = value == scoreadj.ADJ_MIN or t.flags & (abi.EBPF_OOM_T_REAPED | abi.EBPF_OOM_T_VFORK)
        values[t.pid] = (value, POINTS_MIN if never else t.rss + t.swap + t.pgtables + value * unit)
    order = sorted((t for t in candidates if values[t.pid][1] != POINTS_MIN), key=lambda t: -values[t.pid][1])
    out.update(acts=True, order=order, steered=values, unkillable=len(candidates) - len(order),
               protected=sum(1 for t in candidates if t.action == abi.EBPF_OOM_ACT_PROTECT),
               unranked=sum(1 for t in order if t.action == abi.EBPF_OOM_ACT_KERNEL))
    return out


# ---------------------------------------------------------------- the answer

def explain(object_path, oom=None, name=None, document=None, top=5, backend=None):
    """Which task an OOM would kill now (see the file's docstring)."""
    if (name is None) == (document is None):
        raise ExplainError("give the name of a loaded policy or a document, not both")
    imagined = Imagined(oom)
    if name is not None:
        record = _declarative_record(name)
        document, backend = record["document"], record.get("backend")
    rendered = renderer.render(document)
    config = abi.Config.from_buffer_copy(rendered.maps[abi.CONFIG_MAP][0][1])
    tasks = snapshot(object_path, imagined, name=name, document=None if name else document)
    warnings = list(imagined.notes)
    if backend == scoreadj.BACKEND:
        # Loaded: the values the processes carry now (the agent wrote them); a preview:
        # each rule's band, the others keep theirs.
        bands = scoreadj.Bands(document) if name is None else None

        def adj_of(t):
            band = bands.value(t.rule) if bands is not None else None
            return t.oom_score_adj if band is None else band

        ranked = steered(tasks, imagined, adj_of)
        warnings.append("backend score_adj: the kernel's own heuristic chooses, by its badness with "
                        "the oom_score_adj values %s; the ranking is that badness"
                        % ("the policy's agent wrote" if name is not None else "the policy would write"))
    else:
        ranked = rank(tasks, config, imagined)
    paths = cgroup_paths(set(t.cgroup_id for t in tasks))
    rules = document.get("rules") or []

    def describe(t, decided=True):
        if t is None:
            return None
        rule = rules[t.rule] if 0 <= t.rule < len(rules) else None
        value, points = ranked.get("steered", {}).get(t.pid, (t.oom_score_adj, t.points)) if decided \
            else (t.oom_score_adj, t.points)
        return {"pid": t.pid, "comm": t.comm.decode("ascii", "replace"), "uid": t.uid,
                "cgroup": paths.get(t.cgroup_id, "?"), "rss_kb": t.rss * PAGE_SIZE // 1024,
                "points": points, "oom_score_adj": value,
                "rule": {"index": t.rule, "text": json.dumps(rule, sort_keys=True)} if rule else None,
                "action": ACTION_NAMES.get(t.action, "?") if decided else "kernel",
                "tier": t.tier, "by": BY_NAMES.get(t.by, "?")}

    blocked = ranked["waits_for"] or ranked["aborted_by"]
    order = [] if blocked else ranked["order"]
    no_victim = bool(ranked["acts"] and (not order or ranked["safety_net"]))
    if ranked["aborted_by"]:
        warnings.append("an abort rule matches a candidate (pid %s): this OOM kills nobody and the "
                        "allocation waits" % ", ".join(str(t.pid) for t in ranked["aborted_by"]))
    elif ranked["waits_for"]:
        warnings.append("an OOM victim is still exiting (pid %s): the kernel waits for it"
                        % ", ".join(str(t.pid) for t in ranked["waits_for"]))
    elif no_victim:
        warnings.append("every candidate of this %s OOM is protected or unkillable: %s"
                        % (imagined.kind, "the hook kernel's safety net lets its own heuristic "
                           "choose (a kernel without it panics)" if ranked["safety_net"]
                           else "nobody is killed and the allocation fails or waits"))
    return {
        "policy": document.get("name"),
        "backend": backend,
        "oom": {"kind": imagined.kind, "memcg": imagined.path, "totalpages": imagined.totalpages},
        "policy_acts": ranked["acts"],
        "victim": describe(order[0], ranked["acts"]) if order else None,
        "ranking": [describe(t, ranked["acts"]) for t in order[:top]],
        "kernel_victim": describe(ranked["kernel_victim"], decided=False),
        "no_victim": no_victim,
        "counts": {"candidates": ranked["candidates"], "protected": ranked["protected"],
                   "unkillable": ranked["unkillable"], "unranked": ranked["unranked"]},
        "warnings": warnings,
    }


def _declarative_record(name):
    root = bpffs.mounted_root()
    record = pins.read_record(bpffs.Layout(root, name)) if root else None
    if record is None:
        raise ExplainError("no policy %s is loaded on this host" % name)
    if record.get("document") is None:
        raise ExplainError("policy %s is a C policy (its own BPF program): only declarative "
                           "policies can be explained, as their classification is the "
                           "collection's shared code" % name)
    return record


def cgroup_paths(ids):
    """{cgroup v2 id: path as the kernel writes it} for the ids given."""
    mount = cgrouprules.v2_mount()
    return cgroups.memcg_paths(ids, mount) if mount else {}
