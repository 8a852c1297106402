"""Real OOMs in a guest prove the kernel interface (KERNEL-INTERFACE.md).

The programs of bpf/examples are compiled on the host (the engine's compiler,
clang) against a vmlinux.h made from the hook guest's own BTF: one toolchain
and fast, where compiling under TCG in the guest takes much longer; the BTF is
the running guest kernel's, so CO-RE relocations match it exactly. The guest
loads them with the engine's libbpf binding (plugins/module_utils copied in as
a package) through tests/vm/hook_smoke_guest.py, pins the links, and drives
python workloads in a cgroup v2 memory cgroup: three holders of different size
are ready first, then memory.max is set a little above the cgroup's usage and a
pusher allocates until the cgroup's first OOM kill. Who died is read from the
cgroup, every kill and its report's policy name from the kernel log, by the one
parser the VM tests share (oom_reports of molecule/shared/files/oomlab, copied
beside the helper).

Global OOMs (no memory limit; the pusher has oom_score_adj -1000, so the kernel
picks among the holders) run in a small guest of their own with sshd protected:
the shared session guest must not see them.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import abi, bpffs, common, compiler
from ansible_collections.ebpf.oom.plugins.plugin_utils.bundled import compile_generic

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EXAMPLES = os.path.join(REPO, "bpf", "examples")
TESTING = os.path.join(REPO, "bpf", "testing")
ENGINE = os.path.join(REPO, "plugins", "module_utils")
GUEST_HELPER = os.path.join(HERE, "hook_smoke_guest.py")
OOMLAB = os.path.join(REPO, "molecule", "shared", "files", "oomlab")
GUEST_DIR = "/root/kern-smoke"
GUEST_PINS = "/sys/fs/bpf/kern-smoke"
GUEST_TIMEOUT = 900
PROGRAMS = {"select_target": EXAMPLES, "policy_name": EXAMPLES, "verdict_for_pid": EXAMPLES,
            "verdict_for_all": TESTING, "select_group": TESTING}
HOOK_SYMBOLS = (common.HOOK_FUNC, common.NAME_FUNC, common.NAME_KFUNC)

# Holders in the memory cgroup (MiB each); the pusher then gets HEADROOM MiB
# more, so it stays between the smallest and the middle holder.
TARGET, MEDIUM, LARGE = "kern-target", "kern-medium", "kern-large"
HOLDERS = {TARGET: 16, MEDIUM: 48, LARGE: 96}
HEADROOM_MIB = 32

# A group policy's scene (select_group SELECTs every task named job*): two jobs,
# either of which frees enough for the pusher, and a smaller task of no group, which
# the kernel alone would never pick (nor the pusher: its HEADROOM_MIB < a job).
JOB_A, JOB_B, BYSTANDER = "job-a", "job-b", "kern-bystander"
GROUP_HOLDERS = {JOB_A: 40, JOB_B: 40, BYSTANDER: 24}
GROUP_REPEATS = 5

# dump_tasks(): [  pid  ]   uid  tgid total_vm      rss ...
TASK_ROW = re.compile(r"^\[\s*(\d+)\]\s+\d+\s+\d+\s+\d+\s+(\d+)\s")
NOTABLE = re.compile(r"invoked oom-killer|Killed process|killable|reaped|left no victim|^\[")
# The patch's safety net, before it scans again without the policy.
NO_VICTIM = "oom: BPF policy %s left no victim, the kernel's heuristic decides"


class OomReport:
    """What one push into OOM did: the helper's answer plus what the kernel log says.

    killed: the pid of every "Killed process" line, in order; named_kills: {pid: the
    policy_name of its report}; kills: [(pid, comm, policy_name)], in order. All come
    from the helper's `reports` (oomlab's oom_reports)."""

    def __init__(self, answer):
        self.__dict__.update(answer)
        self.kills = [(pid, comm, report["policy"])
                      for report in self.reports for pid, comm in report["kills"]]
        self.killed = [pid for pid, _comm, _policy in self.kills]
        self.named_kills = {pid: policy for pid, _comm, policy in self.kills}
        self.rss = {}
        for line in self.kmsg:
            row = TASK_ROW.match(line)
            if row and int(row.group(1)) not in self.rss:  # the first report's task list
                self.rss[int(row.group(1))] = int(row.group(2))

    def largest(self):
        """The pid with the most resident pages in the OOM report's task list."""
        return max(self.rss, key=self.rss.get)

    def __repr__(self):
        """Shown when an assertion fails: the OOM report's gist."""
        lines = ["alive=%s gone=%s pusher_exit=%s events=%s"
                 % (self.alive, self.gone, self.pusher_exit, self.events)]
        lines += [line for line in self.kmsg if NOTABLE.search(line)]
        return "\n".join(lines)


