# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host command `ebpf-oom` (installed by the role ebpf.oom.bpf_oom; see USAGE).

Layer 8 (the host command): imports the callers below it.  It runs the same
engine as the modules, without Ansible, so there is no second loader to drift
from the first.

Nothing silent at boot: `ebpf-oom restore` logs (journald priorities) each policy
restored, a cgroup rule of a restored policy that matches no cgroup yet as a notice
(systemd makes most slices and services after it; the rule follows them when they
come), a restored policy that does not verify and a policy that failed to load as
errors, and then exits non-zero.

The off switch: `ebpf-oom off` detaches every policy (not the OOM observer, which decides
nothing) and keeps the boot restore from bringing them back; `ebpf-oom on` brings them
back (restore.switch_off, restore.switch_on).  Both print one line per policy and say
whether the switch changed (`already off` / `already on` when it did not).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import sys

from . import agent, backends, events, explain, metrics, probe, restore, state, verify
from .errors import EngineError

USAGE = """usage:
    ebpf-oom restore          re-attach every recorded policy (ebpf-oom-restore.service)
    ebpf-oom off              detach every policy, and keep the boot restore from
                              bringing them back until `ebpf-oom on`; the kernel decides OOMs
    ebpf-oom on               switch back on: restore every recorded policy
    ebpf-oom events [ARGS]    OOM kill events as JSON, or --metrics-file PATH
                              (ebpf-oom-metrics.service)
    ebpf-oom explain [ARGS]   which process an OOM would kill now, and why: under a
                              loaded policy (--policy NAME) or a document (--document FILE)
    ebpf-oom agent            keep the processes a score_adj policy matches at their
                              band's oom_score_adj (ebpf-oom-agent.service)
    ebpf-oom status [--json]  what runs here: this host's row of playbooks/status.yml"""
# sd-daemon(3) priorities: journald files each line at its level.
SD_ERR = "<3>"
SD_NOTICE = "<5>"
SD_INFO = "<6>"


def restore_main(switch_on=False):
    """`ebpf-oom restore`: every recorded policy attached again; the exit status.
    ``switch_on`` (`ebpf-oom on`): the off marker removed first."""
    try:
        if switch_on:
            was_off, (ok, failed) = restore.switch_on()
            sys.stdout.write("%sebpf-oom: %s\n" % (SD_NOTICE, "switched on" if was_off else "already on"))
        else:
            ok, failed = restore.restore_all()
    except Exception as e:  # a broken state directory must not stay silent
        sys.stderr.write("%sebpf-oom: cannot restore policies: %s\n" % (SD_ERR, e))
        return 1
    held = restore.held()
    if held:
        sys.stdout.write("%sebpf-oom: the host is switched off (%s): policies not restored: %s\n"
                         % (SD_NOTICE, restore.switched_off(), ", ".join(held)))
    problems = []
    for name in ok:
        sys.stdout.write("%sebpf-oom: restored policy %s\n" % (SD_INFO, name))
        checked = verify.verify(name=name)
        for warning in checked["warnings"]:
            sys.stdout.write("%sebpf-oom: %s; the rule matches such a cgroup once it is made\n"
                             % (SD_NOTICE, warning))
        problems.extend(checked["problems"])
    for problem in problems:
        sys.stderr.write("%sebpf-oom: restored, but it does not verify: %s\n" % (SD_ERR, problem))
    for name in sorted(failed):
        sys.stderr.write("%sebpf-oom: cannot restore policy %s: %s\n" % (SD_ERR, name, failed[name]))
    return 1 if failed or problems else 0


def off_main():
    """`ebpf-oom off`: the exit status (1 when a policy could not be detached)."""
    try:
        marked, detached, unrecorded, failed = restore.switch_off()
    except Exception as e:  # a broken state directory must not stay silent
        sys.stderr.write("%sebpf-oom: cannot switch off: %s\n" % (SD_ERR, e))
        return 1
    for name in detached:
        sys.stdout.write("%sebpf-oom: detached policy %s%s\n" % (
            SD_INFO, name, " (it had no copy for the boot restore: `ebpf-oom on` cannot bring it back)"
            if name in unrecorded else ""))
    for name in sorted(failed):
        sys.stderr.write("%sebpf-oom: cannot detach policy %s: %s\n" % (SD_ERR, name, failed[name]))
    if marked:
        sys.stdout.write("%sebpf-oom: switched off: the kernel's own heuristic decides OOMs; the "
                         "boot restore brings no policy back until `ebpf-oom on`\n" % SD_NOTICE)
    elif not detached and not failed:
        sys.stdout.write("%sebpf-oom: already off (%s); no policy was attached\n"
                         % (SD_INFO, restore.switched_off()))
    return 1 if failed else 0


