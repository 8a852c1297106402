# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The policy language, written once: its match keys and actions as tables, the JSON
Schema made from them, and the one check of a document.

Layer 1 (the policy language): imports the ABI and the leaf helpers.

MATCH_KEYS and ACTIONS are the only place a match key or an action is named outside the
BPF C and the tests. From them come:

- SCHEMA, the JSON Schema of a document (schemas/policy.schema.json is SCHEMA written out:
  `python -m ansible_collections.ebpf.oom.plugins.module_utils.language`;
  tests/unit/test_language.py holds the file to it);
- check(document), the one check, on the controller (the ebpf.oom.policy action plugin)
  and on the host (the renderer, the boot restore): a small interpreter of the schema's
  own keywords, then what a schema cannot say (the name rule to the letter, one ranking
  per tier, a cgroup path's bytes);
- the renderer's encoding of each key (Key.encoding, renderer.py);
- the tables of schemas/README.md (key_table(), action_table()).

bpf/generic.h and bpf/classify.h are held to the same table by tests/unit/test_language.py.
Adding a match key: an entry here, its match in bpf/classify.h, a test.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
import sys

from . import abi
from .names import NAME_CHARS, POLICY_NAME_MAX, name_problem

PID_MAX = 4194304      # PID_MAX_LIMIT on 64-bit kernels
UID_MAX = 4294967294   # (uid_t)-1 names no user
COMM_MAX = abi.EBPF_OOM_COMM_LEN - 1


class Key(object):
    """One match key: its word, its schema, the rule bit it sets, how the renderer encodes
    it (renderer.ENCODERS), what the docs say it holds when, and whether a running
    process can change it (a backend that writes values ahead of an OOM must follow it)."""

    def __init__(self, name, schema, flag, encoding, holds, changes, excludes=None):
        self.name, self.schema, self.flag, self.encoding = name, schema, flag, encoding
        self.holds, self.changes, self.excludes = holds, changes, excludes


class Action(object):
    """One action: its word, its number in the rule (EBPF_OOM_ACT_*), where a document may
    use it, its tier, and what the docs say of it."""

    def __init__(self, name, number, rule=True, fallback=False, memcg_only=False, ranked=False,
                 tier=0, short="", title=None, meaning="", returns=""):
        self.name, self.number, self.rule, self.fallback = name, number, rule, fallback
        self.short = short
        self.memcg_only, self.ranked, self.tier = memcg_only, ranked, tier
        self.title, self.meaning, self.returns = title or "`%s`" % name, meaning, returns


_COMM = {"$ref": "#/$defs/comm"}

MATCH_KEYS = (
    Key("pid", {"description": "Process id (thread-group id) in the initial pid namespace.",
                "type": "integer", "minimum": 1, "maximum": PID_MAX},
        abi.EBPF_OOM_M_PID, "id",
        "the task's process id (thread-group id, in the initial pid namespace) equals it (1–%d)" % PID_MAX,
        "never"),
    Key("comm", dict(_COMM, description="The task name (/proc/PID/comm), exactly."),
        abi.EBPF_OOM_M_COMM, "name",
        "the task name (`/proc/PID/comm`, at most %d bytes) equals it exactly" % COMM_MAX,
        "at exec, `prctl(PR_SET_NAME)`, a write to `/proc/PID/comm`"),
    Key("comm_prefix", dict(_COMM, description="The task name starts with this."),
        abi.EBPF_OOM_M_COMM, "name_prefix",
        "the task name starts with it (`comm` and `comm_prefix` exclude each other)",
        "at exec, `prctl(PR_SET_NAME)`, a write to `/proc/PID/comm`", excludes="comm"),
    Key("cgroup", {"description": "Absolute cgroup v2 path as the kernel writes it, e.g. "
                                  "/system.slice/postgresql.service: the task is in the cgroup that "
                                  "lives at this path now (made before or after the policy, or made "
                                  "again), or below it.",
                   "type": "string", "maxLength": abi.CGROUP_PATH_MAX, "format": "cgroup-path",
                   "pattern": "^(/|(/(?!\\.\\.?(/|$))[^/\\x00-\\x1f\\x7f]+){1,%d})$"
                              % abi.EBPF_OOM_MAX_CGROUP_LEVEL,
                   "x-errors": {"pattern": "must be an absolute cgroup path such as /batch or "
                                           "/system.slice/web.service: at most %d levels, no trailing "
                                           "'/', no '.' or '..' components" % abi.EBPF_OOM_MAX_CGROUP_LEVEL}},
        abi.EBPF_OOM_M_CGROUP, "path",
        "the task is in this cgroup v2 or in one **below** it, e.g. `/batch` matches `/batch` and "
        "`/batch/job-17`; absolute path, at most %d levels" % abi.EBPF_OOM_MAX_CGROUP_LEVEL,
        "when it is moved to another cgroup"),
    Key("uid", {"description": "Real user id of the task.", "type": "integer", "minimum": 0,
                "maximum": UID_MAX},
        abi.EBPF_OOM_M_UID, "id", "the task's real user id equals it", "at `setuid()`"),
)

ACTIONS = (
    Action("kernel", abi.EBPF_OOM_ACT_KERNEL, rule=False, fallback=True),
    Action("protect", abi.EBPF_OOM_ACT_PROTECT, fallback=True, short="never chosen", meaning="never chosen by this policy",
           returns="`BPF_EVAL_NEXT`"),
    Action("prefer", abi.EBPF_OOM_ACT_PREFER, fallback=True, ranked=True, short="ranked by tier",
           title="`prefer` + `tier` (%d–%d)" % (abi.EBPF_OOM_TIER_MIN, abi.EBPF_OOM_TIER_MAX),
           meaning="candidate; lower tiers die first; within a tier the higher `by` points die first",
           returns="`BPF_EVAL_SELECT` if it beats the current choice, else `BPF_EVAL_NEXT`"),
    Action("select", abi.EBPF_OOM_ACT_SELECT, tier=abi.EBPF_OOM_TIER_SELECT, short="chosen before every tier",
           meaning="chosen if present, before any tier; several such tasks: the one with the most badness",
           returns="as `prefer`, ranked above tier %d" % abi.EBPF_OOM_TIER_MIN),
    Action("abort", abi.EBPF_OOM_ACT_ABORT, memcg_only=True,
           short="kill nothing in this OOM (scope memcg only)",
           meaning="if such a task is among the candidates, kill nothing in this OOM (only with `scope: memcg`)",
           returns="`BPF_EVAL_ABORT`"),
)

KEYS = dict((k.name, k) for k in MATCH_KEYS)
ACTION = dict((a.name, a) for a in ACTIONS)
RULE_ACTIONS = [a.name for a in ACTIONS if a.rule]
FALLBACK_ACTIONS = [a.name for a in ACTIONS if a.fallback]
SCOPES = {"global": abi.EBPF_OOM_SCOPE_GLOBAL, "memcg": abi.EBPF_OOM_SCOPE_MEMCG,
          "both": abi.EBPF_OOM_SCOPE_GLOBAL | abi.EBPF_OOM_SCOPE_MEMCG}
BY = {"badness": abi.EBPF_OOM_BY_BADNESS, "rss": abi.EBPF_OOM_BY_RSS}
DEFAULT_SCOPE = "both"
MODES = tuple(sorted(abi.MODES, key=abi.MODES.get))  # enforce (the default), shadow
DEFAULT_FALLBACK = "kernel"
DEFAULT_BY = "badness"


def _only_with(action):
    """Schema: the fields of a ranked action (tier, by) are required or refused."""
    refused = {"not": {}, "x-errors": {"not": "is only allowed with action %s" % action}}
    return {"if": {"required": ["action"], "properties": {"action": {"const": action}}},
            "then": {"required": ["tier"]},
            "else": {"properties": {"tier": refused, "by": refused}}}


def _schema():
    ranked = [a.name for a in ACTIONS if a.ranked]
    if len(ranked) != 1:
        raise ValueError("tier and by belong to one ranked action, not %s" % ranked)
    string_fallbacks = [a for a in FALLBACK_ACTIONS if not ACTION[a].ranked]
    names = [k.name for k in MATCH_KEYS]
    memcg_only = [a.name for a in ACTIONS if a.memcg_only]
    match = {
        "description": "Conditions on the task; all given ones must hold.",
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": dict((k.name, k.schema) for k in MATCH_KEYS),
        "x-errors": {"minProperties": "needs at least one of %s" % ", ".join(names)},
    }
    exclusive = [{"not": {"required": [k.excludes, k.name]},
                  "x-errors": {"not": "give %s or %s, not both" % (k.excludes, k.name)}}
                 for k in MATCH_KEYS if k.excludes]
    if exclusive:
        match["allOf"] = exclusive
    rule = {
        "type": "object",
        "required": ["match", "action"],
        "additionalProperties": False,
        "properties": {
            "match": {"$ref": "#/$defs/match"},
            "action": {"description": " ".join("%s: %s." % (a.name, a.short) for a in ACTIONS if a.rule),
                       "enum": RULE_ACTIONS},
            "tier": {"$ref": "#/$defs/tier"},
            "by": {"$ref": "#/$defs/by"},
            "description": {"type": "string"},
        },
    }
    fallback_object = {
        "type": "object",
        "required": ["action"],
        "additionalProperties": False,
        "properties": {"action": {"enum": FALLBACK_ACTIONS}, "tier": {"$ref": "#/$defs/tier"},
                       "by": {"$ref": "#/$defs/by"}},
    }
    for part in (rule, fallback_object):
        part.update(_only_with(ranked[0]))
    defs = {
        "tier": {"description": "Rank class of a prefer action: lower tiers die first.",
                 "type": "integer", "minimum": abi.EBPF_OOM_TIER_MIN, "maximum": abi.EBPF_OOM_TIER_MAX},
        "by": {"description": "What orders the tasks of one tier: badness (the kernel's oom_badness: "
                              "resident + swapped + page-table pages, shifted by oom_score_adj) or rss "
                              "(resident pages only).",
               "enum": sorted(BY), "default": DEFAULT_BY},
        "comm": {"type": "string", "pattern": "^[\\x20-\\x7e]{1,%d}$" % COMM_MAX,
                 "x-errors": {"pattern": "must be 1 to %d printable ASCII characters (the kernel keeps "
                                         "%d bytes of a task name)" % (COMM_MAX, COMM_MAX)}},
        "match": match,
        "rule": rule,
        "fallback_object": fallback_object,
    }
    fallback_words = "must be %s, or a mapping with action %s" % (", ".join(string_fallbacks),
                                                                  _words(FALLBACK_ACTIONS))
    properties = {
        "name": {
            "description": "Policy name, printed as policy_name= in every OOM report the policy "
                           "decides, and the policy's bpffs directory; 1..%d bytes." % POLICY_NAME_MAX,
            "type": "string",
            "pattern": "^%s{1,%d}$" % (NAME_CHARS, POLICY_NAME_MAX),
            "x-errors": {"pattern": "must be 1 to %d characters from A-Z a-z 0-9 _ -" % POLICY_NAME_MAX},
        },
        "description": {"description": "Free text for humans; not used.", "type": "string"},
        "scope": {
            "description": "The OOMs the policy decides: global (the whole machine is out of memory), "
                           "memcg (a memory cgroup hit memory.max) or both.",
            "enum": ["global", "memcg", "both"],
            "default": DEFAULT_SCOPE,
        },
        "mode": {
            "description": "enforce: the policy decides the OOMs of its scope. shadow: it judges every "
                           "candidate of every such OOM and decides none (the kernel, or the policy "
                           "that enforces, does), recording the task it would have killed; the hook "
                           "backend only. Switched in place.",
            "enum": list(MODES),
            "default": MODES[0],
        },
        "rules": {
            "description": "Evaluated in order for every task the OOM killer considers; the first rule "
                           "whose match holds decides.",
            "type": "array",
            "maxItems": abi.EBPF_OOM_MAX_RULES,
            "items": {"$ref": "#/$defs/rule"},
        },
        "fallback": {
            "description": "What happens to tasks no rule matches.",
            "default": DEFAULT_FALLBACK,
            "oneOf": [{"enum": string_fallbacks, "x-errors": {"enum": fallback_words}},
                      {"$ref": "#/$defs/fallback_object"}],
        },
    }
    memcg_words = "%s only allowed with scope memcg" % " or ".join("'%s' is" % a for a in memcg_only)
    action_in_memcg = {"not": {"enum": memcg_only}, "x-errors": {"not": memcg_words}}
    not_memcg = {"not": {"required": ["scope"], "properties": {"scope": {"const": "memcg"}}}}
    only_in_memcg = {"if": not_memcg, "then": {"properties": {"rules": {"items": {"properties": {
        "action": action_in_memcg}}}}}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/ebpf-oom/ebpf.oom/schemas/policy.schema.json",
        "title": "ebpf.oom declarative OOM policy",
        "description": "Which task the OOM killer picks, as ordered rules over %s. Semantics: "
                       "schemas/README.md. x-errors holds the message for a failed keyword. Written "
                       "from plugins/module_utils/language.py: edit that, not this file." % ", ".join(names),
        "type": "object",
        "required": ["name", "rules"],
        "additionalProperties": False,
        "properties": properties,
        "allOf": [only_in_memcg],
        "$defs": defs,
    }


def _words(items):
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else "".join(items)


SCHEMA = _schema()


# ---- the interpreter of the schema's keywords ------------------------------------

def kind(value):
    """How a document's value is named in a message: 'a mapping', 'a list', ..."""
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
_TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "a string", "boolean": "a boolean",
               "null": "null", "integer": "an integer", "number": "a number"}


