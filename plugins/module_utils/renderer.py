# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Declarative policy documents -> the generic program's map data.

A policy document (schemas/policy.schema.json, semantics in
schemas/README.md) is validated against the schema on the controller (the
ebpf.oom.policy action plugin); this file does the rest, on the host that
loads the policy, with the standard library only:

- `check(document)`: what the schema cannot express (the name rule to the letter,
  one ranking per tier);
- `lint(document)`: warnings, e.g. a global-scope policy that can leave a
  global OOM without a victim (the kernel then panics);
- `render(document)`: the map entries and globals for loader.apply(), with
  cgroup paths resolved to this host's cgroup ids (the inode number of the
  cgroup v2 directory).

The ctypes structs and constants below mirror bpf/generic.h name for name;
tests/unit/test_renderer.py checks them against the compiled object's BTF.

Layer 2 (translation): imports only the leaf helpers.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os

from . import cgroups, common
from .errors import RenderError
from .names import name_problem

# ---- bpf/generic.h ---------------------------------------------------------

EBPF_OOM_MAX_RULES = 64
EBPF_OOM_COMM_LEN = 16
EBPF_OOM_MAX_CGROUP_LEVEL = 16
EBPF_OOM_CGROUP_WALK = 64

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

EBPF_OOM_BY_BADNESS = 0
EBPF_OOM_BY_RSS = 1

EBPF_OOM_M_PID = 1
EBPF_OOM_M_COMM = 2
EBPF_OOM_M_CGROUP = 4
EBPF_OOM_M_UID = 8