def find_bpftool():
    found = shutil.which("bpftool", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    assert found, "bpftool is needed on the host to make vmlinux.h (apt-get install bpftool)"
    return found


class GuestLab:
    """The guest helper's commands; every one returns its JSON answer."""

    def __init__(self, guest, objects):
        self.guest = guest
        self.objects = objects

    def run(self, *args, expect_rc=0):
        done = self.guest.ssh(["python3", GUEST_DIR + "/helper.py"] + [str(a) for a in args],
                              check=False, timeout=GUEST_TIMEOUT)
        lines = done.stdout.strip().splitlines()
        assert done.returncode == expect_rc and lines, (
            "guest helper %s: exit %d (wanted %d)\nstdout:\n%s\nstderr:\n%s"
            % (" ".join(map(str, args)), done.returncode, expect_rc, done.stdout, done.stderr))
        return json.loads(lines[-1])

    def attach(self, program, expect_rc=0, **globals_):
        return self.run("attach", self.objects[program], "%s/%s" % (GUEST_PINS, program),
                        json.dumps(globals_), expect_rc=expect_rc)

    def detach(self, program):
        return self.run("detach", "%s/%s" % (GUEST_PINS, program))


def install_lab(guest, objects_dir):
    """Copy the engine, the helper and the compiled objects into the guest."""
    package = GUEST_DIR + "/ebpf_oom_engine"
    guest.ssh(["rm", "-rf", GUEST_DIR])
    guest.ssh(["mkdir", "-p", package])
    for name in sorted(os.listdir(ENGINE)):
        if name.endswith(".py"):
            guest.put(os.path.join(ENGINE, name), package)
    guest.ssh(["touch", package + "/__init__.py"])
    guest.put(GUEST_HELPER, GUEST_DIR + "/helper.py")
    guest.put(OOMLAB, GUEST_DIR + "/oomlab")  # the helper's kernel-log parser
    objects = {}
    for name in PROGRAMS:
        guest.put(os.path.join(objects_dir, name + ".bpf.o"), GUEST_DIR)
        objects[name] = "%s/%s.bpf.o" % (GUEST_DIR, name)
    return GuestLab(guest, objects)


@pytest.fixture(scope="module")
def hook_objects(hook_vm, tmp_path_factory):
    """bpf/examples compiled against the hook guest's BTF (vmlinux.h in a temp dir)."""
    work = tmp_path_factory.mktemp("hook-smoke")
    btf = str(work / "vmlinux.btf")
    # scp copies the size stat() gives for the sysfs file; dd reads it to the end.
    hook_vm.ssh(["dd", "if=/sys/kernel/btf/vmlinux", "of=/tmp/kern-smoke-vmlinux.btf",
                 "bs=1M", "status=none"])
    hook_vm.get("/tmp/kern-smoke-vmlinux.btf", btf)
    header = work / "vmlinux.h"
    with open(str(header), "wb") as out:
        subprocess.run([find_bpftool(), "btf", "dump", "file", btf, "format", "c"],
                       stdout=out, check=True)
    for name, directory in PROGRAMS.items():
        try:
            compiler.compile_object(src=os.path.join(directory, name + ".bpf.c"),
                                    dest=str(work / (name + ".bpf.o")), vmlinux=str(header))
        except compiler.CompileError as exc:
            pytest.fail("%s: %s\n%s" % (name, exc, exc.log_tail), pytrace=False)
    return str(work)


@pytest.fixture(scope="module")
def hook_lab(hook_vm, hook_objects):
    return install_lab(hook_vm, hook_objects)


@pytest.fixture(scope="module")
def stock_lab(stock_vm, hook_objects):
    return install_lab(stock_vm, hook_objects)


@pytest.fixture(scope="module")
def global_lab(global_vm, hook_objects):
    """The session's small hook guest, for global OOMs; sshd survives them."""
    lab = install_lab(global_vm, hook_objects)
    lab.run("protect", "sshd")
    return lab


class Scene:
    """One memory cgroup with the holders, and the programs attached for it."""

    def __init__(self, lab, cgroup):
        self.lab = lab
        self.cgroup = cgroup
        self.attached = []
        self.pids = {}
        self.stats_before = None

    def start(self, holders=None):
        """Count program runs, start the holders ({name: MiB}, HOLDERS if None); their
        pids by name."""
        self.stats_before = self.lab.run("stats", 1)["previous"]
        specs = ["%s:%d" % item for item in (HOLDERS if holders is None else holders).items()]
        self.pids = self.lab.run("spawn", self.cgroup, *specs)["pids"]
        return self.pids

    def attach(self, program, **globals_):
        self.attached.append(program)
        return self.lab.attach(program, **globals_)

    def runs(self, program):
        """{link name: {target, run_cnt}} of a program attached here."""
        return self.lab.run("runs", "%s/%s" % (GUEST_PINS, program))

    def oom(self, stall=None):
        """Push the cgroup into OOM; the report of what happened (see the helper)."""
        self.lab.run("limit", self.cgroup, HEADROOM_MIB)
        args = ["push", self.cgroup] + (["--stall", stall] if stall else [])
        return OomReport(self.lab.run(*args))

    def global_oom(self):
        """Push the whole guest into OOM (no limit); the pusher itself cannot be killed."""
        return OomReport(self.lab.run("push", self.cgroup, "--unkillable"))

    def close(self):
        errors = []
        for program in self.attached:
            try:
                self.lab.detach(program)
            except AssertionError as exc:
                errors.append(str(exc))
        self.lab.run("cleanup", self.cgroup)
        if self.stats_before is not None:
            self.lab.run("stats", self.stats_before)
        assert not errors, errors


@contextlib.contextmanager
def open_scene(lab, request, suffix=""):
    """A Scene whose cgroup is named after the test (plus suffix: one test, many scenes)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name[len("test_"):])[:40]
    current = Scene(lab, "kern-" + name + suffix)
    try:
        yield current
    finally:
        current.close()


@pytest.fixture(scope="module")
def generic_object(hook_lab, tmp_path_factory):
    """The generic policy object (CO-RE: compiled on the host) in the guest's lab dir."""
    built = compile_generic(cache_dir=str(tmp_path_factory.mktemp("generic")))
    hook_lab.guest.put(built, GUEST_DIR + "/generic.bpf.o")
    return GUEST_DIR + "/generic.bpf.o"


@pytest.fixture
def scene(hook_lab, request):
    with open_scene(hook_lab, request) as current:
        yield current


@pytest.fixture
def global_scene(global_lab, request):
    with open_scene(global_lab, request) as current:
        yield current


def test_hook_kernel_has_hook_in_btf(hook_lab):
    assert hook_lab.run("btf-has", *HOOK_SYMBOLS) == {name: True for name in HOOK_SYMBOLS}


def test_select_kills_target_although_not_largest(scene):
    pids = scene.start()
    scene.attach("select_target", target_pid=pids[TARGET])
    report = scene.oom()
    assert report.killed == [pids[TARGET]], report
    assert report.gone == [pids[TARGET]], report
    assert report.largest() == pids[LARGE] != pids[TARGET], report


def test_oom_report_shows_policy_name(scene):
    pids = scene.start()
    scene.attach("select_target", target_pid=pids[TARGET])
    scene.attach("policy_name", policy_name="kern-smoke-name")
    report = scene.oom()
    assert report.named_kills == {pids[TARGET]: "kern-smoke-name"}, report


def test_policy_name_longer_than_15_bytes_is_cut(scene):
    pids = scene.start()
    scene.attach("select_target", target_pid=pids[TARGET])
    scene.attach("policy_name", policy_name="abcdefghijklmnop")  # 16 bytes, no NUL
    report = scene.oom()
    assert report.named_kills == {pids[TARGET]: "abcdefghijklmno"}, report


def test_oom_report_says_default_without_name_program(scene):
    pids = scene.start()
    scene.attach("select_target", target_pid=pids[TARGET])
    report = scene.oom()
    assert report.named_kills == {pids[TARGET]: "default"}, report


def test_next_protects_largest_task(scene):
    pids = scene.start()
    scene.attach("verdict_for_pid", target_pid=pids[LARGE], verdict=common.BPF_EVAL_NEXT)
    report = scene.oom()
    assert report.largest() == pids[LARGE], report
    assert pids[LARGE] in report.alive, report
    assert report.killed == [pids[MEDIUM]], report


def test_no_opinion_leaves_choice_to_kernel(scene):
    pids = scene.start()
    scene.attach("verdict_for_pid", target_pid=pids[TARGET], verdict=common.NO_BPF_POLICY)
    report = scene.oom()
    assert report.killed == [pids[LARGE]] == [report.largest()], report
    link = scene.runs("verdict_for_pid")["verdict_for_pid"]
    assert link["target"] == common.HOOK_FUNC and link["run_cnt"] > 0  # it was asked


# For the small task, 7 taken as SELECT would kill it; for the largest, taken as
# NEXT it would spare it; taken as ABORT nothing dies. No opinion: the largest dies.
@pytest.mark.parametrize("who", [TARGET, LARGE], ids=["small", "largest"])
def test_unknown_verdict_counts_as_no_opinion(scene, who):
    pids = scene.start()
    scene.attach("verdict_for_pid", target_pid=pids[who], verdict=7)
    report = scene.oom()
    assert report.killed == [pids[LARGE]] == [report.largest()], report
    assert pids[TARGET] in report.alive, report
    assert scene.runs("verdict_for_pid")["verdict_for_pid"]["run_cnt"] > 0


def test_abort_kills_nothing_in_memcg(scene):
    pids = scene.start()
    scene.attach("verdict_for_pid", target_pid=pids[TARGET], verdict=common.BPF_EVAL_ABORT)
    report = scene.oom(stall=3)
    assert report.events["oom"] >= 3, report
    assert report.events["oom_kill"] == 0, report
    assert report.killed == [] and report.gone == [], report
    assert sorted(report.alive) == sorted(pids.values()), report


def test_abort_stalls_allocator_until_it_is_killed(scene):
    pids = scene.start()
    scene.attach("verdict_for_pid", target_pid=pids[TARGET], verdict=common.BPF_EVAL_ABORT)
    report = scene.oom(stall=3)
    assert report.pusher_exit is None, report  # still in its page fault, retrying
    scene.lab.run("kill", report.pusher)  # SIGKILL ends the wait
    after = scene.lab.run("status", scene.cgroup)
    assert after["events"]["oom_kill"] == 0, after
    assert sorted(after["procs"]) == sorted(pids.values()), after


def test_next_for_every_task_in_memcg_kills_nothing(scene):
    pids = scene.start()
    scene.attach("verdict_for_all", verdict=common.BPF_EVAL_NEXT)
    report = scene.oom(stall=3)
    assert report.events["oom_kill"] == 0 and report.killed == [], report
    assert sorted(report.alive) == sorted(pids.values()), report
    assert not any("left no victim" in line for line in report.kmsg), report  # global only


def group_select_runs(lab, request, push, kind):
    """GROUP_REPEATS scenes of GROUP_HOLDERS with select_group attached, one push(scene)
    into OOM each. Per OOM a summary line (printed at once); the lines and how many OOMs
    killed exactly one job, sparing the other job and the bystander."""
    lines, good = [], 0
    for run in range(1, GROUP_REPEATS + 1):
        head = "%s OOM %d/%d" % (kind, run, GROUP_REPEATS)
        try:
            with open_scene(lab, request, suffix="-%d" % run) as current:
                pids = current.start(GROUP_HOLDERS)
                current.attach("select_group")
                report = push(current)
        except AssertionError as exc:  # the helper failed: record it, go on
            lines.append("%s: ERROR %s" % (head, str(exc).splitlines()[0]))
            print(lines[-1] + "\n" + str(exc), flush=True)
            continue
        names = {pid: name for name, pid in pids.items()}
        jobs = {pids[JOB_A], pids[JOB_B]}
        spared = (jobs - set(report.killed)) | {pids[BYSTANDER]}
        ok = (len(report.killed) == 1 and report.killed[0] in jobs
              and spared <= set(report.alive))
        good += ok
        lines.append("%s: %s; kills: %s; alive: %s; oom_kill=%d" % (
            head, "ok" if ok else "FAIL (%d kills)" % len(report.killed),
            ", ".join("%s[%d] policy=%s" % (names.get(pid, comm), pid, policy)
                      for pid, comm, policy in report.kills) or "none",
            ", ".join(names.get(pid, str(pid)) for pid in report.alive) or "none",
            report.events.get("oom_kill", -1)))
        print(lines[-1], flush=True)
        if not ok:
            print(repr(report), flush=True)
    return lines, good


# A naive group policy SELECTs every job, also while the job it chose in this OOM is
# still exiting: the kernel must wait for that victim before it asks the program
# again, or it kills the other job too. One kill is all any of these OOMs needs.
@pytest.mark.timeout(1800)  # five scenes, each a push into OOM under TCG
def test_group_select_kills_one_task_per_memcg_oom(hook_lab, request):
    lines, good = group_select_runs(hook_lab, request, Scene.oom, "memcg")
    assert good == GROUP_REPEATS, "%d of %d memcg OOMs did not kill exactly one job:\n%s" % (
        GROUP_REPEATS - good, GROUP_REPEATS, "\n".join(lines))


def test_stock_kernel_has_no_hook_in_btf(stock_lab):
    found = stock_lab.run("btf-has", "oom_badness", *HOOK_SYMBOLS)
    assert found == dict({"oom_badness": True}, **{name: False for name in HOOK_SYMBOLS})


def test_stock_kernel_refuses_hook_program_clearly(stock_lab):
    answer = stock_lab.attach("select_target", expect_rc=2, target_pid=1)
    text = answer["error"] + "\n" + answer["log_tail"]
    assert "refused to load" in answer["error"]
    assert common.HOOK_FUNC in text
    assert stock_lab.detach("select_target")["removed"] == []


# Global OOMs, last: their small guest (global_lab) starts only here.
def test_abort_in_global_oom_counts_as_no_opinion(global_scene):
    pids = global_scene.start()
    global_scene.attach("verdict_for_all", verdict=common.BPF_EVAL_ABORT)
    report = global_scene.global_oom()  # an abort here would stall it: no kill, retries
    assert report.pusher_exit == 0, report
    assert report.killed == [pids[LARGE]] == report.gone, report  # the heuristic's choice
    assert not any("left no victim" in line for line in report.kmsg), report  # judged, not skipped
    assert global_scene.runs("verdict_for_all")["verdict_for_all"]["run_cnt"] > 0


def test_next_for_every_task_in_global_oom_lets_kernel_choose(global_scene):
    pids = global_scene.start()
    global_scene.attach("verdict_for_all", verdict=common.BPF_EVAL_NEXT)
    global_scene.attach("policy_name", policy_name="kern-smoke-next")
    report = global_scene.global_oom()  # without the safety net: a panic
    assert NO_VICTIM % "kern-smoke-next" in report.kmsg, report
    assert report.named_kills == {pids[LARGE]: "default"}, report  # the kernel's choice
    assert report.gone == [pids[LARGE]], report


def test_select_of_unkillable_task_in_global_oom_lets_kernel_choose(global_scene):
    # The policy chooses a task whose badness is LONG_MIN (here -1000; in a race, one
    # that exited) and skips all others: the kernel drops the choice, nothing is left.
    pids = global_scene.start()
    global_scene.lab.run("protect", TARGET)
    global_scene.attach("verdict_for_all", verdict=common.BPF_EVAL_NEXT,
                        select_pid=pids[TARGET])
    report = global_scene.global_oom()
    assert NO_VICTIM % "default" in report.kmsg, report
    assert report.named_kills == {pids[LARGE]: "default"}, report
    assert report.gone == [pids[LARGE]], report


@pytest.mark.timeout(1800)  # five scenes, each a push into OOM under TCG
def test_group_select_kills_one_task_per_global_oom(global_lab, request):
    lines, good = group_select_runs(global_lab, request, Scene.global_oom, "global")
    assert good == GROUP_REPEATS, "%d of %d global OOMs did not kill exactly one job:\n%s" % (
        GROUP_REPEATS - good, GROUP_REPEATS, "\n".join(lines))


def document(name, comm, action):
    return {"name": name, "rules": [{"match": {"comm": comm}, "action": action}]}


# Each push below must end in one kill. Under load it ended in two before the patch hid a
# victim from the OOM killer only once its pages were freed (molecule/kernel/README.md):
# the first victim skipped while still charged, the kernel's heuristic took the largest.
def test_a_new_document_decides_only_once_handed_over(scene, generic_object):
    """A document applied over another (the same object: new rule maps, the loader's
    hand-over): the new programs are attached and their rules complete while the old
    ones still decide. The old document protects the largest holder and leaves the rest
    to the kernel (the medium one dies); the new one selects the smallest. An OOM in
    that window is the old document's alone: the new programs, asked about every task
    the old ones have no opinion on, must not choose; the next OOM is the new
    document's. The engine's hook backend drives it in the guest, with the OOM pushed
    from inside the apply, right after the new programs' cgroups are filled in."""
    pids = scene.start()
    answer = scene.lab.run("handover", generic_object, scene.cgroup, HEADROOM_MIB,
                           json.dumps(document("handover", LARGE, "protect")),
                           json.dumps(document("handover", TARGET, "select")))
    assert (answer["first"], answer["second"]) == ("created", "reloaded"), answer
    assert bpffs.LINK_PREFIX + abi.EVAL_PROGRAM in answer["staged"], answer
    during, after = OomReport(answer["during"]), OomReport(answer["after"])
    # in full when a check fails (pytest cuts assertion messages short): the kernel's lines
    print("during the hand-over:\n%r\nafter it:\n%r" % (during, after))
    assert during.named_kills == {pids[MEDIUM]: "handover"}, during
    assert during.gone == [pids[MEDIUM]], during
    assert after.named_kills == {pids[TARGET]: "handover"}, after
    assert after.gone == [pids[TARGET]] and pids[LARGE] in after.alive, after


CHURN_ROUNDS = 6


def test_alternating_documents_while_ooms_follow_each_other(scene, generic_object):
    """The two documents above applied in turn, in a loop, while OOMs follow one another
    in the same memory cgroup: every OOM kills exactly one task, the one of the two
    documents' choices (the medium holder: the kernel's, under the first; the smallest:
    the second's), with the policy's name; never the largest, which the first protects
    and the second does not rank, and which only a mixture (a rule set half written, a
    zeroed rule, two programs deciding) could kill."""
    answer = scene.lab.run("churn", generic_object, scene.cgroup, HEADROOM_MIB, CHURN_ROUNDS,
                           json.dumps(document("churn", LARGE, "protect")),
                           json.dumps(document("churn", TARGET, "select")),
                           *["%s:%d" % item for item in HOLDERS.items()])
    assert answer["first"]["applied"] == ["created"], answer
    assert answer["applied"] == ["reloaded"] * CHURN_ROUNDS, answer
    ooms = answer["ooms"]
    print("kills of each push: %s" % ooms)  # in full when a check fails
    for kmsg in answer.get("kmsg_of_extra_kills", []):
        print("the kernel's lines of a push with more than one kill:\n%s" % "\n".join(kmsg))
    assert len(ooms) >= 3, answer  # OOMs happened while the applies ran
    for kills in ooms:
        assert len(kills) == 1, answer
        _pid, comm, policy = kills[0]
        assert comm in (MEDIUM, TARGET) and policy == "churn", answer
    assert answer["pids"][LARGE] in scene.lab.run("status", scene.cgroup)["procs"], answer
