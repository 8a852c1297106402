# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check that the host runs the policies its records say, as the kernel sees them.

Layer 4 (beside the loader): imports cgrouprules, pins, maps, the layout, the renderer,
the kernel binding and the leaf helpers; changes nothing.

verify(name=None, object_sha256=None, policy_name=None, strict=False, extra=None)
    -> dict(policies=[facts], problems=[str], warnings=[str])
    facts: name, object_sha256, source_sha256, collection_version, policy_name,
    loaded_at, globals, programs [{name, section, attach_type, target, prog_id, tag,
    link_id, pin, attached, metadata (of the program the pinned link runs)}], maps,
    and for a declarative policy backend and cgroups ({path: [the id of the cgroup
    its rules match now]}). A cgroup rule that matches no live cgroup is a warning,
    or with ``strict`` a problem: its path may be misspelled, or what it names gone.
    ``extra(layout, record) -> (facts, problems)``: what a policy's backend checks
    besides (backends.verify_policies), added to its facts and problems.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from . import abi, bpffs, cgrouprules, libbpf, pins, renderer
from .common import META_POLICY, META_PREFIX, META_SOURCE_SHA256
from .errors import BpffsError, BpfError, LoaderError, RenderError
from .maps import hex_or_none, plan_map, read_map, spec_from_record
from .names import check_name

META_SOURCE_KEY = META_SOURCE_SHA256[len(META_PREFIX):]
META_POLICY_KEY = META_POLICY[len(META_PREFIX):]


def verify(name=None, object_sha256=None, policy_name=None, strict=False, extra=None):
    """Check the named policy (or every one) against its record and the expectations."""
    if name is not None:
        check_name(name, LoaderError)
    root = bpffs.mounted_root()
    names = [name] if name is not None else pins.policy_names(root)
    policies, problems, warnings = [], [], []
    for each in names:
        layout = bpffs.Layout(root or bpffs.roots()[0], each)
        if root is None or not layout.exists():
            problems.append("policy %s is not loaded (no %s)" % (each, layout.dir))
            continue
        facts, found = _verify_one(layout, object_sha256, policy_name, extra)
        policies.append(facts)
        problems.extend(found)
        unmatched = ["policy %s: cgroup rule %s matches no cgroup: none lives at that path now"
                     % (each, path) for path in cgrouprules.unmatched(facts.get("cgroups", {}))]
        (problems if strict else warnings).extend(unmatched)
    return {"policies": policies, "problems": problems, "warnings": warnings}


def _verify_one(layout, object_sha256, policy_name, extra=None):
    try:
        record = bpffs.read_record(layout.record)
    except BpffsError as exc:
        return {"name": layout.name}, ["policy %s: %s" % (layout.name, exc)]
    if record is None:
        return {"name": layout.name}, ["policy %s: record pin %s is missing"
                                       % (layout.name, layout.record)]
    facts = {key: record.get(key) for key in ("name", "object_sha256", "source_sha256",
                                              "collection_version", "policy_name",
                                              "loaded_at", "globals")}
    facts["programs"], facts["maps"], problems = [], record.get("pinned_maps", []), []
    for prog in record.get("programs", []):
        fact, found = _verify_program(layout, record, prog)
        facts["programs"].append(fact)
        problems.extend(found)
    for pmap in record.get("pinned_maps", []):
        problems.extend(_verify_map(record, pmap))
    problems.extend(_verify_decider(layout, record))
    if object_sha256 and record.get("object_sha256") != object_sha256:
        problems.append("policy %s runs object sha256 %s, expected %s"
                        % (layout.name, record.get("object_sha256"), object_sha256))
    running = set(p["metadata"].get(META_POLICY_KEY) for p in facts["programs"]
                  if "metadata" in p)
    # No program readable (a pin is gone: listed above): the name the record holds.
    running = running or {record.get("policy_name")}
    if policy_name is not None and running != {policy_name}:
        problems.append("policy %s reports policy name %s, expected %r"
                        % (layout.name, ", ".join(repr(n) for n in sorted(running, key=str)),
                           policy_name))
    if record.get("document") is not None:
        facts["backend"] = record.get("backend")
        facts["cgroups"], found = _cgroups(layout, record)
        problems.extend(found)
        if extra is not None:
            more, found = extra(layout, record)
            facts.update(more)
            problems.extend(found)
    known = set([bpffs.RECORD] + [os.path.basename(p["pin"]) for p in record.get("programs", [])]
                + [os.path.basename(m["pin"]) for m in record.get("pinned_maps", [])])
    for entry in layout.entries():
        if entry not in known:
            problems.append("policy %s: unexpected entry %s"
                            % (layout.name, os.path.join(layout.dir, entry)))
    return facts, problems