def _is(value, wanted):
    if wanted == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if wanted == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[wanted])


def _same(a, b):
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _shown(value):
    return repr(value) if isinstance(value, str) else json.dumps(value)


FORMATS = {}  # format name -> function(value) -> problem or None (see cgroup_path_problem)


def _ecma(pattern):
    """A schema pattern for Python's re: as in ECMA-262 (JSON Schema's regular expressions),
    a final `$` matches at the very end only, never before a trailing newline."""
    return pattern[:-1] + "\\Z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern


def _resolve(ref):
    node = SCHEMA
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def _check(node, value, path, out):
    """Append (path, reason) to ``out`` for each keyword of ``node`` that ``value`` fails."""
    custom = node.get("x-errors") or {}

    def fail(keyword, reason, where=None):
        out.append((where if where is not None else path, custom.get(keyword) or reason))

    if "$ref" in node:
        _check(_resolve(node["$ref"]), value, path, out)
    if "type" in node and not _is(value, node["type"]):
        fail("type", "must be %s, not %s" % (_TYPE_WORDS[node["type"]], kind(value)))
    if "enum" in node and not any(_same(value, v) for v in node["enum"]):
        fail("enum", "%s is not one of %s" % (_shown(value), ", ".join(str(v) for v in node["enum"])))
    if "const" in node and not _same(value, node["const"]):
        fail("const", "must be %s" % _shown(node["const"]))
    if "not" in node and valid(node["not"], value):
        fail("not", "is not allowed here")
    for sub in node.get("allOf", []):
        _check(sub, value, path, out)
    if "oneOf" in node:
        _one_of(node, value, path, out, fail)
    if "if" in node:
        branch = node.get("then") if valid(node["if"], value) else node.get("else")
        if branch is not None:
            _check(branch, value, path, out)
    if isinstance(value, dict):
        for key in node.get("required", []):
            if key not in value:
                fail("required", "is required", path + [key])
        properties = node.get("properties", {})
        for key in sorted(value, key=str):
            if key in properties:
                _check(properties[key], value[key], path + [key], out)
            elif node.get("additionalProperties") is False:
                fail("additionalProperties", "unknown field (allowed: %s)" % ", ".join(sorted(properties)),
                     path + [key])
        if len(value) < node.get("minProperties", 0):
            fail("minProperties", "needs at least %d fields" % node["minProperties"])
    if isinstance(value, list):
        if len(value) > node.get("maxItems", len(value)):
            fail("maxItems", "has %d entries; at most %d" % (len(value), node["maxItems"]))
        if "items" in node:
            for i, item in enumerate(value):
                _check(node["items"], item, path + [i], out)
    if isinstance(value, str):
        if len(value) > node.get("maxLength", len(value)):
            fail("maxLength", "is longer than %d characters" % node["maxLength"])
        if "pattern" in node and not re.search(_ecma(node["pattern"]), value):
            fail("pattern", "does not match %s" % node["pattern"])
        problem = FORMATS[node["format"]](value) if node.get("format") in FORMATS else None
        if problem:
            fail("format", problem)
    if _is(value, "number"):
        if value < node.get("minimum", value):
            fail("minimum", "%s is below the minimum %s" % (value, node["minimum"]))
        if value > node.get("maximum", value):
            fail("maximum", "%s is above the maximum %s" % (value, node["maximum"]))


