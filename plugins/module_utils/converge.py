# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One policy entry checked and applied (prepare()), and a host's whole ebpf.oom state
converged in one run (Host): the engine of ebpf.oom.policy and of ebpf.oom.host, the
state module the role ebpf.oom.bpf_oom hands its variables to.

Layer 7 (a host's desired state): imports the backends, the observer's deployment, the
probe, what is kept, the units and the leaf helpers.

Host.converge() takes the parts in order (PARTS), and each part changes only what
differs from what it wants:
- kernel: which backend enforces the documents; a host that cannot run them fails here
  (or, with on_unsupported=skip, gets only what the observer needs), before anything
  changes; every entry is checked and planned here too (a bad one changes nothing);
- engine: its directory, its archive and the host command (`ebpf-oom`);
- units: the bpffs mount (where nothing mounts bpffs), the boot restore, the metrics
  timer and the agent's unit; then what is enabled and running;
- observer: loaded (and verified) or removed;
- policies: each listed one applied, then verified;
- agent: runs while a score_adj policy is loaded (restarted when its unit or the engine
  changed);
- purge: the collection's policies not listed, then the agent goes where no score_adj
  policy is left (stopping it puts back the values it wrote).
A part that fails raises HostError naming it; the parts before it stay done.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re
import shutil

from . import backends, bpffs, deploy, probe, restore, scoreadj, state, units
from .common import CACHE_DIR
from .errors import LoaderError, RenderError, UnsupportedKernel
from .files import sha256_file
from .observer import OBSERVER_NAME

PARTS = ("kernel", "engine", "units", "observer", "policies", "agent", "purge")
# Who the off marker names when this module switched the host off (enabled: false); a
# marker without it was set by hand (`ebpf-oom off`), and only `ebpf-oom on` undoes it.
SWITCHED_BY = "ebpf.oom.host (enabled: false)"
NEVER_PURGED = (OBSERVER_NAME,)
ENGINE_ARCHIVE = "ebpf_oom_engine.zip"
COMMAND = "ebpf-oom"
ON_PATH = "/usr/local/sbin/ebpf-oom"  # a symbolic link to the host command, on root's PATH

# A maps key or value: a decimal integer, or raw bytes in hex.
DECIMAL_RE = re.compile(r"^[+-]?[0-9]+$")
HEX_RE = re.compile(r"^0[xX]((?:[0-9a-fA-F]{2})+)$")
BYTES_RE = re.compile(r"^[0-9a-fA-F]{2}(?:[\s:]+[0-9a-fA-F]{2})+$")


class HostError(LoaderError):
    """A part of the host's state that could not be reached: ``part`` names it."""

    def __init__(self, part, message, log_tail=""):
        super(HostError, self).__init__("%s: %s" % (part, message), log_tail)
        self.part = part


def map_value(value, where):
    """An int (packed by the loader to the map's size) or raw bytes, from a maps key or value."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if DECIMAL_RE.match(text):
            return int(text, 10)
        m = HEX_RE.match(text)
        if m:
            return bytes.fromhex(m.group(1))
        if BYTES_RE.match(text):
            return bytes.fromhex(re.sub(r"[\s:]", "", text))
    raise ValueError("%s: %r is neither an integer nor hex bytes ('0x0a000000' or '0a 00 00 00')"
                     % (where, value))


def map_entries(maps):
    """The maps option as loader.apply wants it: {map: [(key, value), ...]}."""
    out = {}
    for name, entries in (maps or {}).items():
        if not isinstance(entries, dict):
            raise ValueError("maps.%s must be a dict of key: value" % name)
        out[name] = [(map_value(k, "maps.%s key %r" % (name, k)),
                      map_value(v, "maps.%s[%r]" % (name, k)))
                     for k, v in entries.items()]
    return out


def prepare(p, check_mode):
    """Check one present policy entry (ebpf.oom.policy's parameters: name, object, policy,
    mode, globals, maps, backend, on_unsupported, require_hook, persist) before anything
    changes.

    Returns the result of an entry that loads nothing (an object still to be made in check
    mode, a document or a kernel skipped), or a function that loads it and returns
    loader.apply()'s result.  ValueError: the entry cannot be applied as given (its message
    says why); LoaderError: the object or the kernel refuses."""
    if not os.path.isfile(p["object"]):
        if check_mode:  # an earlier task (ebpf.oom.compile) would have made it
            return dict(changed=True, action="pending",
                        msg="object %s does not exist yet; check mode assumes an earlier task makes it" % p["object"])
        raise ValueError("object %s does not exist or is not a file" % p["object"])
    if p.get("require_hook") == "always":
        problem = probe.hook_program_problem(p["object"])
        if problem:
            raise ValueError(problem)

    def unsupported(e):
        msg = probe.unsupported_message(e.missing)
        if p["on_unsupported"] == "skip":
            return dict(changed=False, skipped=True, action="skipped", msg=msg, missing=e.missing)
        e.message = msg
        raise e

    try:
        if not probe.btf_present():
            raise UnsupportedKernel(["BTF (%s)" % probe.BTF_VMLINUX])
        planned = _planned(p, check_mode)
    except UnsupportedKernel as e:
        return unsupported(e)
    if not callable(planned):
        return planned

    def load():
        try:
            return planned()
        except UnsupportedKernel as e:
            return unsupported(e)
    return load


def _planned(p, check_mode):
    persist = p.get("persist", True)
    if p["policy"] is None:
        if p["backend"] not in (backends.AUTO, backends.EvaluateTask.name):
            raise ValueError("backend %s enforces policy documents (policy:), not a BPF object" % p["backend"])
        if p.get("mode"):
            raise ValueError("mode is a policy document's (policy:): a BPF object decides as its "
                             "programs say")
        entries = map_entries(p["maps"])
        return lambda: backends.apply_object(p["name"], p["object"], globals=p["globals"], maps=entries,
                                             check_mode=check_mode, persist=persist)
    if p["globals"] or p["maps"]:
        raise ValueError("policy sets the generic program's globals and maps; drop globals and maps")
    if p.get("mode"):  # the task's word over the document's
        p["policy"] = dict(p["policy"], mode=p["mode"])
    backend = backends.choose(p["backend"])
    try:
        plan = backend.plan(p["policy"])
    except RenderError as e:
        msg = "policy: backend %s%s cannot enforce this document:\n%s" % (
            backend.name, " (the best this host has)" if p["backend"] == backends.AUTO else "", e)
        if p["backend"] == backends.AUTO and p["on_unsupported"] == "skip" and backend.name != backends.ORDER[0]:
            return dict(changed=False, skipped=True, action="skipped", msg=msg, backend=backend.name)
        raise ValueError(msg)
    return lambda: backend.apply(p["name"], p["object"], plan, check_mode=check_mode, persist=persist)


def choose_backend(requested, info):
    """(backend the documents get, reasons when that is 'none') from kernel_info's report."""
    if requested == backends.AUTO:
        return info["backend"], list(info["reasons"])
    if requested in info["backends"]:
        return requested, []
    return "none", list(info["reasons"]) + [
        "backend %s is not among the backends this host has (%s)" % (requested, ", ".join(info["backends"]) or "none")]


