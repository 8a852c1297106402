# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What is pinned for each policy now, and whether it is what its record says.

Layer 3 (reading what is pinned): imports the layout, the kernel binding and the
leaf helpers; read-only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from . import bpffs, libbpf
from .errors import BpffsError, BpfError


def policy_names(root):
    """The names of the policy directories under the bpffs ``root`` (None: nothing there)."""
    if root is None or not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)))


def read_record(layout):
    """The policy's record, or None when it is missing or unreadable."""
    try:
        return bpffs.read_record(layout.record)
    except BpffsError:
        return None


def list_policies():
    """The records of every policy directory; a directory without a readable record (an
    apply killed before it pinned one) is listed as {name, problem}, so that whoever
    removes what is not wanted (the role's purge) sees it too."""
    root = bpffs.mounted_root()
    out = []
    for name in policy_names(root):
        record = read_record(bpffs.Layout(root, name))
        out.append(record if record is not None else {
            "name": name, "problem": "no record: an apply that did not finish left this directory; "
                                     "apply the policy again or remove it"})
    return out


def links_match(record_program, info):
    """Discrepancies between a recorded program and the live link_info of its pin."""
    problems = []
    name = record_program["name"]
    if info["id"] != record_program["link_id"]:
        problems.append("program %s: pin holds link %d, recorded link %d"
                        % (name, info["id"], record_program["link_id"]))
    if not info["prog_id"]:
        problems.append("program %s: link %d is detached (no program)" % (name, info["id"]))
    elif info["prog_id"] != record_program["prog_id"]:
        problems.append("program %s: link runs program id %d, recorded %d"
                        % (name, info["prog_id"], record_program["prog_id"]))
    for field in ("attach_type", "target"):
        if info[field] != record_program[field]:
            problems.append("program %s: %s is %s, expected %s"
                            % (name, field, info[field], record_program[field]))
    return problems


def live_link(layout, prog):
    """(link_info or None, problems) of one recorded program's link pin."""
    pin = layout.link(prog["name"])
    if not os.path.lexists(pin):
        return None, ["program %s: link pin %s is missing" % (prog["name"], pin)]
    try:
        with libbpf.pinned(pin) as fd:
            info = libbpf.link_info(fd)
    except BpfError as exc:
        return None, ["program %s: %s is not a live link: %s" % (prog["name"], pin, exc)]
    return info, links_match(prog, info)


def link_problems(layout, record):
    """Problems with every recorded link (empty when all are alive as recorded)."""
    return [problem for prog in record.get("programs", [])
            for problem in live_link(layout, prog)[1]]


def map_pin_problems(record):
    """Problems with the recorded map pins (missing, or holding another map)."""
    problems = []
    for pmap in record.get("pinned_maps", []):
        try:
            with libbpf.pinned(pmap["pin"]) as fd:
                if libbpf.map_info(fd)["id"] != pmap["map_id"]:
                    problems.append("map %s: pin holds another map" % pmap["name"])
        except BpfError as exc:
            problems.append("map %s: %s" % (pmap["name"], exc))
    return problems
