# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cgroup hierarchies of this host: where they are mounted, and cgroup paths and ids.

Layer 0 (leaf helpers): imports nothing from the engine.

The one reader of /proc/self/mountinfo (proc(5)) in the engine: the renderer
resolves a policy's cgroup paths in the cgroup v2 hierarchy, the events reader
turns a victim's memory cgroup id back into a path.  A cgroup's id is the inode
number of its directory.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

MOUNTINFO = "/proc/self/mountinfo"
_ESCAPE_RE = re.compile(r"\\([0-7]{3})")


def _unescape(field):
    """A mountinfo path field with its octal escapes (\\040 for a space) decoded."""
    return _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 8)), field)


def mounts(mountinfo=MOUNTINFO):
    """[(mount point, root inside the file system, fstype, super options)] in mount order;
    OSError when ``mountinfo`` cannot be read."""
    with open(mountinfo) as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) < sep + 4:
            continue
        out.append((_unescape(fields[4]), _unescape(fields[3]), fields[sep + 1], fields[sep + 3]))
    return out


def cgroup2_mount(mountinfo=MOUNTINFO):
    """Where the cgroup v2 hierarchy is mounted (the first cgroup2 mount), or None;
    OSError when ``mountinfo`` cannot be read."""
    for point, _root, fstype, _opts in mounts(mountinfo):
        if fstype == "cgroup2":
            return point
    return None


def memcg_mount(mountinfo=MOUNTINFO):
    """(mount point, root inside the hierarchy) of the memory cgroup hierarchy, or None.

    cgroup v1 with a memory controller wins over the unified (v2) hierarchy.
    """
    try:
        found = mounts(mountinfo)
    except OSError:
        return None
    v2 = None
    for point, root, fstype, opts in found:
        if fstype == "cgroup" and "memory" in opts.split(","):
            return point, root
        if fstype == "cgroup2" and v2 is None:
            v2 = (point, root)
    return v2


def resolve(path, root):
    """(cgroup id, level) of a cgroup path under the mount point ``root``, or None when
    that cgroup does not exist."""
    parts = [p for p in path.split("/") if p]
    full = os.path.join(root, *parts)
    try:
        st = os.stat(full)
    except OSError:
        return None
    if not os.path.isdir(full):
        return None
    return st.st_ino, len(parts)


def memcg_paths(ids, mount=None):
    """{memory cgroup id: path as the kernel prints it} for the cgroups in ``ids`` that exist."""
    mount = mount or memcg_mount()
    wanted, found = set(i for i in ids if i), {}
    if not mount or not wanted:
        return found
    top, inner = mount
    for dirpath, _dirs, _files in os.walk(top):
        try:
            ino = os.stat(dirpath).st_ino
        except OSError:
            continue
        if ino in wanted:
            rel = os.path.relpath(dirpath, top)
            found[ino] = os.path.normpath(os.path.join(inner, "" if rel == "." else rel))
            if len(found) == len(wanted):
                break
    return found