def _one_of(node, value, path, out, fail):
    """One form must hold; when none does, the problems of the form of the value's type
    (the fallback: a word, or a mapping)."""
    results = []
    for sub in node["oneOf"]:
        errors = []
        _check(sub, value, path, errors)
        results.append(errors)
    held = sum(1 for errors in results if not errors)
    if held == 1:
        return
    if held > 1:
        fail("oneOf", "matches more than one of its forms")
        return
    for sub, errors in zip(node["oneOf"], results):
        form = _resolve(sub["$ref"]) if "$ref" in sub else sub
        if ("type" in form and _is(value, form["type"])) or \
                ("enum" in form and all(type(v) is type(value) for v in form["enum"])):
            out.extend(errors)
            return
    out.extend(results[0])


def valid(node, value):
    errors = []
    _check(node, value, [], errors)
    return not errors


def field_path(parts):
    """['rules', 2, 'action'] -> 'rules[2].action'."""
    text = ""
    for part in parts:
        text += "[%d]" % part if isinstance(part, int) else ("." if text else "") + str(part)
    return text or "(document)"


def rule_path(i, field=None):
    return field_path(["rules", i] + ([field] if field else []))


def validate(document):
    """The schema's problems of a document, as sorted 'path: reason' lines."""
    if not isinstance(document, dict):
        return ["(document): must be a mapping, not %s" % kind(document)]
    found = []
    _check(SCHEMA, document, [], found)
    lines = set((tuple(str(p) for p in path), "%s: %s" % (field_path(path), reason)) for path, reason in found)
    return [line for unused, line in sorted(lines)]


