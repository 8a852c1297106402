"""explain on this host's own kernel (iter/task, no hook): a document's preview ranks a
few test processes of known size as the document says, the kernel's own choice is the
largest, a loaded policy's maps are read as they are, and the host is left unchanged.

The processes hold memory in cgroups of a v2 hierarchy (tests/conftest.py:
cgroup_v2); the imagined OOM is that of their parent cgroup, so they are its only
candidates. Through ebpf.oom.explain (ansible-playbook on localhost) and the engine.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import abi, cgrouprules, explain, loader, renderer
from ansible_collections.ebpf.oom.plugins.plugin_utils.bundled import compile_generic
from conftest import REPO
from hosthelpers import remove_cgroup
from support import venv_tool

HOLD = r"""
import ctypes, os, signal, sys
open(os.path.join(sys.argv[1], "cgroup.procs"), "w").write("0")
ctypes.CDLL(None).prctl(15, sys.argv[2].encode(), 0, 0, 0)
keep = [b"\x5a" * (1 << 20) for _ in range(int(sys.argv[3]))]
os.write(1, b"r")
os.close(1)
while keep:
    signal.pause()
"""
SIZES = {"ex-small": 8, "ex-mid": 24, "ex-big": 48}  # MiB
PERCPU_SLACK = 3 * 64 * os.cpu_count()  # pages: per-CPU batches of the three RSS counters


@pytest.fixture(scope="module")
def generic(tmp_path_factory):
    return compile_generic(cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def holders(cgroup_v2):
    """{comm: pid} of three processes holding memory, each in cgroup <top>/<comm>."""
    point, top = cgroup_v2
    procs = {}
    try:
        for comm, mib in SIZES.items():
            path = os.path.join(point, top.lstrip("/"), comm)
            os.mkdir(path)
            proc = subprocess.Popen([sys.executable, "-c", HOLD, path, comm, str(mib)],
                                    stdout=subprocess.PIPE)
            assert proc.stdout.read(1) == b"r"
            procs[comm] = proc
        yield dict((comm, p.pid) for comm, p in procs.items())
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def kernel_objects():
    """Ids of every BPF program, map and link on the host."""
    found = []
    for kind in ("prog", "map", "link"):
        out = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True,
                             check=True).stdout
        found.append(set(item["id"] for item in json.loads(out or "[]")))
    return tuple(found)


def left_behind(before, timeout=10.0):
    """What the kernel still has beyond `before`, once it freed what it frees (RCU, work
    items) within the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        extra = tuple(now - then for now, then in zip(kernel_objects(), before))
        if not any(extra) or time.monotonic() > deadline:
            return extra
        time.sleep(0.1)


def document(top):
    return {"name": "preview", "rules": [
        {"match": {"comm": "ex-big"}, "action": "protect"},
        {"match": {"cgroup": top + "/ex-small"}, "action": "prefer", "tier": 1},
    ]}


def test_a_document_preview_ranks_the_processes_as_the_document_says(generic, cgroup_v2,
                                                                     holders):
    point, top = cgroup_v2
    before = kernel_objects()
    result = explain.explain(generic, oom=top, document=document(top), top=5)
    assert left_behind(before) == (set(), set(), set())  # nothing it loaded stays
    assert result["oom"]["kind"] == "memcg" and result["policy_acts"]
    assert result["counts"] == {"candidates": 3, "protected": 1, "unkillable": 0, "unranked": 1}
    victim = result["victim"]
    assert (victim["pid"], victim["comm"], victim["action"]) == (holders["ex-small"], "ex-small", "prefer")
    assert victim["rule"]["index"] == 1 and victim["cgroup"] == top + "/ex-small"
    # prefer first, then the kernel's choice among the rest; the protected one never
    assert [r["comm"] for r in result["ranking"]] == ["ex-small", "ex-mid"]
    assert result["kernel_victim"]["comm"] == "ex-big"
    assert not result["no_victim"]


def test_points_are_the_kernels_own_page_counts(generic, cgroup_v2, holders):
    """The iterator reads what /proc reads: resident pages as statm counts them (file, anon,
    shmem), page tables as VmPTE; points are their sum with swap (none here) and an
    oom_score_adj of 0. The OOM killer (and the iterator) read the counters' shared part,
    statm sums the per-CPU parts too: they may differ by the counters' per-CPU batches."""
    point, top = cgroup_v2
    result = explain.explain(generic, oom=top, document={"name": "plain", "rules": []}, top=10)
    seen = dict((r["pid"], r) for r in result["ranking"])
    for comm, pid in holders.items():
        with open("/proc/%d/statm" % pid) as f:
            resident = int(f.read().split()[1])
        with open("/proc/%d/status" % pid) as f:
            status = dict(line.split(":", 1) for line in f)
        pte_pages = int(status["VmPTE"].split()[0]) * 1024 // explain.PAGE_SIZE
        row = seen[pid]
        rss = row["rss_kb"] * 1024 // explain.PAGE_SIZE
        assert abs(rss - resident) <= PERCPU_SLACK, (comm, row, resident)
        assert row["points"] == rss + pte_pages, (comm, row, pte_pages)
        assert row["rss_kb"] >= SIZES[comm] * 1024


