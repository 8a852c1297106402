"""Declarative policies decide real OOMs: every action and match kind, in a hook-kernel guest.

Each test starts tasks in a memory cgroup of the shared guest (tests/vm/policy_lab.py
does the guest side: cgroups, tasks, the engine's loader, the kernel log), applies
policy documents with the generic program, fills the cgroup until it runs out of
memory, and checks which task the kernel killed and that the OOM report names the
document. Sizes: the tasks hold ~250 MiB of a 300 MiB cgroup, so the trigger is still
small when the OOM comes and finishes once the victim's memory is freed.
"""

import json
import os

import pytest

from ansible_collections.ebpf.oom.plugins.action.policy import compile_generic
from vmharness import REPO

LAB_DIR = "/root/lang"
LIMIT = 300  # MiB, the scenario cgroup's memory.max
ENGINE = os.path.join(REPO, "plugins", "module_utils")


@pytest.fixture(scope="module")
def lab(hook_vm, tmp_path_factory):
    """The guest with the engine, the generic program and the lab script; run(spec) -> result."""
    obj = compile_generic(cache_dir=str(tmp_path_factory.mktemp("objects")))
    package = LAB_DIR + "/engine/ebpf_oom_engine"
    hook_vm.ssh(["mkdir", "-p", package])
    for name in sorted(os.listdir(ENGINE)):
        if name.endswith(".py"):
            hook_vm.put(os.path.join(ENGINE, name), package + "/" + name)
    hook_vm.ssh(["touch", package + "/__init__.py"])
    hook_vm.put(os.path.join(REPO, "tests", "vm", "policy_lab.py"), LAB_DIR + "/policy_lab.py")
    hook_vm.put(obj, LAB_DIR + "/generic.bpf.o")
    applied = set()

    def run(spec):
        spec = dict(spec, object=LAB_DIR + "/generic.bpf.o")
        applied.update(d["name"] for d in spec.get("policies", []))
        done = hook_vm.ssh(["python3", LAB_DIR + "/policy_lab.py"], input=json.dumps(spec), timeout=1200)
        return json.loads(done.stdout.strip().splitlines()[-1])

    try:
        yield run
    finally:
        if applied:
            hook_vm.ssh(["python3", LAB_DIR + "/policy_lab.py"], input=json.dumps({"remove": sorted(applied)}),
                        check=False)
        hook_vm.ssh(["rm", "-rf", LAB_DIR], check=False)
        hook_vm.ssh(["rmdir", "/sys/fs/cgroup/lang"], check=False)


def task(name, mb, cgroup=None, **extra):
    return dict(name=name, comm="lang-" + name, mb=mb, cgroup=cgroup or name, **extra)