def events_main(argv=None):
    """`ebpf-oom events`: print the events as JSON, or write the metrics file (the metrics
    timer's job); the exit status."""
    parser = argparse.ArgumentParser(prog="ebpf-oom events", description="OOM kill events of this host.")
    parser.add_argument("--metrics-file", help="write node_exporter textfile metrics here (atomically)")
    parser.add_argument("--since", help="events since a duration ago (15m), Unix seconds or ISO 8601")
    parser.add_argument("--policy", action="append", help="only events of this policy (repeatable)")
    parser.add_argument("--cgroup-depth", type=int, default=metrics.CGROUP_DEPTH, metavar="N",
                        help="with --metrics-file: label kills with the memory cgroup cut to N levels "
                             "(default %(default)s)")
    args = parser.parse_args(argv)
    if args.cgroup_depth < 0:
        parser.error("--cgroup-depth must be 0 or more")
    try:
        result = events.collect(since=args.since, policies=args.policy)
    except ValueError as e:
        parser.error(str(e))
    for warning in result["warnings"]:
        sys.stderr.write("ebpf-oom events: warning: %s\n" % warning)
    if args.metrics_file:
        try:
            metrics.update_metrics(args.metrics_file, result, force=True, cgroup_depth=args.cgroup_depth)
        except OSError as e:
            sys.stderr.write("ebpf-oom events: cannot write %s: %s\n" % (args.metrics_file, e))
            return 1
    else:
        json.dump({"events": result["events"], "observer": result["observer"]}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    return 0


def generic_object():
    """The generic program's object kept for the boot restore of a declarative policy (the
    same object for every document), or None."""
    for name in state.saved_names():
        try:
            obj_path, record = state.load(name)
        except EngineError:
            continue
        if record.get("document") is not None:
            return obj_path
    return None


def read_document(path):
    """A policy document from a JSON file (the engine reads no YAML: it is the standard
    library only)."""
    with open(path) as handle:
        try:
            return json.load(handle)
        except ValueError as e:
            raise ValueError("%s is not a JSON document: %s" % (path, e))


def explain_table(result):
    """The ranking of an explain() result as lines for a person at a shell."""
    oom = result["oom"]
    lines = ["policy %s, a %s OOM%s: %s" % (
        result["policy"], oom["kind"], " of %s" % oom["memcg"] if oom["memcg"] else "",
        "the policy decides" if result["policy_acts"] else "the policy does not act; the kernel decides")]
    rows = [("#", "pid", "comm", "cgroup", "tier", "points", "rule")]
    for rank, t in enumerate(result["ranking"], 1):
        rule = t["rule"]["text"] if t["rule"] else "(%s)" % t["action"]
        rows.append((str(rank), str(t["pid"]), t["comm"], t["cgroup"],
                     str(t["tier"]) if t["action"] == "prefer" else t["action"], str(t["points"]), rule))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    kernel = result["kernel_victim"]
    if kernel:
        lines.append("without the policy the kernel would kill %s %s (points %s)"
                     % (kernel["pid"], kernel["comm"], kernel["points"]))
    counts = result["counts"]
    lines.append("candidates %(candidates)s, protected %(protected)s, unkillable %(unkillable)s, "
                 "unranked %(unranked)s" % counts)
    lines += ["warning: %s" % w for w in result["warnings"]]
    return [line.rstrip() for line in lines]


def explain_main(argv):
    """`ebpf-oom explain`: the exit status."""
    parser = argparse.ArgumentParser(prog="ebpf-oom explain",
                                     description="Which process an OOM would kill now, and why; nothing is killed.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--policy", metavar="NAME", help="a loaded declarative policy")
    which.add_argument("--document", metavar="FILE", help="a policy document (JSON)")
    parser.add_argument("--memcg", metavar="PATH", help="imagine this memory cgroup running out "
                                                        "(default: the whole host)")
    parser.add_argument("--top", type=int, default=5, metavar="N", help="rank N processes (default 5)")
    parser.add_argument("--object", metavar="PATH",
                        help="the generic program's object (default: the one kept for this host's "
                             "declarative policies)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be 1 or more")
    try:
        document = read_document(args.document) if args.document else None
        obj_path = args.object or (state.load(args.policy)[0] if args.policy else generic_object())
        if obj_path is None:
            raise EngineError("no generic object on this host (no declarative policy is kept here): "
                              "give --object, or use the module ebpf.oom.explain")
        backend = backends.choose().name if document is not None else None  # as ebpf.oom.policy would
        result = explain.explain(obj_path, oom=args.memcg, name=args.policy, document=document, top=args.top,
                                 backend=backend)
    except (EngineError, OSError, ValueError) as e:
        sys.stderr.write("ebpf-oom explain: %s\n" % e)
        return 1
    if args.json:
        json.dump(result, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(explain_table(result)) + "\n")
    return 0


def status_main(argv):
    """`ebpf-oom status`: this host's row of the fleet's table; the exit status."""
    parser = argparse.ArgumentParser(prog="ebpf-oom status", description="What runs on this host.")
    parser.add_argument("--json", action="store_true", help="the row as JSON")
    args = parser.parse_args(argv)
    row = probe.status(probe.kernel_info())
    if args.json:
        json.dump(row, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("".join("%-10s %s\n" % (column + ":", row[column]) for column in probe.STATUS_COLUMNS))
    return 0


def main(argv):
    """`ebpf-oom ARGS`; the exit status."""
    if argv[:1] == ["restore"] and len(argv) == 1:
        return restore_main()
    if argv == ["off"]:
        return off_main()
    if argv == ["on"]:
        return restore_main(switch_on=True)
    if argv[:1] == ["events"]:
        return events_main(argv[1:])
    if argv[:1] == ["explain"]:
        return explain_main(argv[1:])
    if argv == ["agent"]:
        return agent.main()
    if argv[:1] == ["status"]:
        return status_main(argv[1:])
    sys.stderr.write(USAGE + "\n")
    return 2