def test_a_loaded_policy_is_explained_from_its_own_maps(generic, cgroup_v2, holders, private_roots):
    """The policy is loaded as far as this kernel allows (its cgroup programs, no hook):
    explain by name reads its pinned maps, and says what the document says."""
    point, top = cgroup_v2
    rendered = renderer.render(document(top))
    loader.apply("preview", generic, globals=rendered.globals, maps=rendered.maps, persist=False,
                 document=document(top), programs=list(abi.CGROUP_PROGRAMS),
                 after_attach=lambda map_fd: cgrouprules.sync(map_fd(abi.LIVE_MAP),
                                                              rendered.cgroup_rules))
    try:
        result = explain.explain(generic, oom=top, name="preview")
    finally:
        loader.remove("preview")
    assert result["victim"]["comm"] == "ex-small" and result["policy"] == "preview"


def test_a_policy_with_its_own_iterator_is_explained_without_loading_anything(
        generic, cgroup_v2, holders, private_roots, monkeypatch):
    """Loaded as the backends load it, with its task iterator pinned: explain by name runs
    that iterator for each imagined OOM (memcg, global, memcg again) and opens no object;
    the answers are those of a private load over a policy loaded without the iterator."""
    point, top = cgroup_v2
    rendered = renderer.render(document(top))

    def load(name, programs):
        loader.apply(name, generic, globals=rendered.globals, maps=rendered.maps, persist=False,
                     document=document(top), programs=programs,
                     after_attach=lambda map_fd: cgrouprules.sync(map_fd(abi.LIVE_MAP),
                                                                  rendered.cgroup_rules))

    def gist(result):
        return ([row["pid"] for row in result["ranking"]], result["victim"]["pid"],
                result["counts"]["candidates"])

    def refuse(*_args, **_kwargs):
        raise AssertionError("explain opened an object for a policy with its own iterator")

    load("own", list(abi.CGROUP_PROGRAMS) + [abi.TASKS_PROGRAM])
    load("private", list(abi.CGROUP_PROGRAMS))
    try:
        private = explain.explain(generic, oom=top, name="private")
        monkeypatch.setattr(loader, "open_object", refuse)
        own = [explain.explain(generic, oom=oom, name="own") for oom in (top, None, top)]
    finally:
        loader.remove("own")
        loader.remove("private")
    assert gist(own[0]) == gist(own[2]) == gist(private)
    assert [row["comm"] for row in own[0]["ranking"]][:1] == ["ex-small"]
    assert own[0]["counts"]["candidates"] == len(SIZES) < own[1]["counts"]["candidates"]


def test_a_c_policy_or_an_unknown_name_is_refused_clearly(generic, private_roots):
    with pytest.raises(explain.ExplainError, match="no policy nosuch is loaded"):
        explain.explain(generic, name="nosuch")


def test_an_object_anyone_may_write_is_refused_before_anything_is_loaded(generic, cgroup_v2,
                                                                         private_roots, tmp_path):
    """explain loads the object as root with a loaded policy's maps bound in, writable: it
    trusts an object only as the loader does (owned by root, writable by no one else), also
    through the host command's --object."""
    point, top = cgroup_v2
    swapped = tmp_path / "generic.bpf.o"
    shutil.copy(generic, str(swapped))
    os.chmod(str(swapped), 0o666)
    before = kernel_objects()
    with pytest.raises(explain.ExplainError, match=r"refusing to load the object: .* is world-writable"):
        explain.explain(str(swapped), oom=top, document=document(top))
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(document(top)))
    done = host_command(tmp_path, "explain", "--document", str(doc), "--object", str(swapped))
    assert done.returncode == 1 and "is world-writable" in done.stderr, done.stderr
    assert left_behind(before) == (set(), set(), set())


LEADERLESS = r"""
import ctypes, os, signal, sys, threading
open(os.path.join(sys.argv[1], "cgroup.procs"), "w").write("0")
ctypes.CDLL(None).prctl(15, b"ex-leaderless", 0, 0, 0)
def hold():
    keep = b"\x5a" * (int(sys.argv[2]) << 20)
    os.write(1, b"r")
    os.close(1)
    while keep:
        signal.pause()
threading.Thread(target=hold).start()
ctypes.CDLL(None).pthread_exit(None)   # the leader exits; the process lives on in its thread
"""


