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


def killed_by(report, victim, policy, constraint=MEMCG):
    """The OOM's first kill was `victim` (by pid), and its report names `policy`.

    In a busy TCG guest a victim can take long to exit; the kernel then sometimes needs
    a second victim before the trigger's page fault can be charged (oomlab lifts the
    memory limit as soon as it sees the first kill, which mostly prevents it). Such a
    second kill follows the same policy, and may take the trigger itself (outcome
    "killed"); the claim here is about the first, which is never the trigger."""
    followed(report, policy, constraint)
    assert report.victim_pids[:1] == [report.pids[victim]], report
    assert victim in report.killed, report


def followed(report, policy, constraint=MEMCG):
    """The OOM ended in kills (the trigger's own among them or not), its every report names
    `policy`, and it was this kind of OOM."""
    assert report.outcome in ("kills", "killed"), report
    assert set(report.policies) == {policy}, report
    assert set(report.constraints) == {constraint}, report


def ranking(explained):
    """The pids of ebpf.oom.explain's ranking, whose first is the victim it predicted."""
    order = [row["pid"] for row in explained["ranking"]]
    assert explained["victim"] is not None and explained["victim"]["pid"] == order[0], explained
    return order


def predicted(explained, *reports):
    """ebpf.oom.explain predicted these OOMs: the first kill of each report (successive
    OOMs) is the next task of the prediction's ranking, by pid."""
    order = ranking(explained)
    for i, report in enumerate(reports):
        assert report.victim_pids[:1] == order[i:i + 1], (explained, report)


def killed_in_order(explained, reports, victims, policy, constraint=MEMCG):
    """Successive OOMs killed the scenario's `victims` in this order (by pid), every report
    names `policy`, and ebpf.oom.explain's ranking predicted that order.

    A victim that exits slowly in a busy TCG guest can make the kernel take a second one
    within the same OOM (see killed_by); the next OOM then starts further down the ranking.
    What the policy promises is the order of the kills, so this looks at the kills of all
    the reports together (the triggers' own kills left out). Returns those kills' pids."""
    pids = reports[0].pids
    kills = [pid for report in reports for pid in report.victim_pids if pid in pids.values()]
    assert kills[:len(victims)] == [pids[v] for v in victims], reports
    for report in reports:
        followed(report, policy, constraint)
    assert kills[:len(victims)] == ranking(explained)[:len(victims)], (explained, reports)
    return kills


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