def check(document):
    """Errors ('path: reason') of a document; [] when it can be rendered. The schema's
    keywords, then what a schema cannot say: the name rule to the letter (a pattern's `$`
    lets a trailing newline through), every rule of a tier ranks the same way."""
    errors = validate(document)
    if errors:
        return errors
    doc = normalize(document)
    problem = name_problem(doc["name"])
    if problem:
        errors.append("name: %s" % problem)
    tiers = {}  # tier -> (by, where)
    ranked = [(rule_path(i), r) for i, r in enumerate(doc["rules"])] + [("fallback", doc["fallback"])]
    for where, rule in ranked:
        if not ACTION[rule["action"]].ranked:
            continue
        tier, by = rule["tier"], rule["by"]
        if tier in tiers and tiers[tier][0] != by:
            errors.append("%s.by: tier %s is ranked by '%s' in %s; every rule of a tier must rank "
                          "the same way" % (where, tier, tiers[tier][0], tiers[tier][1]))
        tiers.setdefault(tier, (by, where))
    return errors


def normalize(document):
    """The document with defaults filled in: scope, fallback (as a mapping) and by."""
    doc = dict(document)
    doc.setdefault("scope", DEFAULT_SCOPE)
    fallback = doc.get("fallback", DEFAULT_FALLBACK)
    doc["fallback"] = dict({"action": fallback} if isinstance(fallback, str) else fallback)
    doc["rules"] = [dict(rule) for rule in doc.get("rules") or []]
    for rule in doc["rules"] + [doc["fallback"]]:
        if ACTION.get(rule.get("action")) is not None and ACTION[rule["action"]].ranked:
            rule.setdefault("by", DEFAULT_BY)
    return doc


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
    if len(path.encode("utf-8")) > abi.CGROUP_PATH_MAX:
        return "is longer than %d bytes" % abi.CGROUP_PATH_MAX
    if len(parts) > abi.EBPF_OOM_MAX_CGROUP_LEVEL:
        return "%s is %d levels deep; at most %d" % (path, len(parts), abi.EBPF_OOM_MAX_CGROUP_LEVEL)
    return None


FORMATS["cgroup-path"] = cgroup_path_problem


def cgroup_level(path):
    """The depth of a cgroup path below the root ("/" is 0)."""
    return 0 if path == "/" else path.count("/")


# ---- lint ------------------------------------------------------------------------

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


# ---- the docs' tables ------------------------------------------------------------

def key_table():
    """The match keys' table of schemas/README.md."""
    rows = ["| key | holds when | a running process changes it |", "|---|---|---|"]
    rows.extend("| `%s` | %s | %s |" % (k.name, k.holds, k.changes) for k in MATCH_KEYS)
    return "\n".join(rows)


def action_table():
    """The actions' table of schemas/README.md."""
    rows = ["| action | meaning | hook return |", "|---|---|---|"]
    rows.extend("| %s | %s | %s |" % (a.title, a.meaning, a.returns) for a in ACTIONS if a.rule)
    return "\n".join(rows)


if __name__ == "__main__":
    sys.stdout.write(json.dumps(SCHEMA, indent=2, ensure_ascii=False) + "\n")
