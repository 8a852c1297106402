"""OOM kill reporting in guests: a real memcg OOM (cgroup v2) under a named policy on the
hook kernel, and under the stock Debian kernel (no hook; its mark_victim tracepoint passes
the pid only), reported by ebpf.oom.events_info run through ansible-playbook, with the
metrics file parsed back by prometheus_client.

Objects are compiled here against the collection's bundled vmlinux.h (CO-RE) and copied
in; the policy and the observer are loaded with ebpf.oom.policy and removed at the end.
"""

import importlib.util
import json
import os
import uuid

from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.ebpf.oom.plugins.module_utils import common, compiler, events

from vmharness import run_playbook

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POLICY = "vm_obs_named"
METRICS = "/root/ebpf_oom.prom"

# The hog runner shared with the host tests.
_spec = importlib.util.spec_from_file_location("ebpf_oom_test_events_host",
                                               os.path.join(REPO, "tests", "host", "test_events.py"))
_host = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_host)
OOM_CHILD, HOG_LIMIT_MIB, HOG_TIMEOUT_S = _host.OOM_CHILD, _host.HOG_LIMIT_MIB, _host.HOG_TIMEOUT_S

# Names itself in the OOM report and has no opinion on any task (the kernel's heuristic
# chooses): the example program of the policy name alone.
NAMED_POLICY = os.path.join(REPO, "bpf", "examples", "policy_name.bpf.c")


def bundled_headers():
    directory = os.path.join(REPO, "bpf", "include")
    return dict((name, open(os.path.join(directory, name)).read())
                for name in os.listdir(directory) if name.endswith(".h"))


def build(**kwargs):
    return compiler.compile_object(vmlinux="bundled", bundled_headers=bundled_headers(), **kwargs)["object"]


def playbook(tmp_path, guest, tasks, name):
    """Run `tasks` on the guest; returns {register name: result} of the registered tasks."""
    results = tmp_path / ("%s.json" % name)
    registered = [t["register"] for t in tasks if "register" in t]
    collect = {"ansible.builtin.copy": {
        "content": "{{ {%s} | to_json }}" % ", ".join("'%s': %s" % (r, r) for r in registered),
        "dest": str(results), "mode": "0600"}, "delegate_to": "localhost"}
    play = [{"hosts": "all", "gather_facts": False, "tasks": tasks + ([collect] if registered else [])}]
    path = tmp_path / ("%s.yml" % name)
    path.write_text(json.dumps(play))
    run_playbook(path, guest.inventory(tmp_path))
    return json.loads(results.read_text()) if registered else {}


def deploy(tmp_path, guest, policies):
    """Copy the objects in and load them: policies = {name: (local object, globals)}."""
    tasks = []
    for name, (obj, values) in policies.items():
        remote = "/root/%s.bpf.o" % name
        guest.put(obj, remote)
        tasks.append({"ebpf.oom.policy": {"name": name, "object": remote, "globals": values,
                                          "persist": False}})
    playbook(tmp_path, guest, tasks, "deploy")


def remove(tmp_path, guest, names):
    """Unload the policies; remove the metrics file and the metrics counting state."""
    tasks = [{"ebpf.oom.policy": {"name": name, "state": "absent"}} for name in names]
    tasks += [{"ansible.builtin.file": {"path": path, "state": "absent"}}
              for path in (METRICS, os.path.join(common.STATE_DIR, events.METRICS_STATE))]
    playbook(tmp_path, guest, tasks, "remove")


def oom_kill_hog(guest, comm):
    """A real memcg OOM in the guest (cgroup v2); the hog's pid, memcg and exit status."""
    name = "ebpf_oom_test_%s" % uuid.uuid4().hex[:8]
    done = guest.ssh(["python3", "-", name, comm, "0", str(HOG_LIMIT_MIB), str(HOG_TIMEOUT_S)],
                     input=OOM_CHILD, timeout=HOG_TIMEOUT_S + 60)
    hog = json.loads(done.stdout)
    assert hog["returncode"] == -9, "the hog was not OOM-killed: %r" % hog
    hog["comm"] = comm
    return hog


