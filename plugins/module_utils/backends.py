# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a declarative policy is enforced: one class per way, behind one small interface.

Layer 5 (above the loader): imports the loader, verify, the agent's ledger (scoreadj),
pins, cgrouprules, the renderer, the kernel binding and the leaf helpers.

A backend says what the kernel must offer (`needs`: BTF symbols, `map_types`; probe.py
decides from them what a host can use), which programs of the generic object
(bpf/generic.bpf.c) it loads and attaches, what of a document it cannot enforce
(`check`), and how it applies, removes and verifies a policy.  BACKENDS lists them,
the best first:

    evaluate_task  the kernel's victim selection asks the policy about every OOM
                   candidate (the hook bpf_oom_evaluate_task): the exact choice the
                   document describes
    score_adj      stock kernels: every process a rule matches carries its class's
                   oom_score_adj (scoreadj.py: the bands), written by the agent
                   (agent.py) as processes start, change name or cgroup; the kernel's
                   own heuristic then chooses

One policy per host decides OOMs (a hook program, or the score_adj agent's values):
a second one under another name is refused, naming the first.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from . import abi, bpffs, cgrouprules, language, libbpf, loader, pins, renderer, scoreadj, verify
from .common import HOOK_FUNC, NAME_FUNC
from .errors import BpfError, LoaderError

SETTLE = 1.0  # seconds verify gives a process that just started to get its value


class Backend(object):
    """The interface; EvaluateTask and ScoreAdj are the two there are."""

    name = None
    programs = ()      # the generic object's programs this backend loads and attaches
    needs = ()         # [(kernel BTF symbol, kind)] they need (tests/unit holds it to the object)
    map_types = ()     # BPF map types the kernel must create for them

    def check(self, document):
        """RenderError when this backend cannot enforce the document; else its warnings."""
        renderer.render(document)
        return []

    def apply(self, name, object_path, document, check_mode=False, persist=True):
        """Load or update the policy; loader.apply's result plus `cgroups`
        ({path: [id of the live cgroup its rules match]}) and `warnings`."""
        warnings = self.check(document)
        old = _record(name)
        _one_decider(name, self.name)
        if old is not None and old.get("document") is not None and not check_mode and \
                (old.get("backend") or EvaluateTask.name) != self.name:
            # Another backend's programs: the loader keeps the programs of an unchanged
            # object, so they go first (and a score_adj policy's values are put back).
            for_record(old).remove(name)
        rendered = renderer.render(document)
        followed = {}

        def after_attach(map_fd):
            followed.update(cgrouprules.sync(map_fd(abi.LIVE_MAP), rendered.cgroup_rules))

        result = loader.apply(name, object_path, globals=rendered.globals, maps=rendered.maps,
                              check_mode=check_mode, persist=persist, document=document,
                              programs=list(self.programs), after_attach=after_attach,
                              backend=self.name)
        if check_mode:  # nothing was written: what the rules would match now
            followed = cgrouprules.look(rendered.cgroup_rules)
        result["cgroups"] = dict((path, [ident] if ident else [])
                                 for path, ident in sorted(followed.items()))
        result["warnings"] = warnings
        result["backend"] = self.name
        return result

    def remove(self, name, check_mode=False):
        """Unload the policy: loader.remove's result."""
        return loader.remove(name, check_mode=check_mode)

    def verify(self, layout, record):
        """(facts, problems) beyond the pins verify.py checks for every policy."""
        return {}, []


class EvaluateTask(Backend):
    """The kernel's victim selection asks the policy about each candidate."""

    name = "evaluate_task"
    programs = (abi.NAME_PROGRAM, abi.EVAL_PROGRAM) + abi.CGROUP_PROGRAMS
    needs = ((HOOK_FUNC, "func"), (NAME_FUNC, "func"), ("btf_trace_cgroup_mkdir", "typedef"),
             ("btf_trace_cgroup_rmdir", "typedef"))


class ScoreAdj(Backend):
    """The kernel's heuristic, steered: each process a rule matches carries its band's
    oom_score_adj, written at once for the processes there now and by the agent for
    those that come."""

    name = "score_adj"
    programs = abi.CGROUP_PROGRAMS + abi.ADJ_PROGRAMS + (abi.TASKS_PROGRAM,)
    needs = (("bpf_iter_task", "func"), ("btf_trace_cgroup_attach_task", "typedef"),
             ("btf_trace_cgroup_mkdir", "typedef"), ("btf_trace_cgroup_rmdir", "typedef"),
             ("btf_trace_sched_process_exec", "typedef"),
             ("btf_trace_sched_process_fork", "typedef"), ("btf_trace_task_rename", "typedef"))
    map_types = (libbpf.BPF_MAP_TYPE_RINGBUF,)

    def check(self, document):
        super(ScoreAdj, self).check(document)
        return scoreadj.Bands(document).warnings

    def apply(self, name, object_path, document, check_mode=False, persist=True):
        """Backend.apply, then every process there now gets its band's value (`score_adj`:
        bands, written, errors, agent: whether the agent runs to handle the ones to come)."""
        result = super(ScoreAdj, self).apply(name, object_path, document, check_mode, persist)
        bands = scoreadj.Bands(document)
        facts = {"bands": [{"class": what, "oom_score_adj": value} for what, value in bands.levels],
                 "gap": bands.gap, "written": 0, "errors": [], "agent": scoreadj.agent_running()}
        if not check_mode:
            layout = bpffs.Layout(bpffs.roots()[0], name)
            with scoreadj.Ledger.locked() as ledger, libbpf.pinned(
                    layout.map(abi.ADJUSTED_MAP)) as adjusted:
                ledger.adjusted = adjusted
                ledger.sync_map()
                facts["written"] = scoreadj.sweep(layout, bands, ledger)
                facts["errors"] = ledger.errors
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
            with scoreadj.Ledger.locked() as ledger:
                result["restored"] = ledger.restore_all()
            result["changed"] = result["changed"] or result["restored"] > 0
        return result

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
        except (BpfError, LoaderError) as exc:
            problems.append("policy %s: cannot look at its processes: %s" % (layout.name, exc))
            return {"score_adj": facts}, problems
        facts["mismatches"] = [dict(zip(("pid", "comm", "rule", "oom_score_adj", "carries"), w))
                               for w in wrong]
        problems.extend("policy %s: pid %d (%s) matches %s, whose oom_score_adj is %d, but "
                        "carries %d" % (layout.name, pid, comm, language.rule_path(rule), want, has)
                        for pid, comm, rule, want, has in wrong)
        return {"score_adj": facts}, problems


BACKENDS = dict((b.name, b) for b in (EvaluateTask(), ScoreAdj()))
ORDER = (EvaluateTask.name, ScoreAdj.name)  # the best first


def for_record(record):
    """The backend a recorded declarative policy was applied with (evaluate_task for
    records written before there was a choice)."""
    return BACKENDS[record.get("backend") or EvaluateTask.name]


def _record(name):
    root = bpffs.mounted_root()
    return pins.read_record(bpffs.Layout(root, name)) if root else None


def _decides(record):
    """Whether a recorded policy decides OOMs: a score_adj policy, or a hook program."""
    return record.get("backend") == ScoreAdj.name or \
        any(p.get("target") == HOOK_FUNC for p in record.get("programs", []))


def _one_decider(name, backend):
    """LoaderError when another policy decides OOMs on this host already and one of the
    two is a score_adj policy (two hook programs: the loader refuses them)."""
    root = bpffs.mounted_root()
    for other in pins.policy_names(root):
        record = pins.read_record(bpffs.Layout(root, other)) if other != name else None
        if record is None or not _decides(record):
            continue
        if backend == ScoreAdj.name or record.get("backend") == ScoreAdj.name:
            raise LoaderError(
                "policy %s would decide OOMs beside policy %s, which already does (%s): a host "
                "runs one such policy. Remove %s first (state: absent), or apply this one under "
                "the name %s" % (name, other, "backend %s" % record["backend"]
                                 if record.get("backend") else "a program on %s" % HOOK_FUNC,
                                 other, other))


def remove(name, check_mode=False):
    """Remove a policy with the backend it was applied with (a C policy: the loader)."""
    record = _record(name)
    if record is not None and record.get("document") is not None and \
            record.get("backend", EvaluateTask.name) in BACKENDS:
        return for_record(record).remove(name, check_mode)
    return loader.remove(name, check_mode=check_mode)


def verify_policies(name=None, object_sha256=None, policy_name=None, strict=False):
    """verify.verify, with each declarative policy's backend checks added."""
    def extra(layout, record):
        if record.get("document") is None or record.get("backend", EvaluateTask.name) not in BACKENDS:
            return {}, []
        return for_record(record).verify(layout, record)
    return verify.verify(name=name, object_sha256=object_sha256, policy_name=policy_name,
                         strict=strict, extra=extra)
