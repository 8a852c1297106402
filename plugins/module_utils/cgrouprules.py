# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cgroup rules follow their paths: which live cgroup each rule of a policy matches now.

Layer 3 (what is pinned, kept, observed): imports the kernel binding, the ABI's
names and the leaf helpers.

A policy document's cgroup rule names a path. The generic program keeps, per rule,
the id of the cgroup that lives at that path (its map oom_rule_cgroups): its programs
on the cgroup_mkdir and cgroup_rmdir tracepoints write it whenever such a cgroup is
made or removed. What already exists when the programs attach is written here, once
(`sync`, called by the loader after the programs are attached, so that no cgroup made
in between is missed); `live` reads the map back for the record, verify and metrics.
Only the cgroup v2 hierarchy counts: on a host without it, cgroup rules match nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from . import cgroups, libbpf

SETTLE_ROUNDS = 5  # a path made or removed while we look is looked at again


def v2_mount():
    """(mount point, root inside the hierarchy) of the cgroup v2 hierarchy, or None."""
    try:
        found = cgroups.mounts()
    except OSError:
        return None
    for point, root, fstype, _opts in found:
        if fstype == "cgroup2":
            return point, root
    return None


def cgroup_id(path, mount):
    """The id of the live cgroup at a rule's path (kernel form), or 0 when there is none."""
    if mount is None:
        return 0
    point, root = mount
    root = root.rstrip("/")
    if path != root and not path.startswith(root + "/"):
        return 0  # outside what this mount shows (a cgroup namespace)
    full = os.path.join(point, path[len(root):].lstrip("/"))
    try:
        st = os.stat(full)
    except OSError:
        return 0
    return st.st_ino if os.path.isdir(full) else 0


def _key(index):
    return index.to_bytes(4, "little")


def _write(fd, index, value):
    libbpf.map_update(fd, _key(index), value.to_bytes(8, "little"))


def _read(fd, index):
    return int.from_bytes(libbpf.map_lookup(fd, _key(index), 8), "little")


def look(cgroup_rules, mount=None):
    """{path: id of the cgroup living there now, 0: none} without writing anything."""
    mount = mount if mount is not None else v2_mount()
    return dict((path, cgroup_id(path, mount)) for path in sorted(cgroup_rules))


def sync(fd, cgroup_rules, mount=None):
    """Write the id of the cgroup at each rule's path (0: none) into the map ``fd``
    (oom_rule_cgroups) and zero the entries of rules without a path -> {path: id}.

    The programs on the tracepoints run meanwhile: a cgroup made or removed between
    the look and the write is looked at again, until the answer holds still."""
    mount = mount if mount is not None else v2_mount()
    indexes = set(i for found in cgroup_rules.values() for i in found)
    for index in range(_max_entries(fd)):
        if index not in indexes and _read(fd, index):
            _write(fd, index, 0)
    out = {}
    for path, found in sorted(cgroup_rules.items()):
        for _round in range(SETTLE_ROUNDS):
            ident = cgroup_id(path, mount)
            for index in found:
                _write(fd, index, ident)
            if cgroup_id(path, mount) == ident:
                break
        out[path] = ident
    return out


def _max_entries(fd):
    return libbpf.map_info(fd)["max_entries"]


def live(fd, cgroup_rules):
    """{path: [the id of the cgroup its rules match now]} ([] when none lives there)."""
    out = {}
    for path, found in sorted(cgroup_rules.items()):
        ids = sorted(set(_read(fd, i) for i in found) - {0})
        out[path] = ids
    return out


def unmatched(matched):
    """The paths of a {path: [ids]} that match no live cgroup, sorted."""
    return sorted(path for path, ids in matched.items() if not ids)
