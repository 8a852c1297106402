"""Real OOMs in a guest, driven as data: the controller side of molecule/shared/files/oomlab.

    lab = Lab(guest)                       copies oomlab into the guest (once per guest)
    with lab.scenario("name", spec) as s:  prepares the tasks; cleans up at the end,
        s.pids                             also when the test fails
        s.start("late-task")
        report = s.oom(kills=1)            {outcome, killed, victims, policies, ...}

Specs are those of oomlab (its docstring); cgroup paths default to the scenario's
own directory below /oomlab, so scenarios never share cgroups.
"""

import contextlib
import json
import os
import time

from vmharness import REPO, play

OOMLAB = os.path.join(REPO, "molecule", "shared", "files", "oomlab")
GUEST_OOMLAB = "/usr/local/sbin/oomlab"
LAB_ROOT = "/oomlab"
TIMEOUT = 900


class Lab:
    def __init__(self, guest):
        self.guest = guest
        if not getattr(guest, "_oomlab", False):
            guest.put(OOMLAB, GUEST_OOMLAB)
            guest.ssh(["chmod", "0755", GUEST_OOMLAB])
            guest._oomlab = True

    def run(self, *args, spec=None, expect_rc=0):
        done = self.guest.ssh([GUEST_OOMLAB] + [str(a) for a in args], check=False,
                              input=json.dumps(spec) if spec is not None else None,
                              timeout=TIMEOUT)
        lines = done.stdout.strip().splitlines()
        assert done.returncode == expect_rc and lines, (
            "oomlab %s: exit %d\nstdout:\n%s\nstderr:\n%s"
            % (" ".join(map(str, args)), done.returncode, done.stdout, done.stderr))
        return json.loads(lines[-1])

    @contextlib.contextmanager
    def scenario(self, name, spec):
        scene = Scene(self, name, spec)
        try:
            scene.pids = self.run("prepare", name, spec=scene.spec)["pids"]
            yield scene
        finally:
            self.run("cleanup", name)


class Scene:
    def __init__(self, lab, name, spec):
        self.lab = lab
        self.name = name
        self.root = "%s/%s" % (LAB_ROOT, name)
        self.spec = self._paths(spec)
        self.pids = {}

    def path(self, sub):
        """A cgroup path: absolute as given, else below the scenario's directory."""
        return sub if sub.startswith("/") else "%s/%s" % (self.root, sub)

    def _paths(self, spec):
        spec = json.loads(json.dumps(spec))
        if spec.get("memcg", "") == "":
            spec["memcg"] = self.root
        elif spec["memcg"]:
            spec["memcg"] = self.path(spec["memcg"])
        spec["cgroups"] = [self.path(c) for c in spec.get("cgroups", [])]
        home = spec["memcg"] or self.root  # where a task without a cgroup of its own goes
        for task in spec["tasks"] + [spec.setdefault("trigger", {})]:
            task.setdefault("name", "trigger")
            if not task.get("unit"):
                task["cgroup"] = self.path(task.get("cgroup") or "%s/%s" % (home, task["name"]))
            task.setdefault("comm", "lab-" + task["name"])
        return spec

    def start(self, *names):
        self.pids = self.lab.run("start", self.name, *names)["pids"]
        return self.pids

    def restart(self, name):
        """systemctl restart of a unit task: a new cgroup, a new pid."""
        self.pids = self.lab.run("restart", self.name, name)["pids"]
        return self.pids

    def adopt(self, name, pid):
        """A process started otherwise joins the scenario as task `name`."""
        self.pids = self.lab.run("adopt", self.name, name, pid)["pids"]
        return self.pids

    def limit(self):
        """Set the memory cgroup's memory.max now, as oom() does (what the tasks hold +
        the headroom), so that a prediction sees the limit of the OOM to come."""
        return self.lab.run("limit", self.name)["memory_max"]

    def oom(self, kills=1, stall=0):
        report = self.lab.run("oom", self.name, "--kills", kills, "--stall", stall)
        return Report(report)

    def status(self):
        return self.lab.run("status", self.name)["tasks"]


MEMCG = "CONSTRAINT_MEMCG"


def task(name, mb, **extra):
    return dict(name=name, mb=mb, **extra)


def spec(*tasks, **extra):
    return dict(tasks=list(tasks), **extra)


def doc(name, *rules, **top):
    return dict(name=name, rules=list(rules), **top)


