"""OOM kill reporting on this machine's kernel: the observer (bpf/observer.bpf.c) is
deployed with ebpf.oom.observer (its action plugin compiles it here against the bundled
CO-RE vmlinux.h), a real memcg OOM kills a memory hog in a memory cgroup (cgroup v1's
when the host mounts its memory controller, else cgroup v2's), and the observer's maps,
events.collect() and the events_info module (ansible-playbook, connection local) must all
name the process that died.

The observer lives under a bpffs root and state dir of its own (EBPF_OOM_BPFFS_ROOT,
EBPF_OOM_STATE_DIR) and is removed at teardown; the hog is killed and its cgroup removed
even when a test fails.
"""

import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.ebpf.oom.plugins.module_utils import cli, compiler, events, libbpf, observer as obs, state, verify
from hosthelpers import HOG_LIMIT_MIB, oom_killed_hog
from support import venv_tool

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ANSIBLE_PLAYBOOK = venv_tool("ansible-playbook")


def oom_kill_hog(comm, adj=0):
    """hosthelpers.OOM_CHILD here; its JSON, once its memory cgroup is gone."""
    name = "ebpf_oom_test_%s" % uuid.uuid4().hex[:8]
    hog = oom_killed_hog(name, comm, adj)
    for hierarchy in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup"):  # v1's memory, or v2
        assert not os.path.exists(os.path.join(hierarchy, name))
    hog["comm"] = comm
    return hog


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """A bpffs root and state dir of this module's own, through the environment."""
    tag = uuid.uuid4().hex[:8]
    env = {"EBPF_OOM_BPFFS_ROOT": "/sys/fs/bpf/ebpf_oom_test_events_%s" % tag,
           "EBPF_OOM_STATE_DIR": str(tmp_path_factory.mktemp("state"))}
    saved = dict((k, os.environ.get(k)) for k in env)
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if os.path.isdir(env["EBPF_OOM_BPFFS_ROOT"]):
            os.rmdir(env["EBPF_OOM_BPFFS_ROOT"])


def run_task(tmp_path, task, check=False):
    """One task through ansible-playbook on localhost, in the test's roots; its result."""
    out = tmp_path / "result.json"
    play = [{
        "hosts": "localhost", "gather_facts": False, "connection": "local",
        "vars": {"ansible_python_interpreter": sys.executable},
        "environment": dict((k, os.environ[k]) for k in ("EBPF_OOM_BPFFS_ROOT", "EBPF_OOM_STATE_DIR")),
        "tasks": [
            dict(task, register="r"),
            {"ansible.builtin.copy": {"content": "{{ r | to_json }}", "dest": str(out), "mode": "0600"},
             "check_mode": False},
        ],
    }]
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps(play))
    argv = [ANSIBLE_PLAYBOOK, "-i", "localhost,", str(playbook)] + (["--check", "--diff"] if check else [])
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=300, check=False)
    assert proc.returncode == 0 or task.get("ignore_errors"), proc.stdout
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def observer(roots, tmp_path_factory):
    """The observer deployed by ebpf.oom.observer (and again: unchanged); removed afterwards."""
    tmp = tmp_path_factory.mktemp("observer")
    first = run_task(tmp, {"ebpf.oom.observer": {}})
    try:
        again = run_task(tmp, {"ebpf.oom.observer": {}})
        yield {"first": first, "again": again, "tmp": tmp}
    finally:
        run_task(tmp, {"ebpf.oom.observer": {"state": "absent"}})


@pytest.fixture(scope="module")
def killed(observer):
    """One real memcg OOM kill while the observer runs, and the observer's count before it."""
    before = obs.read_observer()["kills"]
    start = time.time()
    hog = oom_kill_hog("ebpfoom_hog%s" % uuid.uuid4().hex[:4], adj=500)
    hog.update(kills_before=before, start=start)
    return hog


def the_event(found, hog):
    matches = [e for e in found if e["pid"] == hog["pid"]]
    assert len(matches) == 1, found
    return matches[0]


def test_observer_module_deploys_the_tp_btf_build_under_its_own_entry(observer):
    first = observer["first"]
    assert (first["changed"], first["action"], first["variant"]) == (True, "created", "tp_btf")
    assert first["record"]["name"] == obs.OBSERVER_NAME
    [prog] = first["record"]["programs"]
    assert (prog["section"], prog["target"]) == ("tp_btf/mark_victim", "mark_victim")
    found = verify.verify(name=obs.OBSERVER_NAME, object_sha256=first["object_sha256"])
    assert found["problems"] == []
    assert state.saved_names() == [obs.OBSERVER_NAME]  # the boot restore brings it back