def leader_exited(pid, bound=10.0):
    """True once the process's leader is a zombie (its thread lives on)."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        time.sleep(0.01)
    return False


def test_a_process_whose_leader_exited_is_ranked_with_its_threads_memory(generic, cgroup_v2, holders):
    """The leader called pthread_exit() while a thread holds 40 MiB: the kernel reads the
    process's memory through a live thread (find_lock_task_mm), and so does the program
    (it used to skip such a process: the leader has no mm)."""
    point, top = cgroup_v2
    path = os.path.join(point, top.lstrip("/"), "ex-leaderless")
    os.mkdir(path)
    proc = subprocess.Popen([sys.executable, "-c", LEADERLESS, path, "40"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.read(1) == b"r"
        assert leader_exited(proc.pid)
        result = explain.explain(generic, oom=top, document={"name": "preview", "rules": [
            {"match": {"comm": "ex-leaderless"}, "action": "prefer", "tier": 1}]}, top=5)
        victim = result["victim"]
        assert (victim["pid"], victim["action"]) == (proc.pid, "prefer"), result
        assert victim["rss_kb"] >= 40 * 1024, victim
    finally:
        proc.kill()
        proc.wait()
        remove_cgroup(path)


def test_a_task_nested_far_below_a_rules_cgroup_is_ranked_by_that_rule(generic, cgroup_v2, holders):
    """70 cgroup levels below the cgroup a prefer rule names (a user's own delegated
    subtree has no depth limit): the task is that rule's, and in the memory cgroup's OOM
    (it used to match no cgroup rule past 64 levels, and count as outside the memcg)."""
    point, top = cgroup_v2
    deep = os.path.join(point, top.lstrip("/"), "ex-deep", *(["d"] * 70))
    os.makedirs(deep)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, deep, "ex-deep", "2"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.read(1) == b"r"
        result = explain.explain(generic, oom=top, document={"name": "preview", "rules": [
            {"match": {"cgroup": top + "/ex-deep"}, "action": "prefer", "tier": 1}]}, top=5)
        victim = result["victim"]
        assert (victim["pid"], victim["action"], victim["rule"]["index"]) == (proc.pid, "prefer", 0)
        assert result["counts"]["candidates"] == 4, result["counts"]
    finally:
        proc.kill()
        proc.wait()
        for level in range(70, -1, -1):
            remove_cgroup(os.path.join(point, top.lstrip("/"), "ex-deep", *(["d"] * level)))


def test_the_module_explains_a_document_through_ansible(generic, cgroup_v2, holders, tmp_path):
    point, top = cgroup_v2
    play = [{"hosts": "localhost", "gather_facts": False, "connection": "local",
             "vars": {"ansible_python_interpreter": sys.executable},
             "tasks": [{"ebpf.oom.explain": {"policy": document(top), "oom": {"memcg": top}, "top": 2},
                        "register": "out"},
                       {"ansible.builtin.copy": {"content": "{{ out | to_json }}",
                                                 "dest": str(tmp_path / "out.json")}}]}]
    book = tmp_path / "play.json"
    book.write_text(json.dumps(play))
    done = subprocess.run([venv_tool("ansible-playbook"), "-i", "localhost,", str(book)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["changed"] is False and out["victim"]["comm"] == "ex-small"
    assert len(out["ranking"]) == 2 and out["kernel_victim"]["comm"] == "ex-big"


def host_command(tmp_path, *args):
    """`ebpf-oom ARGS` as the role installs it (the engine beside it as ebpf_oom_engine),
    with a state directory of the test's own."""
    command = tmp_path / "ebpf-oom"
    if not command.exists():
        shutil.copy(os.path.join(REPO, "roles", "bpf_oom", "files", "ebpf-oom"), str(command))
        os.symlink(os.path.join(REPO, "plugins", "module_utils"), str(tmp_path / "ebpf_oom_engine"))
    env = dict(os.environ, EBPF_OOM_STATE_DIR=str(tmp_path / "state"))
    return subprocess.run([sys.executable, str(command)] + list(args), capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_the_host_command_prints_the_ranking_as_a_table_and_as_json(generic, cgroup_v2, holders, tmp_path):
    """`ebpf-oom explain --document FILE --memcg PATH`: the ranking, rank by rank, for a
    person at a shell; --json is the module's result."""
    point, top = cgroup_v2
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(document(top)))
    args = ["explain", "--document", str(doc), "--memcg", top, "--object", generic]
    table = host_command(tmp_path, *args)
    assert table.returncode == 0, table.stderr
    sys.stdout.write(table.stdout)
    lines = table.stdout.splitlines()
    assert lines[0] == "policy preview, a memcg OOM of %s: the policy decides" % top
    assert lines[1].split()[:4] == ["#", "pid", "comm", "cgroup"]
    assert [line.split()[:3] for line in lines[2:4]] == [["1", str(holders["ex-small"]), "ex-small"],
                                                         ["2", str(holders["ex-mid"]), "ex-mid"]]
    assert "without the policy the kernel would kill %d ex-big" % holders["ex-big"] in table.stdout
    as_json = host_command(tmp_path, *(args + ["--json", "--top", "1"]))
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert [r["comm"] for r in result["ranking"]] == ["ex-small"] and result["victim"]["pid"] == holders["ex-small"]


def test_the_host_command_without_a_generic_object_says_what_to_do(cgroup_v2, tmp_path):
    """No declarative policy kept on the host and no --object: a clear error, exit 1."""
    point, top = cgroup_v2
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(document(top)))
    done = host_command(tmp_path, "explain", "--document", str(doc))
    assert done.returncode == 1 and done.stdout == ""
    assert "no generic object on this host" in done.stderr and "--object" in done.stderr, done.stderr
