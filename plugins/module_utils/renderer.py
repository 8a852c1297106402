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
- `render(document)`: the map entries and globals for loader.apply(). A cgroup
  rule keeps its path (oom_cgroup_paths): the programs on the cgroup_mkdir and
  cgroup_rmdir tracepoints keep the id of whatever cgroup lives there current
  (oom_rule_cgroups, which cgrouprules.py fills once at apply time), so a rule
  matches a cgroup made before or after the policy, or made again.

The ctypes structs and constants below mirror bpf/generic.h name for name;
tests/unit/test_renderer.py checks them against the compiled object's BTF.

Layer 2 (translation): imports only the leaf helpers.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os
import re

from . import common
from .errors import RenderError
from .names import name_problem

# ---- bpf/generic.h ---------------------------------------------------------

EBPF_OOM_MAX_RULES = 64
EBPF_OOM_COMM_LEN = 16
EBPF_OOM_MAX_CGROUP_LEVEL = 16
EBPF_OOM_CGROUP_WALK = 64
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
        ("pad", ctypes.c_uint32),
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

EBPF_OOM_EV_EXEC = 1
EBPF_OOM_EV_RENAME = 2
EBPF_OOM_EV_ATTACH = 3
EBPF_OOM_EV_FORK = 4


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
    ]


# C struct name -> ctypes mirror
STRUCTS = {"ebpf_oom_rule": Rule, "ebpf_oom_config": Config, "ebpf_oom_state": State,
           "ebpf_oom_path": Path, "ebpf_oom_task": Task, "ebpf_oom_adj_event": AdjEvent}

# ---- bpf/generic.bpf.c -----------------------------------------------------

GENERIC_SOURCE = os.path.join("bpf", "generic.bpf.c")  # relative to the collection root
RULES_MAP = "oom_rules"
CONFIG_MAP = "oom_config"
STATE_MAP = "oom_state"
PATHS_MAP = "oom_cgroup_paths"    # rule paths -> the rules naming them (written here)
LIVE_MAP = "oom_rule_cgroups"     # rule index -> id of the cgroup at its path now (kept live)
# The programs: the hook backend's two, the two that follow cgroups by path, the iterator.
NAME_PROGRAM = "ebpf_oom_name"
EVAL_PROGRAM = "ebpf_oom_eval"
CGROUP_PROGRAMS = ("ebpf_oom_cgroup_mkdir", "ebpf_oom_cgroup_rmdir")
TASKS_PROGRAM = "ebpf_oom_tasks"
# The score_adj backend's programs on the events that can change a process's class,
# its ring buffer, the processes its agent wrote, and the count of events lost.
ADJ_PROGRAMS = ("ebpf_oom_adj_exec", "ebpf_oom_adj_rename", "ebpf_oom_adj_attach",
                "ebpf_oom_adj_fork")
EVENTS_MAP = "oom_adj_events"
ADJUSTED_MAP = "oom_adjusted"
LOST_MAP = "oom_adj_lost"
# Globals of the task iterator: the OOM it imagines.
ITER_TOTALPAGES = "ebpf_oom_iter_totalpages"
ITER_MEMCG_ID = "ebpf_oom_iter_memcg_id"
ITER_MEMCG_LEVEL = "ebpf_oom_iter_memcg_level"
COMM_RE = re.compile(r"[\x20-\x7e]{1,%d}" % (EBPF_OOM_COMM_LEN - 1))
# The longest cgroup path a rule may name: a longer one could not be told from a
# path the kernel cuts to EBPF_OOM_PATH_LEN - 1 bytes.
CGROUP_PATH_MAX = EBPF_OOM_PATH_LEN - 2

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
    """What loader.apply() needs: globals and maps; plus warnings and the cgroup rules."""

    def __init__(self, name, variables, maps, warnings, cgroup_rules):
        self.name = name
        self.globals = variables    # {variable: value}
        self.maps = maps            # {map name: [(key, value bytes), ...]}
        self.warnings = warnings    # [str]
        self.cgroup_rules = cgroup_rules  # {path: [rule index, ...]}


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