class Rule(ctypes.Structure):
    """struct ebpf_oom_rule"""
    _fields_ = [
        ("cgroup_id", ctypes.c_uint64),
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
        ("cache_uid", ctypes.c_uint32),
        ("cache_rule", ctypes.c_int32),
        ("cache_valid", ctypes.c_uint32),
        ("have", ctypes.c_uint32),
        ("tier", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


# C struct name -> ctypes mirror
STRUCTS = {"ebpf_oom_rule": Rule, "ebpf_oom_config": Config, "ebpf_oom_state": State}

# ---- bpf/generic.bpf.c -----------------------------------------------------

GENERIC_SOURCE = os.path.join("bpf", "generic.bpf.c")  # relative to the collection root
RULES_MAP = "oom_rules"
CONFIG_MAP = "oom_config"
STATE_MAP = "oom_state"
# A rule naming a cgroup that does not exist here gets this level: it matches nothing.
CGROUP_LEVEL_NONE = EBPF_OOM_MAX_CGROUP_LEVEL + 1

# ---- the document's words ----------------------------------------------------

SCOPES = {"global": EBPF_OOM_SCOPE_GLOBAL, "memcg": EBPF_OOM_SCOPE_MEMCG,
          "both": EBPF_OOM_SCOPE_GLOBAL | EBPF_OOM_SCOPE_MEMCG}
ACTIONS = {"kernel": EBPF_OOM_ACT_KERNEL, "protect": EBPF_OOM_ACT_PROTECT,
           "prefer": EBPF_OOM_ACT_PREFER, "select": EBPF_OOM_ACT_SELECT,
           "abort": EBPF_OOM_ACT_ABORT}
BY = {"badness": EBPF_OOM_BY_BADNESS, "rss": EBPF_OOM_BY_RSS}
DEFAULT_SCOPE = "both"
DEFAULT_FALLBACK = "kernel"
DEFAULT_BY = "badness"


class Rendered:
    """What loader.apply() needs: globals and maps; plus warnings and resolved cgroups."""

    def __init__(self, name, variables, maps, warnings, resolved):
        self.name = name
        self.globals = variables    # {variable: value}
        self.maps = maps            # {map name: [(key int, value bytes), ...]}
        self.warnings = warnings    # [str]
        self.cgroups = resolved     # {path: {"id": int, "level": int} or None (missing)}


def rule_path(i, field=None):
    return "rules[%d]" % i + ("." + field if field else "")


def normalize(document):
    """The document with defaults filled in: scope, fallback (as a mapping) and by."""
    if not isinstance(document, dict):
        raise RenderError("(document): must be a mapping, not %s" % type(document).__name__)
    doc = dict(document)
    doc.setdefault("scope", DEFAULT_SCOPE)
    fallback = doc.get("fallback", DEFAULT_FALLBACK)
    if isinstance(fallback, str):
        fallback = {"action": fallback}
    fallback = dict(fallback)
    if fallback.get("action") == "prefer":
        fallback.setdefault("by", DEFAULT_BY)
    doc["fallback"] = fallback
    rules = []
    for rule in doc.get("rules") or []:
        rule = dict(rule)
        if rule.get("action") == "prefer":
            rule.setdefault("by", DEFAULT_BY)
        rules.append(rule)
    doc["rules"] = rules
    return doc


def check(document):
    """Errors ('path: reason') the schema cannot see: the name rule to the letter (a JSON
    Schema pattern's `$` lets a trailing newline through), and every rule of a tier ranks
    the same way."""
    doc = normalize(document)
    errors = []
    problem = name_problem(doc.get("name"))
    if problem:
        errors.append("name: %s" % problem)
    tiers = {}  # tier -> (by, where)
    ranked = [(rule_path(i), r) for i, r in enumerate(doc["rules"])] + [("fallback", doc["fallback"])]
    for where, rule in ranked:
        if rule.get("action") != "prefer":
            continue
        tier, by = rule.get("tier"), rule.get("by")
        if tier in tiers and tiers[tier][0] != by:
            errors.append("%s.by: tier %s is ranked by '%s' in %s; every rule of a tier must rank "
                          "the same way" % (where, tier, tiers[tier][0], tiers[tier][1]))
        tiers.setdefault(tier, (by, where))
    return errors


def _catch_all(match):
    return match == {"cgroup": "/"}


def lint(document):
    """Warnings about a document that validates but can do harm.

    A policy acting in global OOMs must always leave a victim: if every task
    gets BPF_EVAL_NEXT, the kernel finds nothing to kill and panics.
    """
    doc = normalize(document)
    if doc["scope"] == "memcg":
        return []
    consequence = ("every task gets BPF_EVAL_NEXT in a global OOM in which no task matches a prefer "
                   "or select rule: nothing can be killed and the kernel panics ('System is "
                   "deadlocked on memory'). Use scope: memcg, or let the kernel decide for the rest")
    for i, rule in enumerate(doc["rules"]):
        if _catch_all(rule.get("match")):
            if rule.get("action") == "protect":
                return ["%s: protect matches every task (cgroup /): %s" % (rule_path(i), consequence)]
            return []  # every task is ranked here or earlier: the fallback is never reached
    if doc["fallback"].get("action") == "protect":
        return ["fallback: protect: %s (fallback: kernel)" % consequence]
    return []


def cgroup2_root(mountinfo=cgroups.MOUNTINFO):
    """Where the cgroup v2 hierarchy is mounted (the first cgroup2 mount)."""
    try:
        found = cgroups.cgroup2_mount(mountinfo)
    except OSError as e:
        raise RenderError("cannot read %s: %s" % (mountinfo, e.strerror))
    if found is None:
        raise RenderError("no cgroup v2 hierarchy is mounted on this host; cgroup rules need one")
    return found


def _comm(name, exact):
    data = name.encode("ascii")
    size = min(len(data) + (1 if exact else 0), EBPF_OOM_COMM_LEN)
    if not data or len(data) >= EBPF_OOM_COMM_LEN:
        raise RenderError("comm %r must be 1 to %d bytes" % (name, EBPF_OOM_COMM_LEN - 1))
    return data, b"\xff" * size + b"\x00" * (EBPF_OOM_COMM_LEN - size)


def _ranking(rule, where):
    """(action, tier, by) numbers of a rule or of the fallback."""
    action = rule.get("action")
    if action not in ACTIONS:
        raise RenderError("%s.action: unknown action %r" % (where, action))
    tier, by = 0, EBPF_OOM_BY_BADNESS
    if action == "prefer":
        tier = rule.get("tier")
        if not isinstance(tier, int) or not EBPF_OOM_TIER_MIN <= tier <= EBPF_OOM_TIER_MAX:
            raise RenderError("%s.tier: must be an integer from %d to %d"
                              % (where, EBPF_OOM_TIER_MIN, EBPF_OOM_TIER_MAX))
        by = BY[rule.get("by", DEFAULT_BY)]
    elif action == "select":
        tier = EBPF_OOM_TIER_SELECT
    return ACTIONS[action], tier, by


def _rule(i, rule, resolve, resolved, warnings):
    where = rule_path(i)
    match = rule.get("match") or {}
    r = Rule()
    r.action, r.tier, r.by = _ranking(rule, where)
    if r.action == EBPF_OOM_ACT_KERNEL:
        raise RenderError("%s.action: 'kernel' is a fallback, not a rule action" % where)
    if "pid" in match:
        r.match |= EBPF_OOM_M_PID
        r.pid = match["pid"]
    if "uid" in match:
        r.match |= EBPF_OOM_M_UID
        r.uid = match["uid"]
    if "comm" in match or "comm_prefix" in match:
        exact = "comm" in match
        r.match |= EBPF_OOM_M_COMM
        r.comm, mask = _comm(match["comm"] if exact else match["comm_prefix"], exact)
        ctypes.memmove(ctypes.addressof(r) + Rule.comm_mask.offset, mask, EBPF_OOM_COMM_LEN)
    if "cgroup" in match:
        path = match["cgroup"]
        r.match |= EBPF_OOM_M_CGROUP
        if path not in resolved:
            found = resolve(path)
            resolved[path] = dict(id=found[0], level=found[1]) if found else None
        found = resolved[path]
        if found is None:
            r.cgroup_level = CGROUP_LEVEL_NONE
            warnings.append("%s.match.cgroup: %s does not exist on this host; the rule matches "
                            "nothing until the policy is applied again after it is created"
                            % (where, path))
        else:
            r.cgroup_id, r.cgroup_level = found["id"], found["level"]
            if r.cgroup_level > EBPF_OOM_MAX_CGROUP_LEVEL:
                raise RenderError("%s.match.cgroup: %s is %d levels deep; at most %d"
                                  % (where, path, r.cgroup_level, EBPF_OOM_MAX_CGROUP_LEVEL))
    if not r.match:
        raise RenderError("%s.match: needs at least one condition" % where)
    return r


def render(document, cgroup_root=None):
    """A Rendered for the document, cgroup paths resolved on this host.

    `cgroup_root` overrides the cgroup v2 mount point (found in
    /proc/self/mountinfo when a rule names a cgroup).
    """
    errors = check(document)
    if errors:
        raise RenderError("\n".join(errors))
    doc = normalize(document)
    name = doc["name"]
    if doc["scope"] not in SCOPES:
        raise RenderError("scope: must be one of %s" % ", ".join(sorted(SCOPES)))
    rules = doc["rules"]
    if len(rules) > EBPF_OOM_MAX_RULES:
        raise RenderError("rules: at most %d rules" % EBPF_OOM_MAX_RULES)
    roots = []

    def resolve(path):
        if not roots:
            roots.append(cgroup_root or cgroup2_root())
        return cgroups.resolve(path, roots[0])

    warnings, resolved = [], {}
    entries = [_rule(i, rule, resolve, resolved, warnings) for i, rule in enumerate(rules)]
    for i, r in enumerate(entries):
        if r.action == EBPF_OOM_ACT_ABORT and doc["scope"] != "memcg":
            raise RenderError("%s.action: 'abort' is only allowed with scope memcg" % rule_path(i))
    cfg = Config()
    cfg.nr_rules = len(entries)
    cfg.scope = SCOPES[doc["scope"]]
    cfg.fallback_action, cfg.fallback_tier, cfg.fallback_by = _ranking(doc["fallback"], "fallback")
    if cfg.fallback_action in (EBPF_OOM_ACT_SELECT, EBPF_OOM_ACT_ABORT):
        raise RenderError("fallback.action: must be kernel, protect or prefer")
    for r in entries:
        cfg.needs |= r.match
    maps = {
        RULES_MAP: [(i, bytes(r)) for i, r in enumerate(entries)],
        CONFIG_MAP: [(0, bytes(cfg))],
    }
    return Rendered(name, {common.META_POLICY: name}, maps, warnings, resolved)


def describe(map_name, value):
    """A readable dict of one map value (bytes or hex), for diffs and tests."""
    if isinstance(value, str):
        value = bytes.fromhex(value)
    struct = {RULES_MAP: Rule, CONFIG_MAP: Config, STATE_MAP: State}[map_name]
    if len(value) != ctypes.sizeof(struct):
        raise RenderError("%s value is %d bytes, expected %d" % (map_name, len(value), ctypes.sizeof(struct)))
    obj = struct.from_buffer_copy(value)
    out = {}
    for field, unused in struct._fields_:
        v = getattr(obj, field)
        if field in ("comm", "comm_mask"):
            v = bytes(value[getattr(struct, field).offset:][:EBPF_OOM_COMM_LEN])
            v = v.hex() if field == "comm_mask" else v.rstrip(b"\0").decode("ascii", "replace")
        elif isinstance(v, ctypes.Array):
            v = list(v)
        out[field] = v
    return out