def agent_wanted(backend, listed, loaded, purge):
    """Whether a score_adj policy is loaded after the run, so that the agent runs: a listed
    present document the run applies with score_adj, or a loaded score_adj policy the run
    leaves alone (not listed and not purged; on a host whose policies are skipped
    (backend 'none'), every one).  ``listed``: the entries; ``loaded``: kernel_info's
    records."""
    present = [e for e in listed if e.get("state", "present") == "present"]
    if backend == backends.ScoreAdj.name and any(e.get("policy") is not None for e in present):
        return True
    if backend != "none" and purge:
        return False
    names = set(e["name"] for e in listed) if backend != "none" else set()
    return any(r.get("backend") == backends.ScoreAdj.name and r["name"] not in names for r in loaded)


class Host(object):
    """One run of ebpf.oom.host: ``want`` is the module's parameters (object: the generic
    program for documents; archive, command: the engine's bytes; observer_objects: the
    observer's builds)."""

    def __init__(self, want, check_mode=False):
        self.want = want
        self.check = check_mode
        self.parts = dict((part, []) for part in PARTS)
        self.before = {}
        self.after = {}
        self.results = {}
        self.changes = []  # every part's lines, in the order they happened
        self.observed = dict(running=False)  # the observer after the run
        self.purged = []
        self.verified = []
        self.found = []  # the collection's unit files there before the run
        self.rewritten = []  # those the run writes
        self.engine_changed = False
        self.warnings = []

    # What each part did: a line in its list, and the diff's before and after.
    def did(self, part, what, before=None, after=None, key=None):
        self.parts[part].append(what)
        self.changes.append("%s: %s" % (part, what))
        if key is not None:
            self.before[key], self.after[key] = before, after

    @property
    def changed(self):
        return any(self.parts.values())

    def report(self, changed_only=False):
        """The module's result: what changed (with ``changed_only``, for a failure, only
        that), the backend and why there is none, and the diff."""
        out = dict(changed=self.changed, parts=self.parts, changes=self.changes, policies=self.results,
                   purged=self.purged, verified=self.verified, switched_off=getattr(self, "off", None),
                   notices=self.warnings)
        if changed_only:
            return out
        info = getattr(self, "info", {})
        return dict(out, backend=self.backend, supported=self.supported, reasons=self.reasons,
                    kernel_release=info.get("kernel_release"), agent=self.agent, observer=self.observed,
                    diff=dict(before=self.before, after=self.after))

    def converge(self):
        w = self.want
        self.info = probe.kernel_info(with_policies=True)
        self.backend, self.reasons = choose_backend(w["backend"], self.info)
        self.supported = self.backend != "none"
        self.observe = w["observer"] and self.info["btf"] and self.info["libbpf_version"] is not None
        self.agent = agent_wanted(self.backend, w["policies"], self.info["policies"], w["purge"])
        self.off = restore.switched_off()
        # Off (asked for, or by hand and not undone here): no policy is loaded after the run.
        self.hold = not w["enabled"] or (self.off is not None and SWITCHED_BY not in self.off)
        if self.hold:
            self.agent = False
        if w["state"] == "absent":
            self.observe = self.agent = False
            return self.uninstall()
        if not self.supported and w["on_unsupported"] == "fail":
            raise HostError("kernel", "this host cannot run ebpf.oom policies on kernel %s: %s. Boot a kernel "
                                      "with the bpf_oom_evaluate_task hook%s, or set on_unsupported: skip (the "
                                      "role's bpf_oom_on_unsupported: skip) to skip its policies"
                            % (self.info["kernel_release"], "; ".join(self.reasons),
                               "" if w["backend"] == backends.AUTO
                               else ", use backend: auto (the role's bpf_oom_backend: auto)"))
        if w["backend"] == backends.AUTO and self.backend == backends.ScoreAdj.name and any(
                e.get("policy") is not None and e.get("state", "present") == "present" for e in w["policies"]):
            self.warnings.append(
                "backend auto: kernel %s has no OOM policy hook, so the policy documents are enforced by "
                "score_adj: the kernel chooses each victim, steered by the oom_score_adj bands the agent keeps "
                "(backend: evaluate_task fails such a host instead)" % self.info["kernel_release"])
        if (self.supported or self.observe) and not units.systemd_runs():
            raise HostError("kernel", "this host does not run systemd (no %s): the boot restore, the metrics "
                                      "timer and the score_adj agent are its units; run ebpf.oom.policy and "
                                      "ebpf.oom.observer on such a host instead" % units.SYSTEMD_RUNTIME)
        loads = self.prepared() if self.supported else []
        if self.supported or self.observe:
            self.engine()
            self.units()
            self.observer()
        if self.supported and self.hold:
            self.switch_off()
        elif self.supported:
            self.switch_on()
            self.policies(loads)
            self.run_agent()
            self.verify(loads)
            self.purge()
        if not self.agent and units.AGENT in self.found:
            self.unit_gone(units.AGENT, (units.AGENT,), "agent")
        return self.report()

    def uninstall(self):
        """Everything the collection put on the host goes: every policy (the values the
        agent wrote put back), the observer, the units (stopped and disabled first), the
        engine, the state, the caches and the metrics file.  A bpffs mount unit stays:
        stopping it would unmount the pins of whatever else uses bpffs."""
        self.found = units.installed()
        self.remove_unlisted(())
        self.observer()
        gone = ((units.AGENT, (units.AGENT,)), (units.METRICS_TIMER, (units.METRICS_TIMER, units.METRICS)),
                (units.RESTORE, (units.RESTORE,)))
        removed = [self.unit_gone(unit, files, "agent" if unit == units.AGENT else "units", reload=False)
                   for unit, files in gone if set(files) & set(self.found)]
        if any(removed):
            self.systemctl("units", "daemon-reload")
        root, state_dir = bpffs.roots()
        if os.path.isdir(root) and not os.listdir(root):
            self.did("engine", "removed " + root, "present", None, key=root)
            if not self.check:
                os.rmdir(root)
        w = self.want
        if os.path.islink(ON_PATH) and os.readlink(ON_PATH) == os.path.join(w["engine_dir"], COMMAND):
            self.did("engine", "removed " + ON_PATH, "present", None, key=ON_PATH)
            if not self.check:
                os.unlink(ON_PATH)
        for path in (w["engine_dir"], state_dir, CACHE_DIR, scoreadj.RUN_DIR, w["metrics_file"]):
            if os.path.lexists(path):
                self.did("engine", "removed " + path, "present", None, key=path)
                if not self.check:
                    try:
                        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
                    except OSError as e:
                        raise HostError("engine", "removing %s: %s" % (path, e))
        return self.report()

    def prepared(self):
        """[(entry, load or result)] of every entry, checked and planned before any change."""
        out = []
        for entry in self.want["policies"]:
            if entry.get("state", "present") == "absent":
                out.append((entry, None))
                continue
            p = dict(entry, object=entry.get("object") or self.want["object"], backend=self.want["backend"],
                     on_unsupported=self.want["on_unsupported"], globals=entry.get("globals") or {},
                     maps=entry.get("maps") or {})
            try:
                out.append((entry, prepare(p, self.check)))
            except (ValueError, LoaderError) as e:
                raise HostError("policies", "%s: %s" % (entry["name"], e), getattr(e, "log_tail", ""))
        return out

    def engine(self):
        w = self.want
        directory = w["engine_dir"]
        try:
            if not os.path.isdir(directory):
                self.did("engine", "created " + directory)
                if not self.check:
                    os.makedirs(directory, 0o755)
            if os.path.isdir(directory) and (os.stat(directory).st_mode & 0o7777) != 0o755:
                self.did("engine", "made %s mode 0755" % directory)
                if not self.check:
                    os.chmod(directory, 0o755)
            for name, data, mode in ((ENGINE_ARCHIVE, w["archive"], 0o644), (COMMAND, w["command"], 0o755)):
                path = os.path.join(directory, name)
                before = units.held(path)
                if units.put(path, data, mode, self.check):
                    self.engine_changed = True
                    self.did("engine", "wrote " + path, before and "sha256 %s mode %04o" % before[:2],
                             "sha256 %s mode %04o" % (hashlib.sha256(data).hexdigest(), mode), key=path)
            self.link_command(os.path.join(directory, COMMAND))
        except OSError as e:
            raise HostError("engine", str(e))

    def link_command(self, target):
        """`ebpf-oom` on root's PATH: ON_PATH, a symbolic link to the host command."""
        try:
            now = os.readlink(ON_PATH)
        except OSError:
            now = None
        if now == target:
            return
        if now is None and os.path.lexists(ON_PATH):
            raise OSError("%s is there and is not a symbolic link: not replaced" % ON_PATH)
        self.did("engine", "linked %s to %s" % (ON_PATH, target), now, target, key=ON_PATH)
        if not self.check:
            if not os.path.isdir(os.path.dirname(ON_PATH)):
                os.makedirs(os.path.dirname(ON_PATH), 0o755)
            if now is not None:
                os.unlink(ON_PATH)
            os.symlink(target, ON_PATH)

    def units(self):
        w = self.want
        settings = dict(engine_dir=w["engine_dir"], state_dir=bpffs.roots()[1], metrics_file=w["metrics_file"],
                        metrics_interval=w["metrics_interval"], metrics_cgroup_depth=w["metrics_cgroup_depth"])
        self.found = units.installed()
        wanted = [units.RESTORE]
        if not self.info["bpffs_mounted"] or units.MOUNT in self.found:
            wanted.append(units.MOUNT)
        if self.supported and self.agent:
            wanted.append(units.AGENT)
        if w["metrics"]:
            wanted += [units.METRICS, units.METRICS_TIMER]
        try:
            self.rewritten = [unit for unit in wanted
                              if self.unit_file(unit, units.text(unit, **settings).encode("utf-8"))]
            if self.rewritten:
                self.systemctl("units", "daemon-reload")
            if w["metrics"]:
                directory = os.path.dirname(w["metrics_file"])
                if not os.path.isdir(directory):
                    self.did("units", "created " + directory)
                    if not self.check:
                        os.makedirs(directory, 0o755)
            if units.MOUNT in wanted:
                self.service("units", units.MOUNT, enabled=True, active=True)
            self.service("units", units.RESTORE, enabled=w["restore_at_boot"])
            if w["metrics"]:
                self.service("units", units.METRICS_TIMER, enabled=True, active=True)
        except OSError as e:
            raise HostError("units", str(e))
        if not w["metrics"] and set((units.METRICS, units.METRICS_TIMER)) & set(self.found):
            self.unit_gone(units.METRICS_TIMER, (units.METRICS_TIMER, units.METRICS), "units")

    def unit_file(self, unit, data):
        path = units.path(unit)
        old = None
        if os.path.isfile(path):
            with open(path, "rb") as f:
                old = f.read().decode("utf-8", "replace")
        if not units.put(path, data, 0o644, self.check):
            return False
        self.did("units", "wrote " + path, old, data.decode("utf-8"), key=path)
        return True

    def systemctl(self, part, *args):
        self.did(part, "systemctl " + " ".join(args))
        if not self.check:
            units.run(*args)

    def service(self, part, unit, enabled=None, active=None, restart=False):
        """Bring ``unit`` to being enabled and active as asked (None: as it is); in check
        mode a unit that would be written is assumed to be neither yet."""
        is_enabled, is_active = (False, False) if self.check and unit in self.rewritten else units.state(unit)
        if enabled is not None and enabled != is_enabled:
            self.systemctl(part, "enable" if enabled else "disable", unit)
        if active and (restart or not is_active):
            self.systemctl(part, "restart" if is_active else "start", unit)
        elif active is False and is_active:
            self.systemctl(part, "stop", unit)

    def unit_gone(self, unit, files, part, reload=True):
        """Stop and disable a service the host no longer wants, remove its files, reload
        (or, without ``reload``, leave that to the caller); whether a file was removed."""
        try:
            self.service(part, unit, enabled=False, active=False)
            present = [units.path(name) for name in files if os.path.lexists(units.path(name))]
            for path in present:
                self.did(part, "removed " + path, "present", None, key=path)
                if not self.check:
                    os.unlink(path)
            if reload:
                self.systemctl(part, "daemon-reload")
        except OSError as e:
            raise HostError(part, str(e))
        return bool(present)

    def observer(self):
        try:
            if not self.observe:
                result = dict(deploy.remove_observer(check_mode=self.check), action="removed")
            else:
                result = deploy.apply_observer(self.want["observer_objects"], check_mode=self.check)
        except LoaderError as e:
            raise HostError("observer", e.message, e.log_tail)
        self.loaded("observer", OBSERVER_NAME, result)
        if self.observe:
            self.observed = dict(running=True, action=result["action"], object_sha256=result["record"]["object_sha256"],
                                 variant=os.path.basename(result["object"]).split("-", 1)[1].split(".")[0])
            if not self.check:
                self.verify_one("observer", OBSERVER_NAME, object_sha256=result["record"]["object_sha256"])

    def loaded(self, part, name, result):
        diff = result.pop("diff", None) or {}
        result.pop("map_changes", None)
        if result.get("changed"):
            self.did(part, "%s: %s" % (name, result.get("action") or "changed"),
                     diff.get("before"), diff.get("after"), key="policy " + name)

    def verify_one(self, part, name, **expected):
        found = backends.verify_policies(name=name, **expected)
        if found["problems"]:
            raise HostError(part, "verify %s: %s" % (name, "; ".join(found["problems"])))
        self.verified.append(name)

    def policies(self, loads):
        for entry, load in loads:
            name = entry["name"]
            try:
                if load is None:
                    result = backends.remove(name, check_mode=self.check)
                    result["action"] = "removed" if result["changed"] else "absent"
                else:
                    result = load() if callable(load) else load
            except (ValueError, LoaderError) as e:
                raise HostError("policies", "%s: %s" % (name, e), getattr(e, "log_tail", ""))
            self.loaded("policies", name, result)
            self.results[name] = dict((k, result[k]) for k in ("action", "backend", "msg") if k in result)

    def verify(self, loads):
        """Each policy loaded is attached as its record says (after the agent started: a
        score_adj policy's verify asks for it)."""
        if self.check:
            return
        for entry, load in loads:
            if callable(load):
                document = entry.get("policy")
                expected = dict(policy_name=document["name"]) if document else dict(
                    object_sha256=sha256_file(entry["object"]), policy_name=entry.get("policy_name"))
                self.verify_one("policies", entry["name"], **expected)

    def switch_off(self):
        """enabled: false switches the host off as `ebpf-oom off` does (every policy detached,
        its copy kept for the boot restore, which holds them back); a host switched off by
        hand stays as it is, whatever the run asks."""
        if not self.want["enabled"] and self.off is None:
            self.did("policies", "switched the host off")
            if not self.check:
                _marked, _detached, _unrecorded, failed = restore.switch_off(by=SWITCHED_BY)
                if failed:
                    raise HostError("policies", "switching off: " + "; ".join(
                        "%s: %s" % item for item in sorted(failed.items())))
                self.off = restore.switched_off()
        if self.off is not None and SWITCHED_BY not in self.off:
            self.warnings.append("this host was switched off by hand (%s): its policies are left alone "
                                 "until `ebpf-oom on`" % self.off)

    def switch_on(self):
        """A host this module switched off gets its recorded policies back (then the listed
        ones are applied, the others purged)."""
        if self.off is None:
            return
        self.did("policies", "switched the host on")
        if not self.check:
            _was_off, (_ok, failed) = restore.switch_on()
            # the listed policies are applied next, the others purged: a note, not a failure
            self.warnings.extend("switching on: %s did not restore: %s" % item for item in sorted(failed.items()))
        self.off = None

    def run_agent(self):
        if not self.agent:
            return
        try:
            self.service("agent", units.AGENT, enabled=True, active=True,
                         restart=units.AGENT in self.rewritten or self.engine_changed)
        except OSError as e:
            raise HostError("agent", str(e))

    def purge(self):
        if self.want["purge"]:
            self.remove_unlisted(set(e["name"] for e in self.want["policies"]))

    def remove_unlisted(self, listed):
        """Remove the collection's policies, loaded or recorded, that are not ``listed``."""
        listed = set(listed) | set(NEVER_PURGED)
        names = sorted((set(r["name"] for r in self.info["policies"]) | set(state.saved_names())) - listed)
        for name in names:
            try:
                result = backends.remove(name, check_mode=self.check)
            except LoaderError as e:
                raise HostError("purge", "%s: %s" % (name, e.message), e.log_tail)
            self.loaded("purge", name, dict(result, action="removed"))
            if result["changed"]:
                self.purged.append(name)
