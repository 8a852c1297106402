# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Declarative policy documents -> the generic program's map data.

`render(document)` checks the document once (language.check: the schema's keywords and
what a schema cannot say), then writes the map entries and globals loader.apply() needs,
each match key as its entry in language.MATCH_KEYS says (ENCODERS). A cgroup rule keeps
its path (oom_cgroup_paths): the programs on the cgroup_mkdir and cgroup_rmdir
tracepoints keep the id of whatever cgroup lives there current (oom_rule_cgroups, which
cgrouprules.py fills once at apply time), so a rule matches a cgroup made before or after
the policy, or made again. `describe` reads a map value back, for diffs and tests.

Layer 2 (translation): imports the policy language, the ABI and the leaf helpers.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes

from . import abi, common, language
from .errors import RenderError


class Rendered:
    """What loader.apply() needs: globals and maps; plus the cgroup rules."""

    def __init__(self, name, variables, maps, cgroup_rules):
        self.name = name
        self.globals = variables    # {variable: value}
        self.maps = maps            # {map name: [(key, value bytes), ...]}
        self.cgroup_rules = cgroup_rules  # {path: [rule index, ...]}


def path_key(path):
    """The oom_cgroup_paths key of a path: its bytes, NUL padded."""
    return bytes(abi.Path(path.encode("utf-8")))


def _name(rule, exact, value):
    """The name's bytes, and the mask of the bytes compared: an exact name compares its
    NUL too, a prefix does not."""
    data = value.encode("ascii")
    size = min(len(data) + (1 if exact else 0), abi.EBPF_OOM_COMM_LEN)
    rule.comm = data
    ctypes.memmove(ctypes.addressof(rule) + abi.Rule.comm_mask.offset,
                   b"\xff" * size + b"\x00" * (abi.EBPF_OOM_COMM_LEN - size), abi.EBPF_OOM_COMM_LEN)


def _cgroup(rule, path, i, cgroup_rules):
    rule.cgroup_level = language.cgroup_level(path)
    cgroup_rules.setdefault(path, []).append(i)


# Key.encoding -> how a match key's value is written into the rule: an id in the rule's
# field of the key's name, a task name (exact or a prefix), a cgroup path.
ENCODERS = {
    "id": lambda rule, key, value, i, paths: setattr(rule, key, value),
    "name": lambda rule, key, value, i, paths: _name(rule, True, value),
    "name_prefix": lambda rule, key, value, i, paths: _name(rule, False, value),
    "path": lambda rule, key, value, i, paths: _cgroup(rule, value, i, paths),
}


def _ranking(node):
    """(action, tier, by) numbers of a rule or of the fallback."""
    action = language.ACTION[node["action"]]
    tier = node["tier"] if action.ranked else action.tier
    return action.number, tier, language.BY[node.get("by", language.DEFAULT_BY)]


def _rule(i, rule, cgroup_rules):
    r = abi.Rule()
    r.action, r.tier, r.by = _ranking(rule)
    for key, value in sorted(rule["match"].items()):
        spec = language.KEYS[key]
        r.match |= spec.flag
        ENCODERS[spec.encoding](r, key, value, i, cgroup_rules)
    return r


def render(document):
    """A Rendered for the document (the same on every host: cgroup rules keep their
    paths; cgrouprules.py finds what lives there). RenderError, naming every problem,
    when language.check() refuses it."""
    errors = language.check(document)
    if errors:
        raise RenderError("\n".join(errors))
    doc = language.normalize(document)
    cgroup_rules = {}
    entries = [_rule(i, rule, cgroup_rules) for i, rule in enumerate(doc["rules"])]
    cfg = abi.Config()
    cfg.nr_rules = len(entries)
    cfg.scope = language.SCOPES[doc["scope"]]
    cfg.fallback_action, cfg.fallback_tier, cfg.fallback_by = _ranking(doc["fallback"])
    for r in entries:
        cfg.needs |= r.match
    maps = {
        abi.RULES_MAP: [(i, bytes(r)) for i, r in enumerate(entries)],
        abi.CONFIG_MAP: [(0, bytes(cfg))],
        abi.PATHS_MAP: [(path_key(path), sum(1 << i for i in indexes))
                        for path, indexes in sorted(cgroup_rules.items())],
    }
    return Rendered(doc["name"], {common.META_POLICY: doc["name"]}, maps, cgroup_rules)


def describe(map_name, value):
    """A readable dict of one map value (bytes or hex), for diffs and tests."""
    if isinstance(value, str):
        value = bytes.fromhex(value)
    struct = {abi.RULES_MAP: abi.Rule, abi.CONFIG_MAP: abi.Config, abi.STATE_MAP: abi.State,
              abi.PATHS_MAP: abi.Path}[map_name]
    if len(value) != ctypes.sizeof(struct):
        raise RenderError("%s value is %d bytes, expected %d" % (map_name, len(value), ctypes.sizeof(struct)))
    obj = struct.from_buffer_copy(value)
    out = {}
    for field, unused in struct._fields_:
        v = getattr(obj, field)
        if field == "path":
            v = bytes(value).rstrip(b"\0").decode("utf-8", "replace")
        elif field in ("comm", "comm_mask"):
            v = bytes(value[getattr(struct, field).offset:][:abi.EBPF_OOM_COMM_LEN])
            v = v.hex() if field == "comm_mask" else v.rstrip(b"\0").decode("ascii", "replace")
        elif isinstance(v, ctypes.Array):
            v = list(v)
        out[field] = v
    return out