def test_observer_module_rerun_changes_nothing(observer):
    again = observer["again"]
    assert (again["changed"], again["action"], again["variant"]) == (False, "unchanged", "tp_btf")
    assert again["record"]["programs"] == observer["first"]["record"]["programs"]


def test_observer_module_in_check_mode_shows_its_removal_and_changes_nothing(observer, tmp_path):
    gone = run_task(tmp_path, {"ebpf.oom.observer": {"state": "absent"}}, check=True)
    assert (gone["changed"], gone["action"]) == (True, "removed")
    assert gone["diff"]["before"]["name"] == obs.OBSERVER_NAME and gone["diff"]["after"] == {}
    assert obs.read_observer()["loaded"]
    kept = run_task(tmp_path, {"ebpf.oom.observer": {}}, check=True)
    assert (kept["changed"], kept["action"]) == (False, "unchanged")


def test_observer_module_fails_clearly_on_objects_that_do_not_load(roots, tmp_path):
    junk = tmp_path / "junk.bpf.o"
    junk.write_bytes(b"not an ELF object")
    r = run_task(tmp_path, {"ebpf.oom.observer": {"objects": [str(junk)], "persist": False},
                            "ignore_errors": True})
    assert r["failed"] and r["msg"].startswith("no build of the OOM observer loads: %s: " % junk)


def test_restore_brings_the_observer_back_and_says_so(observer, capsys):
    assert cli.main(["restore"]) == 0
    out, err = capsys.readouterr()
    assert out == "<6>ebpf-oom: restored policy observer\n" and err == ""


def test_observer_maps_have_the_layout_of_observer_h(observer):
    layout = obs.observer_layout()
    with libbpf.pinned(layout.map(obs.OBSERVER_VICTIMS_MAP)) as fd:
        info = libbpf.map_info(fd)
    assert (info["value_size"], info["max_entries"]) == (
        ctypes.sizeof(obs.ObserverVictim), obs.OBSERVER_VICTIMS)


def test_observer_records_the_killed_process(killed):
    state = obs.read_observer()
    assert state["kills"] == killed["kills_before"] + 1
    ev = the_event(state["events"], killed)
    assert ev["comm"] == killed["comm"]
    assert ev["memcg_id"] == killed["memcg_id"]
    assert (ev["uid"], ev["oom_score_adj"]) == (0, 500)
    assert ev["anon_rss_kb"] > HOG_LIMIT_MIB * 1024 // 2
    assert ev["sources"] == ["observer"]


def test_events_name_the_killed_process_from_kernel_log_and_observer(killed):
    found = events.collect(since=killed["start"] - 1)
    assert found["warnings"] == []
    ev = the_event(found["events"], killed)
    assert ev["comm"] == killed["comm"]
    assert ev["sources"] == ["kmsg", "observer"]
    assert (ev["memcg"], ev["oom_memcg"], ev["constraint"]) == (killed["memcg"], killed["memcg"], "memcg")
    assert ev["memcg_id"] == killed["memcg_id"]
    assert ev["oom_score_adj"] == 500 and ev["rss_kb"] > HOG_LIMIT_MIB * 1024 // 2
    assert ev["policy"] is None  # this kernel has no policy hook: no policy_name= in the report
    assert ev["timestamp"] >= killed["start"] - 1


def test_events_from_the_kernel_log_alone_name_the_killed_process(killed):
    ev = the_event(events.collect(sources=("kmsg",))["events"], killed)
    assert ev["sources"] == ["kmsg"] and ev["comm"] == killed["comm"]


def run_events_info(tmp_path, args, check=False):
    """events_info through ansible-playbook on localhost; returns the registered result."""
    return run_task(tmp_path, {"ebpf.oom.events_info": args}, check=check)


def metric_samples(text):
    return dict(((s.name, tuple(sorted(s.labels.items()))), s.value)
                for family in text_string_to_metric_families(text) for s in family.samples)