def killed_by(report, victim, policy, spared, constraint=MEMCG, then=(), why=None):
    """One OOM (one `Scene.oom`) killed exactly `victim`, by pid, and nothing else; every
    report of it names `policy` and is of this kind; no task of `spared` (the scenario's
    tasks the policy must spare, by name) died, in a kill or otherwise.

    `then` names tasks the kernel may kill after the victim within the same OOM, in that
    order (a prefix of it), and `why` must say why the test allows it; without them a
    second kill fails the check. The trigger is never a victim unless `then` names it."""
    assert bool(then) == bool(why), "a later kill is allowed only with the reason (why=)"
    assert victim not in spared and not set(then) & set(spared), (victim, then, spared)
    followed(report, policy, constraint)
    pids = dict(report.pids, trigger=report.trigger_pid)
    expected = [pids[victim]] + [pids[name] for name in then]
    kills = report.victim_pids
    assert kills and kills == expected[:len(kills)], report
    spared_pids = set(pids[name] for name in spared)
    assert not spared_pids & set(kills), report
    assert not set(spared) & set(report.killed), report
    assert report.killed == sorted(
        name for name in report.pids if pids[name] in kills), report
    return kills


def followed(report, policy, constraint=MEMCG):
    """The OOM ended in kills, its every report names `policy`, and it was this kind of OOM.
    (`killed_by` checks which kills.)"""
    assert report.outcome == "kills", report
    assert report.reports and all(r["kills"] for r in report.reports), report
    assert set(report.policies) == {policy}, report
    assert set(report.constraints) == {constraint}, report


def ranking(explained):
    """The pids of ebpf.oom.explain's ranking, whose first is the victim it predicted."""
    order = [row["pid"] for row in explained["ranking"]]
    assert explained["victim"] is not None and explained["victim"]["pid"] == order[0], explained
    return order


def predicted(explained, *reports):
    """ebpf.oom.explain predicted these OOMs: the kill of each report (successive OOMs,
    each already checked by killed_by) is the next task of the prediction's ranking."""
    order = ranking(explained)
    assert [report.victim_pids[0] for report in reports] == order[:len(reports)], (
        explained, reports)


def adj(guest, pid):
    """The oom_score_adj of a process in the guest."""
    return int(guest.ssh(["cat", "/proc/%d/oom_score_adj" % pid]).stdout)


def eventually(guest, pid, value, bound=60):
    """The process's oom_score_adj once it is `value`, or after `bound` seconds."""
    deadline = time.monotonic() + bound
    while adj(guest, pid) != value and time.monotonic() < deadline:
        time.sleep(0.5)
    return adj(guest, pid)


class Report(dict):
    """oomlab's answer; shown whole when an assertion about it fails."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __repr__(self):
        brief = dict((k, v) for k, v in self.items() if k != "log")
        return json.dumps(brief, sort_keys=True) + "\n" + "\n".join(self.get("log", []))


class Policies:
    """Policy documents applied to a guest through ebpf.oom.policy (the module path a
    user takes: the action plugin validates and compiles on the controller), one
    playbook run per call; removes what it applied at the end (remove_all)."""

    def __init__(self, guest, tmp_path):
        self.guest = guest
        self.tmp_path = tmp_path
        self.names = []

    def apply(self, *documents, check=True, explain=None, **options):
        """Apply the documents in order (each a task); drops the ones applied before
        that are not among them first. With explain (an `oom` of ebpf.oom.explain), the
        same play then asks ebpf.oom.explain about the last document (task "explain").
        The PlayResult."""
        wanted = [d["name"] for d in documents]
        tasks = [{"name": "remove %s" % name,
                  "ebpf.oom.policy": {"name": name, "state": "absent"}}
                 for name in self.names if name not in wanted]
        tasks += [{"name": "apply %s" % d["name"], "ebpf.oom.policy": dict(options, policy=d),
                   "register": "applied_%d" % i} for i, d in enumerate(documents)]
        if explain is not None:
            tasks.append({"name": "explain", "ebpf.oom.explain": {
                "name": documents[-1]["name"], "oom": explain, "top": 5}})
        result = play(self.guest, tasks, self.tmp_path, check=check)
        applied = [n for n in wanted if not result["apply %s" % n].get("failed")]
        self.names = [n for n in self.names if n in applied] + [n for n in applied
                                                                if n not in self.names]
        return result

    def remove_all(self):
        if self.names:
            play(self.guest, [{"name": "remove %s" % name,
                               "ebpf.oom.policy": {"name": name, "state": "absent"}}
                              for name in self.names], self.tmp_path)
        self.names = []