def events_info(tmp_path, guest, since):
    """events_info with the metrics file, and with the observer alone; the metrics samples."""
    tasks = [{"ebpf.oom.events_info": {"since": str(since), "metrics_file": METRICS}, "register": "oom"},
             {"ebpf.oom.events_info": {"since": str(since), "sources": ["observer"]}, "register": "observed"},
             {"ansible.builtin.fetch": {"src": METRICS, "dest": str(tmp_path / "metrics") + "/", "flat": True}}]
    results = playbook(tmp_path, guest, tasks, "events")
    text = (tmp_path / "metrics" / "ebpf_oom.prom").read_text()
    samples = dict(((s.name, tuple(sorted(s.labels.items()))), s.value)
                   for family in text_string_to_metric_families(text) for s in family.samples)
    return results["oom"], results["observed"], samples


def the_event(found, hog):
    matches = [e for e in found if e["pid"] == hog["pid"]]
    assert len(matches) == 1, found
    return matches[0]


def guest_since(guest):
    """The guest's clock now (its clock, not ours, filters its events)."""
    return float(guest.ssh(["date", "+%s.%N"]).stdout.strip()) - 1


def test_events_info_names_the_policy_that_chose_the_victim_on_the_hook_kernel(hook_vm, tmp_path):
    observer = build(src=os.path.join(REPO, "bpf", events.OBSERVER_SOURCE))
    policy = build(src=NAMED_POLICY, policy_name=POLICY)
    deploy(tmp_path, hook_vm, {events.OBSERVER_NAME: (observer, {}),
                               POLICY: (policy, {"policy_name": POLICY})})
    try:
        since = guest_since(hook_vm)
        hog = oom_kill_hog(hook_vm, "ebpfoom_vm%s" % uuid.uuid4().hex[:4])
        result, observed, samples = events_info(tmp_path, hook_vm, since)
    finally:
        remove(tmp_path, hook_vm, [POLICY, events.OBSERVER_NAME])
    ev = the_event(result["events"], hog)
    assert (ev["comm"], ev["policy"]) == (hog["comm"], POLICY)
    assert (ev["memcg"], ev["oom_memcg"], ev["constraint"]) == (hog["memcg"], hog["memcg"], "memcg")
    assert ev["sources"] == ["kmsg", "observer"] and ev["memcg_id"] == hog["memcg_id"]
    assert samples[("ebpf_oom_kills_total", (("cgroup", hog["memcg"]), ("policy", POLICY)))] == 1
    assert samples[("ebpf_oom_observer_kills_total", ())] == result["observer"]["kills"] >= 1
    alone = the_event(observed["events"], hog)
    assert (alone["comm"], alone["memcg_id"], alone["policy"]) == (hog["comm"], hog["memcg_id"], None)


def test_observer_on_the_stock_kernel_records_the_victim_pid(stock_vm, tmp_path):
    """No hook, Debian's 6.1 kernel (the task-passing mark_victim backported, RSS counters
    still atomics in struct mm_rss_stat): the observer loads, records the victim on its
    own, and the kernel log adds the cgroup path; there is no policy name."""
    observer = build(src=os.path.join(REPO, "bpf", events.OBSERVER_SOURCE))
    deploy(tmp_path, stock_vm, {events.OBSERVER_NAME: (observer, {})})
    try:
        since = guest_since(stock_vm)
        hog = oom_kill_hog(stock_vm, "ebpfoom_st%s" % uuid.uuid4().hex[:4])
        result, observed, samples = events_info(tmp_path, stock_vm, since)
    finally:
        remove(tmp_path, stock_vm, [events.OBSERVER_NAME])
    ev = the_event(result["events"], hog)
    assert ev["sources"] == ["kmsg", "observer"]
    assert (ev["comm"], ev["memcg"], ev["policy"]) == (hog["comm"], hog["memcg"], None)
    assert result["observer"]["kills"] >= 1
    assert samples[("ebpf_oom_kills_total", (("cgroup", hog["memcg"]), ("policy", "unknown")))] == 1
    alone = the_event(observed["events"], hog)
    assert (alone["comm"], alone["memcg_id"]) == (hog["comm"], hog["memcg_id"])
    assert alone["anon_rss_kb"] > HOG_LIMIT_MIB * 1024 // 2