def test_events_info_module_returns_the_killed_process_and_counts_it_in_metrics(killed, tmp_path):
    prom = tmp_path / "ebpf_oom.prom"
    r = run_events_info(tmp_path, {"since": str(killed["start"] - 1), "metrics_file": str(prom)})
    ev = the_event(r["events"], killed)
    assert (ev["comm"], ev["memcg"], ev["constraint"]) == (killed["comm"], killed["memcg"], "memcg")
    assert ev["sources"] == ["kmsg", "observer"]
    assert r["observer"]["loaded"] and r["observer"]["kills"] >= 1
    assert r["changed"] and r["metrics_file"] == str(prom)
    assert oct(prom.stat().st_mode & 0o777) == "0o644"
    samples = metric_samples(prom.read_text())
    labels = (("cgroup", killed["memcg"]), ("policy", "unknown"), ("rule", "unknown"))
    assert samples[("ebpf_oom_kills_total", labels)] == 1
    assert samples[("ebpf_oom_observer_kills_total", ())] == r["observer"]["kills"]
    assert samples[("ebpf_oom_observer_loaded", ())] == 1


def test_events_info_filters_out_kills_before_since_and_of_other_policies(killed, tmp_path):
    r = run_events_info(tmp_path, {"since": "%.3f" % (time.time() + 3600)})
    assert r["events"] == [] and not r["changed"]
    r = run_events_info(tmp_path, {"since": str(killed["start"] - 1), "policy": ["protect_db"]})
    assert r["events"] == []


def test_events_info_check_mode_writes_no_metrics(observer, tmp_path):
    prom = tmp_path / "ebpf_oom.prom"
    r = run_events_info(tmp_path, {"metrics_file": str(prom)}, check=True)
    assert r["changed"] and not prom.exists()
    assert "ebpf_oom_observer_loaded 1" in r["diff"]["after"]


def test_metrics_command_writes_the_file_the_timer_expects(killed, tmp_path):
    """What the role's timer runs: the host command (the engine installed beside it as the
    package ebpf_oom_engine, as the role installs it) with --metrics-file."""
    prom = tmp_path / "out" / "ebpf_oom.prom"
    prom.parent.mkdir()
    command = tmp_path / "ebpf-oom"
    shutil.copy(os.path.join(REPO, "roles", "bpf_oom", "files", "ebpf-oom"), str(command))
    os.symlink(os.path.join(REPO, "plugins", "module_utils"), str(tmp_path / "ebpf_oom_engine"))
    proc = subprocess.run([sys.executable, str(command), "events", "--metrics-file", str(prom)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    samples = metric_samples(prom.read_text())
    labels = (("cgroup", killed["memcg"]), ("policy", "unknown"), ("rule", "unknown"))
    assert samples[("ebpf_oom_kills_total", labels)] == 1
    assert sorted(os.listdir(str(prom.parent))) == ["ebpf_oom.prom"]


@pytest.fixture(scope="module")
def builds():
    """{variant: object path} of bpf/observer.bpf.c, compiled by the engine against this kernel."""
    src = os.path.join(REPO, "bpf", obs.OBSERVER_SOURCE)
    return dict((label, compiler.compile_object(src=src, defines=defines)["object"])
                for label, defines in obs.OBSERVER_VARIANTS)


def test_raw_tp_fallback_build_records_the_killed_process(killed, builds, tmp_path):
    """The fallback replaces the tp_btf build in place and sees the next kill the same way;
    the build that runs is tried first, so offering both changes nothing."""
    result = run_task(tmp_path, {"ebpf.oom.observer": {"objects": [builds["raw_tp"]]}})
    assert result["action"] == "replaced"
    [prog] = result["record"]["programs"]
    assert prog["section"] == "raw_tp/mark_victim"
    both = run_task(tmp_path, {"ebpf.oom.observer": {"objects": [builds["tp_btf"], builds["raw_tp"]]}})
    assert (both["changed"], both["object"]) == (False, builds["raw_tp"])
    hog = oom_kill_hog("ebpfoom_raw%s" % uuid.uuid4().hex[:4], adj=300)
    [victim] = [v for v in obs.read_observer()["events"] if v["pid"] == hog["pid"]]
    assert victim["comm"] == hog["comm"]
    assert (victim["memcg_id"], victim["oom_score_adj"]) == (hog["memcg_id"], 300)


def test_observer_falls_back_when_a_build_does_not_load(observer, builds, tmp_path):
    broken = tmp_path / "broken.bpf.o"
    broken.write_bytes(b"\x7fELF not really")
    result = run_task(tmp_path, {"ebpf.oom.observer": {"objects": [str(broken), builds["tp_btf"]]}})
    assert result["object"] == builds["tp_btf"]
    [prog] = result["record"]["programs"]
    assert prog["section"] == "tp_btf/mark_victim"