# What the schema (schemas/policy.schema.json) allows, for check() on the host, where
# there is no JSON Schema validator: the fields of each part and the ranges of the ids.
DOCUMENT_FIELDS = ("name", "description", "scope", "rules", "fallback")
RULE_FIELDS = ("match", "action", "tier", "by", "description")
MATCH_FIELDS = ("pid", "comm", "comm_prefix", "cgroup", "uid")
RULE_ACTIONS = ("protect", "prefer", "select", "abort")
FALLBACK_ACTIONS = ("kernel", "protect", "prefer")
PID_MAX = 4194304      # PID_MAX_LIMIT on 64-bit kernels
UID_MAX = 4294967294   # (uid_t)-1 names no user


def _kind(value):
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _fields(node, allowed, where, errors):
    """True when ``node`` is a mapping of ``allowed`` fields; else says why in ``errors``."""
    if not isinstance(node, dict):
        errors.append("%s: must be a mapping, not %s" % (where or "(document)", _kind(node)))
        return False
    for key in sorted(set(node) - set(allowed), key=str):
        errors.append("%s%s: unknown field (allowed: %s)" % (where + "." if where else "", key,
                                                             ", ".join(sorted(allowed))))
    return True


def _integer_problem(value, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer, not %s" % _kind(value)
    if not low <= value <= high:
        return "%d is not from %d to %d" % (value, low, high)
    return None


def _ranking_errors(node, where, actions, errors):
    """The action of a rule or of the fallback, and its tier and by."""
    action = node.get("action")
    if action is None:
        errors.append("%s.action: is required" % where)
    elif action not in actions:
        errors.append("%s.action: %r is not one of %s" % (where, action, ", ".join(actions)))
    for key in ("tier", "by"):
        if key in node and action != "prefer":
            errors.append("%s.%s: is only allowed with action prefer" % (where, key))
    if action == "prefer":
        problem = "is required" if "tier" not in node else \
            _integer_problem(node["tier"], EBPF_OOM_TIER_MIN, EBPF_OOM_TIER_MAX)
        if problem:
            errors.append("%s.tier: %s" % (where, problem))
        if "by" in node and node["by"] not in BY:
            errors.append("%s.by: %r is not one of %s" % (where, node["by"], ", ".join(sorted(BY))))


def _match_errors(match, where, errors):
    if not _fields(match, MATCH_FIELDS, where, errors):
        return
    if not match:
        errors.append("%s: needs at least one of %s" % (where, ", ".join(MATCH_FIELDS)))
    if "comm" in match and "comm_prefix" in match:
        errors.append("%s: give comm or comm_prefix, not both" % where)
    for key, low, high in (("pid", 1, PID_MAX), ("uid", 0, UID_MAX)):
        problem = _integer_problem(match[key], low, high) if key in match else None
        if problem:
            errors.append("%s.%s: %s" % (where, key, problem))
    for key in ("comm", "comm_prefix"):
        if key in match and not (isinstance(match[key], str) and COMM_RE.fullmatch(match[key])):
            errors.append("%s.%s: %r must be 1 to %d printable ASCII characters (a task name has "
                          "no newline)" % (where, key, match[key], EBPF_OOM_COMM_LEN - 1))
    if "cgroup" in match:
        problem = cgroup_path_problem(match["cgroup"])
        if problem:
            errors.append("%s.cgroup: %s" % (where, problem))


def _shape_errors(document):
    """What the schema checks, checked again where the document is used: its fields, their
    types and ranges (a record on the host may have come from anywhere)."""
    errors = []
    if not _fields(document, DOCUMENT_FIELDS, "", errors):
        return errors
    for key in ("name", "rules"):
        if key not in document:
            errors.append("%s: is required" % key)
    if "scope" in document and document["scope"] not in SCOPES:
        errors.append("scope: %r is not one of global, memcg, both" % (document["scope"],))
    rules = document.get("rules", [])
    if not isinstance(rules, list):
        errors.append("rules: must be a list, not %s" % _kind(rules))
        rules = []
    if len(rules) > EBPF_OOM_MAX_RULES:
        errors.append("rules: has %d entries; at most %d" % (len(rules), EBPF_OOM_MAX_RULES))
    for i, rule in enumerate(rules):
        if _fields(rule, RULE_FIELDS, rule_path(i), errors):
            if "match" not in rule:
                errors.append("%s: is required" % rule_path(i, "match"))
            else:
                _match_errors(rule["match"], rule_path(i, "match"), errors)
            _ranking_errors(rule, rule_path(i), RULE_ACTIONS, errors)
            if rule.get("action") == "abort" and document.get("scope") != "memcg":
                errors.append("%s: 'abort' is only allowed with scope memcg" % rule_path(i, "action"))
    fallback = document.get("fallback", DEFAULT_FALLBACK)
    if isinstance(fallback, str):
        if fallback not in ("kernel", "protect"):
            errors.append("fallback: must be kernel, protect, or a mapping with action kernel, "
                          "protect or prefer")
    elif _fields(fallback, ("action", "tier", "by"), "fallback", errors):
        _ranking_errors(fallback, "fallback", FALLBACK_ACTIONS, errors)
    return errors


def check(document):
    """Errors ('path: reason') of a document: on the controller, what the schema cannot
    see (the name rule to the letter: a JSON Schema pattern's `$` lets a trailing newline
    through; every rule of a tier ranks the same way); on the host, where render() calls
    it, the schema's own checks too, as the document may not have come through the
    controller (a record on disk, a direct module call)."""
    errors = _shape_errors(document)
    if errors:
        return errors
    doc = normalize(document)
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


# The top-level cgroups of a systemd host: every process of it lives in one of them
# (kernel threads, in the root cgroup, are never OOM candidates).
SYSTEMD_TOP_CGROUPS = ("/init.scope", "/system.slice", "/user.slice")


def _cgroup_only(match):
    """The path of a match that is a cgroup and nothing else (None otherwise)."""
    return match.get("cgroup") if isinstance(match, dict) and list(match) == ["cgroup"] else None


def lint(document):
    """Warnings about a document that validates but can do harm.

    A policy acting in global OOMs must always leave a victim: if every task
    gets BPF_EVAL_NEXT, the policy chooses nothing (the hook kernel's safety net then
    lets the kernel's heuristic choose, ignoring the policy; a kernel without it
    panics). What the controller can know: a protect rule on the root cgroup, protect
    rules on every top-level cgroup of a systemd host (SYSTEMD_TOP_CGROUPS), a
    protect fallback.
    """
    doc = normalize(document)
    if doc["scope"] == "memcg":
        return []
    consequence = ("every task gets BPF_EVAL_NEXT in a global OOM in which no task matches a prefer "
                   "or select rule: the policy chooses nothing, and the kernel panics ('System is "
                   "deadlocked on memory') unless its safety net lets its own heuristic choose. Use "
                   "scope: memcg, or let the kernel decide for the rest")
    first = {}  # top-level cgroup -> (index, action) of the first rule on it alone
    for i, rule in enumerate(doc["rules"]):
        path = _cgroup_only(rule.get("match"))
        if path == "/":
            if rule.get("action") == "protect":
                return ["%s: protect matches every task (cgroup /): %s" % (rule_path(i), consequence)]
            return []  # every task is ranked here or earlier: the fallback is never reached
        if path in SYSTEMD_TOP_CGROUPS:
            first.setdefault(path, (i, rule.get("action")))
    warnings = []
    if all(first.get(path, (None, None))[1] == "protect" for path in SYSTEMD_TOP_CGROUPS):
        warnings.append("%s: protect every task of a systemd host (%s hold them all): %s"
                        % (", ".join(rule_path(i) for i, _a in sorted(first.values())),
                           ", ".join(SYSTEMD_TOP_CGROUPS), consequence))
    if doc["fallback"].get("action") == "protect":
        warnings.append("fallback: protect: %s (fallback: kernel)" % consequence)
    return warnings


def cgroup_path_problem(path):
    """Why a rule's cgroup path is not one the kernel can name, or None.

    The kernel writes a cgroup v2 path as "/a/b": absolute, no empty, "." or ".."
    part (which the path of no cgroup has, and which could name another cgroup
    than the one meant), no trailing "/", at most CGROUP_PATH_MAX bytes and
    EBPF_OOM_MAX_CGROUP_LEVEL levels deep."""
    if not isinstance(path, str) or not path.startswith("/"):
        return "must be an absolute path, like /system.slice/postgresql.service"
    if path == "/":
        return None
    parts = path[1:].split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "%r has an empty, '.' or '..' part; write the path as the kernel does" % path
    if any(c in path for c in "\0\n"):
        return "%r holds a NUL or a newline" % path
    if len(path.encode("utf-8")) > CGROUP_PATH_MAX:
        return "is longer than %d bytes" % CGROUP_PATH_MAX
    if len(parts) > EBPF_OOM_MAX_CGROUP_LEVEL:
        return "%s is %d levels deep; at most %d" % (path, len(parts), EBPF_OOM_MAX_CGROUP_LEVEL)
    return None


def cgroup_level(path):
    """The depth of a cgroup path below the root ("/" is 0)."""
    return 0 if path == "/" else path.count("/")


def path_key(path):
    """The oom_cgroup_paths key of a path: its bytes, NUL padded."""
    return bytes(Path(path.encode("utf-8")))


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


def _rule(i, rule, cgroup_rules):
    where = rule_path(i)
    match = rule.get("match") or {}
    r = Rule()
    r.action, r.tier, r.by = _ranking(rule, where)
    if r.action == EBPF_OOM_ACT_KERNEL:
        raise RenderError("%s.action: 'kernel' is a fallback, not a rule action" % where)
    if "pid" in match:
        r.match |= EBPF_OOM_M_PID
        r.pid = _id(match["pid"], where + ".match.pid")
    if "uid" in match:
        r.match |= EBPF_OOM_M_UID
        r.uid = _id(match["uid"], where + ".match.uid")
    if "comm" in match or "comm_prefix" in match:
        exact = "comm" in match
        r.match |= EBPF_OOM_M_COMM
        r.comm, mask = _comm(match["comm"] if exact else match["comm_prefix"], exact)
        ctypes.memmove(ctypes.addressof(r) + Rule.comm_mask.offset, mask, EBPF_OOM_COMM_LEN)
    if "cgroup" in match:
        path = match["cgroup"]  # check() made sure the kernel can name it
        r.match |= EBPF_OOM_M_CGROUP
        r.cgroup_level = cgroup_level(path)
        cgroup_rules.setdefault(path, []).append(i)
    if not r.match:
        raise RenderError("%s.match: needs at least one condition" % where)
    return r


def _id(value, where):
    """A pid or uid as the kernel keeps it (an unsigned 32-bit number)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 32:
        raise RenderError("%s: must be an integer from 0 to %d" % (where, (1 << 32) - 1))
    return value


def render(document):
    """A Rendered for the document (the same on every host: cgroup rules keep their
    paths; cgrouprules.py finds what lives there)."""
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
    cgroup_rules = {}
    entries = [_rule(i, rule, cgroup_rules) for i, rule in enumerate(rules)]
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
        PATHS_MAP: [(path_key(path), sum(1 << i for i in indexes))
                    for path, indexes in sorted(cgroup_rules.items())],
    }
    return Rendered(name, {common.META_POLICY: name}, maps, [], cgroup_rules)


def describe(map_name, value):
    """A readable dict of one map value (bytes or hex), for diffs and tests."""
    if isinstance(value, str):
        value = bytes.fromhex(value)
    struct = {RULES_MAP: Rule, CONFIG_MAP: Config, STATE_MAP: State, PATHS_MAP: Path}[map_name]
    if len(value) != ctypes.sizeof(struct):
        raise RenderError("%s value is %d bytes, expected %d" % (map_name, len(value), ctypes.sizeof(struct)))
    obj = struct.from_buffer_copy(value)
    out = {}
    for field, unused in struct._fields_:
        v = getattr(obj, field)
        if field == "path":
            v = bytes(value).rstrip(b"\0").decode("utf-8", "replace")
        elif field in ("comm", "comm_mask"):
            v = bytes(value[getattr(struct, field).offset:][:EBPF_OOM_COMM_LEN])
            v = v.hex() if field == "comm_mask" else v.rstrip(b"\0").decode("ascii", "replace")
        elif isinstance(v, ctypes.Array):
            v = list(v)
        out[field] = v
    return out
