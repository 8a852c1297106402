# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a policy is enforced: one class per way, behind one small interface, and the
registry of them (the only source of backend names and of the `backend` choices).

Layer 5 (above the loader): imports the loader, verify, the agent's ledger (scoreadj),
pins, cgrouprules, the policy language, the renderer, the ABI, the kernel binding and
the leaf helpers.

A backend says what the kernel must offer (`needs`: BTF symbols, `map_types`;
`missing()` says what a host lacks), which programs of the generic object
(bpf/generic.bpf.c) it loads and attaches, what of a document it cannot enforce, and
how it applies, removes and verifies a policy. An apply is planned once (`plan`: the
document checked and rendered, the backend's warnings and data) and the plan applied.
REGISTRY lists them, the best first:

    evaluate_task  the kernel's victim selection asks the policy about every OOM
                   candidate (the hook bpf_oom_evaluate_task): the exact choice the
                   document describes
    score_adj      stock kernels: every process a rule matches carries its class's
                   oom_score_adj (scoreadj.py: the bands), written by the agent
                   (agent.py) as processes start, change name or cgroup; the kernel's
                   own heuristic then chooses

One policy per host decides OOMs (a hook program, or the score_adj agent's values):
`one_decider`, run by the loader with the bpffs lock held, refuses a second one
under another name, naming the first. C policies (an object and its maps) go through
`apply_object`, so the same check covers them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from . import abi, bpffs, cgrouprules, language, libbpf, loader, pins, renderer, scoreadj, shadow, verify
from .common import BTF_VMLINUX, HOOK_FUNC, HOOK_SECTION, NAME_FUNC
from .errors import BpfError, LoaderError, RenderError, UnsupportedKernel
from .maps import record_entries

SETTLE = 1.0  # seconds verify gives a process that just started to get its value
SHADOW = "shadow"  # the mode in which a policy judges OOMs and decides none
# Maps new with each rule set (loader.apply's derived): the live cgroup ids and the mode,
# written after attach, and the shadow verdicts and counts, which are the rules' own.
DERIVED = (abi.LIVE_MAP, abi.MODE_MAP, abi.SHADOW_LOG_MAP, abi.SHADOW_STATS_MAP)


class Plan(object):
    """One apply, made once: the document checked and rendered, what the backend warns
    about, and its own data (score_adj: the bands).  ``guard``: None, or a check run with
    the bpffs lock held before anything changes, which raises to refuse (the boot restore:
    the kept copy is still the one it read)."""

    def __init__(self, backend, document, rendered, warnings, bands=None):
        self.backend = backend
        self.document = document
        self.rendered = rendered
        self.warnings = warnings
        self.bands = bands
        self.guard = None


def _checks(name, guard, deciding):
    """loader.apply's under_lock: ``guard`` (when given), then the one-decider check."""
    def under_lock(root, obj):
        if guard is not None:
            guard()
        one_decider(root, name, deciding(obj))
    return under_lock


class Backend(object):
    """The interface; EvaluateTask and ScoreAdj are the two there are."""

    name = None
    programs = ()      # the generic object's programs this backend loads and attaches
    needs = ()         # [(kernel BTF symbol, kind)] they need (tests/unit holds it to the object)
    map_types = ()     # BPF map types the kernel must create for them

    def missing(self):
        """What this host lacks for this backend ([] when it can use it): kernel symbols by
        name; libbpf, BTF and map types in words."""
        try:
            libbpf.libbpf_version()
        except BpfError:
            return ["libbpf.so.1"]
        if not os.path.exists(BTF_VMLINUX):
            return ["BTF (%s)" % BTF_VMLINUX]
        found = [name for name, kind in self.needs if not libbpf.vmlinux_btf_has(name, kind)]
        found.extend("%s maps" % libbpf.map_type_str(t) for t in self.map_types
                     if not libbpf.map_type_supported(t))
        return found

    def attached(self):
        """The programs this backend loads and attaches on this host."""
        return list(self.programs)

    def plan(self, document):
        """The Plan of an apply of ``document``; RenderError (every problem) when it is not
        a valid document or this backend cannot enforce it."""
        return Plan(self, document, renderer.render(document), [])

    def apply(self, name, object_path, plan, check_mode=False, persist=True):
        """Load or update the policy as planned; loader.apply's result plus `cgroups`
        ({path: [id of the live cgroup its rules match]}), `warnings` and `backend`."""
        old = _record(name)
        before = of_record(old) if old is not None else None
        rendered = plan.rendered
        followed = {}

        def after_attach(map_fd):
            followed.update(cgrouprules.sync(map_fd(abi.LIVE_MAP), rendered.cgroup_rules))
            # The mode: one write, which the next OOM latches (generic.h: shadow mode).
            libbpf.map_update(map_fd(abi.MODE_MAP), bytes(4), abi.MODES[mode].to_bytes(4, "little"))

        mode = shadow.mode_of(plan.document)
        result = loader.apply(name, object_path, globals=rendered.globals, maps=rendered.maps,
                              check_mode=check_mode, persist=persist, document=plan.document,
                              programs=self.attached(), after_attach=after_attach,
                              backend=self.name, derived=DERIVED,
                              under_lock=_checks(name, plan.guard,
                                                 lambda unused_obj: mode != SHADOW))
        if before is not None and before.name != self.name and not check_mode:
            # Another backend's policy of this name was swapped out by the load (its
            # programs detached only once these were attached): what it kept goes now.
            before.let_go()
        if check_mode:  # nothing was written: what the rules would match now
            followed = cgrouprules.look(rendered.cgroup_rules)
        result["cgroups"] = dict((path, [ident] if ident else [])
                                 for path, ident in sorted(followed.items()))
        result["warnings"] = list(plan.warnings)
        result["backend"] = self.name
        result["mode"] = mode
        return result

    def remove(self, name, check_mode=False):
        """Unload the policy: loader.remove's result."""
        return loader.remove(name, check_mode=check_mode)

    def let_go(self):
        """What a policy of this backend keeps besides its pins, undone once they are gone
        (its programs detached): the number of things put back."""
        return 0

    def verify(self, layout, record):
        """(facts, problems) beyond the pins verify.py checks for every policy."""
        return {}, []


class EvaluateTask(Backend):
    """The kernel's victim selection asks the policy about each candidate."""

    name = "evaluate_task"
    # Both modes' programs, so that a switch is one write (generic.h: shadow mode).
    programs = (abi.NAME_PROGRAM, abi.EVAL_PROGRAM, abi.DONE_PROGRAM) + abi.SHADOW_PROGRAMS + \
        abi.CGROUP_PROGRAMS + (abi.TASKS_PROGRAM,)  # explain runs the policy's own iterator
    needs = ((HOOK_FUNC, "func"), (NAME_FUNC, "func"), ("out_of_memory", "func"),
             ("bpf_iter_task", "func"), ("btf_trace_cgroup_mkdir", "typedef"),
             ("btf_trace_cgroup_rmdir", "typedef"), ("btf_trace_mark_victim", "typedef"))

    def verify(self, layout, record):
        """The mode the programs run in is the record's."""
        want = shadow.mode_of(record.get("document"))
        try:
            live = shadow.live_mode(layout)
        except BpfError as exc:
            return {"mode": want}, ["policy %s: cannot read its mode: %s" % (layout.name, exc)]
        if live is not None and live != want:
            return {"mode": live}, ["policy %s runs in %s mode, its record says %s: apply it again"
                                    % (layout.name, live, want)]
        return {"mode": want}, []


class ScoreAdj(Backend):
    """The kernel's heuristic, steered: each process a rule matches carries its band's
    oom_score_adj, written at once for the processes there now and by the agent for
    those that come."""

    name = scoreadj.BACKEND
    programs = abi.CGROUP_PROGRAMS + abi.ADJ_PROGRAMS + (abi.TASKS_PROGRAM,)
    needs = (("bpf_iter_task", "func"), ("btf_trace_cgroup_attach_task", "typedef"),
             ("btf_trace_cgroup_mkdir", "typedef"), ("btf_trace_cgroup_rmdir", "typedef"),
             ("btf_trace_sched_process_exec", "typedef"), ("btf_trace_sched_process_exit", "typedef"),
             ("btf_trace_sched_process_fork", "typedef"), ("btf_trace_task_rename", "typedef"))
    map_types = (libbpf.BPF_MAP_TYPE_RINGBUF,)

    def missing(self):
        """Backend.missing, and the host's pid namespace (see scoreadj.pid_namespace_problem)."""
        found = super(ScoreAdj, self).missing()
        problem = scoreadj.pid_namespace_problem()
        return found + ["the initial pid namespace (%s)" % problem] if problem else found

    def attached(self):
        """Backend.attached, and the program on new credentials where the kernel allows
        fexit programs (else a process that changes its uid is found by the sweep)."""
        extra = [abi.CREDS_PROGRAM] if libbpf.fexit_allowed(abi.CREDS_FUNC) else []
        return list(self.programs) + extra

    def plan(self, document):
        if shadow.mode_of(document) == SHADOW:
            raise RenderError(
                "mode: shadow needs the OOM hook (backend %s): on a stock kernel the victim the "
                "policy's oom_score_adj values would have produced depends on every candidate's "
                "memory at the moment of the kill, which only the kernel's scan sees, and this "
                "backend does not judge inside that scan (a verdict made up after the kill, the "
                "victim gone, would be a guess); run it in shadow on a hook kernel, or enforce it here"
                % EvaluateTask.name)
        plan = super(ScoreAdj, self).plan(document)
        plan.bands = scoreadj.Bands(document)
        plan.warnings = list(plan.bands.warnings)
        if abi.CREDS_PROGRAM not in self.attached() and any(
                "uid" in rule["match"] for rule in language.normalize(document)["rules"]):
            plan.warnings.append(
                "this kernel refuses fexit programs (on %s): a process whose uid changes "
                "(setuid) gets its uid rule's value at the agent's next sweep (every %d s), "
                "not at once" % (abi.CREDS_FUNC, scoreadj.SWEEP_EVERY))
        return plan

    def apply(self, name, object_path, plan, check_mode=False, persist=True):
        """Backend.apply, then every process there now gets its band's value (`score_adj`:
        bands, written, errors, agent: whether the agent runs to handle the ones to come)."""
        result = super(ScoreAdj, self).apply(name, object_path, plan, check_mode, persist)
        bands = plan.bands
        facts = {"bands": [{"class": what, "oom_score_adj": value} for what, value in bands.levels],
                 "gap": bands.gap, "written": 0, "errors": [], "agent": scoreadj.agent_running(),
                 "credentials": abi.CREDS_PROGRAM in self.attached()}
        if not check_mode:
            layout = bpffs.Layout(bpffs.roots()[0], name)
            with scoreadj.Ledger.locked() as ledger, libbpf.pinned(
                    layout.map(abi.ADJUSTED_MAP)) as adjusted:
                ledger.adjusted = adjusted
                facts["written"] = scoreadj.sweep(layout, bands, ledger)
                facts["errors"] = ledger.errors
                if ledger.set_aside:
                    facts["errors"].append("the ledger of the values written over was not readable: "
                                           "moved to %s, a new one started" % ledger.set_aside)
        if not facts["agent"]:
            result["warnings"].append(
                "the score_adj agent is not running on this host: the processes there now got "
                "their values, the ones that start later get theirs once it runs (`ebpf-oom "
                "agent`, %s; the role ebpf.oom.bpf_oom installs it)" % scoreadj.AGENT_UNIT)
        result["warnings"].extend(facts["errors"])
        result["changed"] = result["changed"] or facts["written"] > 0
        result["score_adj"] = facts
        return result

    def remove(self, name, check_mode=False):
        """Unload the policy, then put back every value written over (`restored`)."""
        result = super(ScoreAdj, self).remove(name, check_mode)
        if not check_mode:
            result["restored"] = self.let_go()
            result["changed"] = result["changed"] or result["restored"] > 0
        return result

    def let_go(self):
        """Every value written over, put back."""
        with scoreadj.Ledger.locked() as ledger:
            return ledger.restore_all()

    def verify(self, layout, record):
        """The agent runs, and every live process a rule matches carries its band's value
        (one that differs is looked at again after SETTLE seconds: it may have just
        started)."""
        facts = {"agent": scoreadj.agent_running()}
        problems = []
        if not facts["agent"]:
            problems.append("policy %s: the score_adj agent is not running, so processes that "
                            "start get no oom_score_adj (systemctl status %s; the role "
                            "ebpf.oom.bpf_oom installs it)" % (layout.name, scoreadj.AGENT_UNIT))
        try:
            bands = scoreadj.Bands(record["document"])
            wrong = scoreadj.mismatches(layout, bands, scoreadj.Ledger.read())
            if wrong:
                time.sleep(SETTLE)
                again = set(w[0] for w in scoreadj.mismatches(layout, bands, scoreadj.Ledger.read()))
                wrong = [w for w in wrong if w[0] in again]
        except (BpfError, LoaderError, scoreadj.LedgerError) as exc:
            problems.append("policy %s: cannot look at its processes: %s" % (layout.name, exc))
            return {"score_adj": facts}, problems
        facts["mismatches"] = [dict(zip(("pid", "comm", "rule", "oom_score_adj", "carries"), w))
                               for w in wrong]
        problems.extend("policy %s: pid %d (%s) matches %s, whose oom_score_adj is %d, but "
                        "carries %d" % (layout.name, pid, comm, language.rule_path(rule), want, has)
                        for pid, comm, rule, want, has in wrong)
        return {"score_adj": facts}, problems


# ---------------------------------------------------------------- the registry

REGISTRY = (EvaluateTask(), ScoreAdj())  # the best first
BACKENDS = dict((b.name, b) for b in REGISTRY)
ORDER = tuple(b.name for b in REGISTRY)
AUTO = "auto"
CHOICES = (AUTO,) + ORDER  # ebpf.oom.policy's backend, the role's bpf_oom_backend


def of_record(record):
    """The backend a recorded policy was applied with: None for a C policy (an object and
    its maps), evaluate_task for a document recorded before there was a choice;
    LoaderError for a backend this version does not know."""
    if record.get("document") is None:
        return None
    name = record.get("backend") or EvaluateTask.name
    if name not in BACKENDS:
        raise LoaderError("policy %s was applied with backend %r, which this version of the "
                          "collection does not know (it knows %s)"
                          % (record.get("name"), name, ", ".join(ORDER)))
    return BACKENDS[name]


def usable():
    """The names of the backends this host can use, the best first."""
    return [b.name for b in REGISTRY if not b.missing()]


def choose(requested=AUTO):
    """The Backend to enforce a document with: ``requested`` by name, or for ``auto`` the
    best this host can use. UnsupportedKernel (what is missing) when there is none;
    LoaderError for an unknown name."""
    if requested != AUTO:
        if requested not in BACKENDS:
            raise LoaderError("backend %r: unknown; one of %s" % (requested, ", ".join(CHOICES)))
        missing = BACKENDS[requested].missing()
        if missing:
            raise UnsupportedKernel(missing)
        return BACKENDS[requested]
    missing = []
    for backend in REGISTRY:
        lacks = backend.missing()
        if not lacks:
            return backend
        missing.extend(m for m in lacks if m not in missing)
    raise UnsupportedKernel(missing)


def _record(name):
    root = bpffs.mounted_root()
    return pins.read_record(bpffs.Layout(root, name)) if root else None


def _hook_program(programs):
    """Whether any of these programs (sections, or recorded targets) judges OOM victims."""
    return any(p in (HOOK_SECTION, HOOK_FUNC) for p in programs)


def decides(record):
    """Whether a recorded policy decides OOMs: every policy document in enforce mode (each
    backend's programs or values decide), or a C policy with a program on the hook."""
    if record.get("document") is not None:
        return shadow.mode_of(record["document"]) != SHADOW
    return _hook_program(p.get("target") for p in record.get("programs", []))


def one_decider(root, name, deciding):
    """LoaderError when policy ``name`` would decide OOMs (``deciding`` is true) beside
    another policy that does. The loader runs it with the bpffs lock held, so two applies
    cannot each see the other's absence."""
    if not deciding:
        return
    for other in pins.policy_names(root):
        record = pins.read_record(bpffs.Layout(root, other)) if other != name else None
        if record is None or not decides(record):
            continue
        raise LoaderError(
            "policy %s would judge OOM victims beside policy %s, which already does (%s): a host "
            "runs one such policy, as the first opinion of several wins and which runs first "
            "depends on the order they were loaded. Remove %s first (state: absent), or apply "
            "this one under the name %s"
            % (name, other, "backend %s" % record["backend"] if record.get("backend")
               else "a program on %s" % HOOK_FUNC, other, other))


def apply_object(name, object_path, globals=None, maps=None, check_mode=False, persist=True,
                 guard=None):
    """Load or update a C policy (an object, its globals and maps): loader.apply, with the
    one-decider check for a program on the hook (and ``guard``, see Plan)."""
    return loader.apply(name, object_path, globals=globals, maps=maps, check_mode=check_mode,
                        persist=persist, under_lock=_checks(name, guard, lambda obj: _hook_program(
                            p.section for p in obj.programs())))


def apply_record(name, object_path, record, persist=True, guard=None):
    """Apply a kept record again (the boot restore, `ebpf-oom on`); ``guard``: see Plan."""
    backend = of_record(record)
    if backend is None:
        return apply_object(name, object_path, globals=record.get("globals"),
                            maps=record_entries(record.get("maps") or {}), persist=persist,
                            guard=guard)
    plan = backend.plan(record["document"])
    plan.guard = guard
    return backend.apply(name, object_path, plan, persist=persist)


def remove(name, check_mode=False):
    """Remove a policy with the backend it was applied with (a C policy: the loader)."""
    record = _record(name)
    try:
        backend = of_record(record) if record is not None else None
    except LoaderError:  # a backend this version does not know: unpin what is there
        backend = None
    if backend is not None:
        return backend.remove(name, check_mode)
    return loader.remove(name, check_mode=check_mode)


def verify_policies(name=None, object_sha256=None, policy_name=None, strict=False):
    """verify.verify, with each declarative policy's backend checks added."""
    def extra(layout, record):
        try:
            backend = of_record(record)
        except LoaderError as exc:
            return {}, [str(exc)]
        return backend.verify(layout, record) if backend else ({}, [])
    return verify.verify(name=name, object_sha256=object_sha256, policy_name=policy_name,
                         strict=strict, extra=extra)