def scenario(name, tasks, policies, victim_mb=0, **extra):
    """A scenario whose trigger runs the cgroup out of memory once and then fits."""
    held = sum(t["mb"] for t in tasks)
    assert held <= LIMIT - 40, "leave room for the trigger to start"
    return dict(scenario=name, limit_mb=LIMIT, tasks=tasks, policies=policies,
                trigger=dict(comm="lang-trigger", cgroup="trigger", mb=LIMIT - held + victim_mb // 2), **extra)


def one_kill(result, victim, policy):
    """The OOM killed exactly `victim`, and its report carries the policy's name."""
    assert result["killed"] == [victim], result
    assert [v[0] for v in result["victims"]] == [result["pids"][victim]], result["log"]
    assert result["policy_names"] == [policy], result["log"]
    assert result["events"]["oom_kill"] == 1
    assert result["trigger"] == "done"
    assert result["state"]["scans"] >= 1 and result["state"]["evaluated"] >= len(result["pids"])


def doc(name, *rules, **top):
    return dict(name=name, rules=list(rules), **top)


# ------------------------------------------------------------------ protect

def test_protect_by_comm_spares_the_task_the_kernel_would_kill(lab):
    result = lab(scenario("protect-comm", [task("big", 150), task("mid", 100)],
                          [doc("lang-protect", {"match": {"comm": "lang-big"}, "action": "protect"})],
                          victim_mb=100))
    one_kill(result, "mid", "lang-protect")


def test_protect_by_uid_spares_the_task_the_kernel_would_kill(lab):
    result = lab(scenario("protect-uid", [task("big", 150, uid=1001), task("mid", 100)],
                          [doc("lang-uid", {"match": {"uid": 1001}, "action": "protect"})], victim_mb=100))
    one_kill(result, "mid", "lang-uid")


def test_without_policy_the_kernel_kills_the_largest_task(lab):
    """The baseline the protect tests depart from: same tasks, no policy."""
    result = lab(scenario("baseline", [task("big", 150), task("mid", 100)], [], victim_mb=150))
    assert result["killed"] == ["big"], result
    assert result["policy_names"] == ["default"], result["log"]


# ------------------------------------------------------------------ select

def test_select_by_pid_kills_that_task_not_the_largest(lab):
    result = lab(scenario("select-pid", [task("big", 150), task("small", 60), task("other", 40)],
                          [doc("lang-select", {"match": {"pid": "$pid:small"}, "action": "select"})], victim_mb=60))
    one_kill(result, "small", "lang-select")


# ------------------------------------------------------------------ prefer

def test_prefer_cgroup_tier_one_dies_first_even_in_a_cgroup_created_later(lab):
    tiers = doc("lang-tiers",
                {"match": {"cgroup": "$root/batch"}, "action": "prefer", "tier": 1},
                {"match": {"cgroup": "$root/web"}, "action": "prefer", "tier": 2})
    result = lab(scenario("prefer-cgroup", [task("web", 70), task("batch", 60, cgroup="batch/job1", late=True),
                                            task("other", 120)], [tiers], victim_mb=60, cgroups=["batch"]))
    assert result["applied"][0]["warnings"] == []  # batch existed, batch/job1 did not yet
    one_kill(result, "batch", "lang-tiers")


def test_prefer_cgroup_next_tier_dies_when_the_first_is_empty(lab):
    tiers = doc("lang-tiers2",
                {"match": {"cgroup": "$root/batch"}, "action": "prefer", "tier": 1},
                {"match": {"cgroup": "$root/web"}, "action": "prefer", "tier": 2})
    result = lab(scenario("prefer-tier2", [task("web", 70), task("other", 180)], [tiers], victim_mb=70))
    one_kill(result, "web", "lang-tiers2")


@pytest.mark.parametrize("by,victim", [("rss", "w2"), ("badness", "w1")])
def test_prefer_by_comm_prefix_ranks_a_tier_by_the_flag(lab, by, victim):
    """w2 holds more memory, but oom_score_adj -900 gives it less badness than w1."""
    rule = {"match": {"comm_prefix": "lang-w"}, "action": "prefer", "tier": 1, "by": by}
    result = lab(scenario("prefer-" + by, [task("w1", 90), task("w2", 120, adj=-900), task("other", 40)],
                          [doc("lang-" + by, rule)], victim_mb=90))
    one_kill(result, victim, "lang-" + by)


# ------------------------------------------------------------------ abort

def test_abort_by_comm_kills_nothing_while_the_task_is_there(lab):
    result = lab(scenario("abort-comm", [task("backup", 60), task("big", 150)],
                          [doc("lang-abort", {"match": {"comm": "lang-backup"}, "action": "abort"}, scope="memcg")],
                          expect="no-kill", ooms=3))
    assert result["trigger"] == "aborted"
    assert result["killed"] == [] and result["victims"] == []
    assert result["events"]["oom"] >= 3 and result["events"]["oom_kill"] == 0
    assert result["state"]["scans"] >= 3


# ------------------------------------------------------------------ the user story

def story(root_prefix="$root"):
    return doc("lang-story",
               {"match": {"comm": "postgres"}, "action": "protect"},
               {"match": {"cgroup": root_prefix + "/batch"}, "action": "prefer", "tier": 1},
               {"match": {"cgroup": root_prefix + "/web"}, "action": "prefer", "tier": 2})


def postgres(mb):
    return dict(task("postgres", mb), comm="postgres")


def test_story_kills_batch_first(lab):
    result = lab(scenario("story-batch", [postgres(100), task("batch", 50), task("web", 60), task("other", 40)],
                          [story()], victim_mb=50))
    one_kill(result, "batch", "lang-story")


def test_story_kills_web_when_there_is_no_batch(lab):
    result = lab(scenario("story-web", [postgres(100), task("web", 60), task("other", 90)], [story()], victim_mb=60))
    one_kill(result, "web", "lang-story")


def test_story_leaves_the_rest_to_the_kernel_but_never_postgres(lab):
    result = lab(scenario("story-rest", [postgres(150), task("other", 100)], [story()], victim_mb=100))
    one_kill(result, "other", "lang-story")


# ------------------------------------------------------------------ data-only changes

def test_data_only_change_updates_maps_in_place_and_the_next_oom_follows_it(lab):
    first = doc("lang-data", {"match": {"comm": "lang-a"}, "action": "select"})
    second = doc("lang-data", {"match": {"comm": "lang-b"}, "action": "select"})
    result = lab(scenario("data-change", [task("a", 100), task("b", 100), task("c", 50)], [first, second],
                          victim_mb=100))
    created, updated = result["applied"]
    assert created["action"] == "created"
    assert updated["action"] == "maps_updated"
    assert updated["prog_ids"] == created["prog_ids"] and len(created["prog_ids"]) == 2
    assert [(c["map"], c["key"]) for c in updated["map_changes"]] == [("oom_rules", "00000000")]
    one_kill(result, "b", "lang-data")