def _cgroups(layout, record):
    """({path: [ids of the live cgroups its rules match]}, problems) of a declarative policy."""
    try:
        rules = renderer.render(record["document"]).cgroup_rules
        if not rules:
            return {}, []
        with libbpf.pinned(layout.map(abi.LIVE_MAP)) as fd:
            return cgrouprules.live(fd, rules), []
    except (RenderError, BpfError) as exc:
        return {}, ["policy %s: cannot tell what its cgroup rules match: %s" % (layout.name, exc)]


def _verify_program(layout, record, prog):
    """(fact, problems) of one recorded program: its link, and the program that link runs."""
    fact = {key: prog.get(key) for key in ("name", "section", "attach_type", "target",
                                           "prog_id", "tag", "link_id", "pin")}
    info, problems = pins.live_link(layout, prog)
    fact["attached"] = not problems
    if info is None or not info["prog_id"]:
        return fact, problems
    try:
        fd = libbpf.prog_fd_by_id(info["prog_id"])
    except BpfError:
        return fact, problems + ["program %s: program id %d is gone"
                                 % (prog["name"], info["prog_id"])]
    try:
        running, meta = libbpf.prog_info(fd), libbpf.prog_metadata(fd, META_PREFIX)
    finally:
        os.close(fd)
    fact["metadata"] = meta
    if running["tag"] != prog["tag"]:
        problems.append("program %s: tag %s, recorded %s"
                        % (prog["name"], running["tag"], prog["tag"]))
    if record.get("source_sha256") and meta.get(META_SOURCE_KEY) != record["source_sha256"]:
        problems.append("program %s: embedded source sha256 %s, recorded %s"
                        % (prog["name"], meta.get(META_SOURCE_KEY), record["source_sha256"]))
    if record.get("policy_name") is not None and \
            meta.get(META_POLICY_KEY) != record["policy_name"]:
        problems.append("program %s: reports policy name %r, recorded %r"
                        % (prog["name"], meta.get(META_POLICY_KEY), record["policy_name"]))
    return fact, problems


def _verify_decider(layout, record):
    """Problems of the hand-over (loader.py): the programs the record names decide."""
    if not record.get("token") or not os.path.lexists(layout.map(abi.DECIDER_MAP)):
        return []  # not a policy that hands over (or its pin is gone: listed already)
    try:
        with libbpf.pinned(layout.map(abi.DECIDER_MAP)) as fd:
            key = abi.EBPF_OOM_DECIDER_NEXT.to_bytes(4, "little")
            token = int.from_bytes(libbpf.map_lookup(fd, key, 8), "little")
    except BpfError as exc:
        return ["map %s: %s" % (abi.DECIDER_MAP, exc)]
    if token != record["token"]:
        return ["policy %s: its OOMs are handed to programs with token %d, not to the ones "
                "its record names (token %d): an apply did not finish; apply it again"
                % (layout.name, token, record["token"])]
    return []


def _verify_map(record, pmap):
    """Problems of one pinned map: its pin, its id, and the managed entries' contents."""
    if not os.path.lexists(pmap["pin"]):
        return ["map %s: pin %s is missing" % (pmap["name"], pmap["pin"])]
    problems = []
    try:
        with libbpf.pinned(pmap["pin"]) as fd:
            info = libbpf.map_info(fd)
            if info["id"] != pmap["map_id"]:
                problems.append("map %s: pin holds map %d, recorded %d"
                                % (pmap["name"], info["id"], pmap["map_id"]))
            entries = record.get("maps", {}).get(pmap["name"])
            if entries is not None:
                spec = spec_from_record({"type": info["type_id"], "key_size": info["key_size"],
                                         "value_size": info["value_size"],
                                         "max_entries": info["max_entries"]}, entries)
                for key, before, after in plan_map(spec, read_map(fd, spec)):
                    problems.append("map %s: key %s holds %s, expected %s"
                                    % (pmap["name"], key.hex(), hex_or_none(before),
                                       hex_or_none(after)))
    except BpfError as exc:
        problems.append("map %s: %s" % (pmap["name"], exc))
    return problems
