# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A policy's map entries: what a map must hold (a spec), the changes that get it there,
and reading and writing them.

Layer 2 (map data): imports the kernel binding and the leaf helpers.

A spec is {name, type, key_size, value_size, max_entries, entries: {key bytes:
value bytes}}.  The named maps of a policy hold exactly their spec's entries:
hash maps lose other keys, arrays have every other index zeroed.  Changes are
[(key, before, after)] with None for an absent key.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from . import libbpf
from .errors import LoaderError

MANAGED_MAP_TYPES = (libbpf.BPF_MAP_TYPE_HASH, libbpf.BPF_MAP_TYPE_ARRAY,
                     libbpf.BPF_MAP_TYPE_LRU_HASH)


def _pairs(entries, what):
    if isinstance(entries, dict):
        return list(entries.items())
    pairs = []
    for item in entries or []:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise LoaderError("%s: each entry must be a (key, value) pair, got %r" % (what, item))
        pairs.append((item[0], item[1]))
    return pairs


def map_spec(name, mtype, key_size, value_size, max_entries, entries):
    """Validate and pack the wanted entries of one map -> spec dict (entries: {k: v})."""
    if mtype not in MANAGED_MAP_TYPES:
        raise LoaderError("map %s is a %s map; only hash, lru_hash and array maps can be set"
                          % (name, libbpf.map_type_str(mtype)))
    packed = {}
    for key, value in _pairs(entries, "map %s" % name):
        try:
            k = libbpf.pack(key, key_size, "map %s key %r" % (name, key))
            v = libbpf.pack(value, value_size, "map %s value for key %r" % (name, key))
        except ValueError as exc:
            raise LoaderError(str(exc))
        if k in packed:
            raise LoaderError("map %s: key %r given twice" % (name, key))
        if mtype == libbpf.BPF_MAP_TYPE_ARRAY and int.from_bytes(k, "little") >= max_entries:
            raise LoaderError("map %s: key %r is out of range (array of %d entries)"
                              % (name, key, max_entries))
        packed[k] = v
    if len(packed) > max_entries:
        raise LoaderError("map %s: %d entries given, it holds at most %d"
                          % (name, len(packed), max_entries))
    return {"name": name, "type": mtype, "key_size": key_size, "value_size": value_size,
            "max_entries": max_entries, "entries": packed}


def fresh_contents(spec):
    """{key: value} of a newly created map of the spec's shape: arrays are all zeros."""
    if spec["type"] != libbpf.BPF_MAP_TYPE_ARRAY:
        return {}
    zero = b"\0" * spec["value_size"]
    return dict((index.to_bytes(spec["key_size"], "little"), zero)
                for index in range(spec["max_entries"]))


def desired_contents(spec):
    """{key: value} the map must hold: arrays have every index, zero unless given."""
    out = fresh_contents(spec)
    out.update(spec["entries"])
    return out


def plan_map(spec, current):
    """[(key, before, after)] turning ``current`` ({k: v}) into the spec; None = absent."""
    want = desired_contents(spec)
    changes = []
    for key in sorted(set(current) | set(want)):
        before, after = current.get(key), want.get(key)
        if before != after:
            changes.append((key, before, after))
    return changes


def hex_or_none(value):
    return value.hex() if value is not None else None


def map_changes_out(name, changes):
    """Changes as the modules report them: [{map, key, before, after}] in hex."""
    return [{"map": name, "key": hex_or_none(k), "before": hex_or_none(b), "after": hex_or_none(a)}
            for k, b, a in changes]


def record_maps(spec):
    """The record's form of a spec's managed entries: [[key_hex, value_hex], ...]."""
    return [[k.hex(), v.hex()] for k, v in sorted(spec["entries"].items())]


def spec_from_record(spec_like, entries_hex):
    """A spec with the record's hex entries (for verify and idempotence)."""
    spec = dict(spec_like)
    spec["entries"] = {bytes.fromhex(k): bytes.fromhex(v) for k, v in entries_hex}
    return spec


def record_entries(maps):
    """The record's managed entries ({map: [[key_hex, value_hex]]}) as apply() takes them."""
    return {name: [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in entries]
            for name, entries in maps.items()}


def read_map(fd, spec):
    """{key: value} the map ``fd`` holds now."""
    return dict(libbpf.map_items(fd, spec["key_size"], spec["value_size"]))


def sync_map(fd, name, spec, write=True):
    """Plan (and unless not ``write``, make) the changes that give map ``fd`` the spec's
    contents; returns them as map_changes_out() reports them."""
    changes = plan_map(spec, read_map(fd, spec))
    if write:
        for key, _before, after in changes:
            if after is None:
                libbpf.map_delete(fd, key)
            else:
                libbpf.map_update(fd, key, after)
    return map_changes_out(name, changes)
