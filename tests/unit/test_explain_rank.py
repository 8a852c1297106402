"""explain.rank(): the imagined OOM's victim and order from the iterator's records, as the
kernel's scan with the generic program would decide (pure logic; the host and VM tests
run the iterator and compare with real OOMs)."""

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import abi, explain
from ansible_collections.ebpf.oom.plugins.modules.explain import memcg_of

PROTECT, PREFER, SELECT, ABORT, KERNEL = (abi.EBPF_OOM_ACT_PROTECT, abi.EBPF_OOM_ACT_PREFER,
                                          abi.EBPF_OOM_ACT_SELECT, abi.EBPF_OOM_ACT_ABORT,
                                          abi.EBPF_OOM_ACT_KERNEL)


def rec(pid, points, action=KERNEL, tier=0, by=abi.EBPF_OOM_BY_BADNESS, rss=None, flags=0, rule=-1):
    t = abi.Task(pid=pid, points=points, action=action, tier=tier, by=by, rule=rule, flags=flags)
    t.rss = points if rss is None else rss
    return t


def config(scope=abi.EBPF_OOM_SCOPE_GLOBAL | abi.EBPF_OOM_SCOPE_MEMCG):
    return abi.Config(scope=scope)


class Global(object):
    path = None
    kind = "global"


class Memcg(object):
    path = "/m"
    kind = "memcg"


def order(result):
    return [t.pid for t in result["order"]]


def test_ranked_tasks_die_first_by_tier_then_points_then_the_kernels_choice():
    tasks = [rec(1, 900), rec(2, 100, PREFER, tier=2), rec(3, 50, PREFER, tier=1),
             rec(4, 80, PREFER, tier=1), rec(5, 10, SELECT), rec(6, 5000, PROTECT), rec(7, 400)]
    result = rank(tasks)
    assert order(result) == [5, 4, 3, 2, 1, 7]
    assert result["kernel_victim"].pid == 6
    assert (result["protected"], result["unranked"]) == (1, 2)


def test_by_rss_ranks_a_tier_by_resident_pages():
    tasks = [rec(1, 100, PREFER, tier=1, by=abi.EBPF_OOM_BY_RSS, rss=10),
             rec(2, 50, PREFER, tier=1, by=abi.EBPF_OOM_BY_RSS, rss=20)]
    assert order(rank(tasks)) == [2, 1]


def test_unkillable_tasks_never_die():
    tasks = [rec(1, explain.POINTS_MIN, SELECT), rec(2, 10)]
    result = rank(tasks)
    assert order(result) == [2] and result["unkillable"] == 1


def test_a_memcg_oom_only_counts_tasks_in_the_memory_cgroup():
    inside = abi.EBPF_OOM_T_IN_MEMCG
    tasks = [rec(1, 900), rec(2, 10, flags=inside), rec(3, 20, flags=inside)]
    result = rank(tasks, imagined=Memcg())
    assert order(result) == [3, 2] and result["candidates"] == 2


def test_a_policy_outside_its_scope_leaves_the_kernels_choice():
    tasks = [rec(1, 900), rec(2, 10, SELECT)]
    result = rank(tasks, cfg=config(abi.EBPF_OOM_SCOPE_MEMCG))
    assert not result["acts"] and order(result) == [1, 2]


def test_every_task_protected_in_a_global_oom_is_the_safety_nets_choice():
    result = rank([rec(1, 10, PROTECT), rec(2, 30, PROTECT)])
    assert result["safety_net"] and order(result) == [2, 1]


def test_every_task_protected_in_a_memcg_oom_kills_nobody():
    inside = abi.EBPF_OOM_T_IN_MEMCG
    result = rank([rec(1, 10, PROTECT, flags=inside)], imagined=Memcg())
    assert order(result) == [] and not result["safety_net"]


def test_abort_and_an_exiting_victim_are_reported():
    result = rank([rec(1, 10, ABORT), rec(2, 20, flags=abi.EBPF_OOM_T_VICTIM)])
    assert [t.pid for t in result["aborted_by"]] == [1]
    assert [t.pid for t in result["waits_for"]] == [2]


def rank(tasks, cfg=None, imagined=None):
    return explain.rank(tasks, cfg or config(), imagined or Global())


@pytest.mark.parametrize("oom,memcg", [("global", None), (None, None), ({"memcg": "/a"}, "/a")])
def test_the_oom_option_names_a_global_or_a_memcg_oom(oom, memcg):
    assert memcg_of(oom) == memcg


@pytest.mark.parametrize("oom", ["memcg", {"memcg": 3}, {"cgroup": "/a"}, 7])
def test_other_oom_options_are_refused(oom):
    with pytest.raises(ValueError, match="oom must be 'global' or"):
        memcg_of(oom)


# ---------------------------------------------------------------- score_adj: the kernel, steered

class Steered(object):
    path = "/m"
    kind = "memcg"
    totalpages = 25600  # a 100 MiB memory.max: a value of 1000 adds 25600 pages


def task_of(pid, rss, adj=0, action=KERNEL, rule=-1, flags=abi.EBPF_OOM_T_IN_MEMCG):
    t = rec(pid, rss + adj * (Steered.totalpages // 1000), action=action, rss=rss, flags=flags, rule=rule)
    t.oom_score_adj = adj
    return t


def test_steered_ranks_by_the_badness_the_kernel_computes_with_the_values():
    """Tier 1 (+1000) holds 10 MiB, tier 2 (+500) 70 MiB: the hook kills tier 1 first, the
    kernel steered by those values kills the tier 2 process (17920 + 12800 > 2560 + 25600)."""
    tasks = [task_of(1, 2560, 1000, PREFER, rule=0), task_of(2, 17920, 500, PREFER, rule=1),
             task_of(3, 5000, -1000, PROTECT, rule=2), task_of(4, 7680)]
    tasks[0].tier, tasks[1].tier = 1, 2
    assert order(rank(tasks)) == [1, 2, 4]                                  # the hook's order
    result = explain.steered(tasks, Steered, lambda t: t.oom_score_adj)
    assert order(result) == [2, 1, 4]
    assert result["steered"][2] == (500, 17920 + 500 * 25)
    assert result["steered"][3] == (-1000, explain.POINTS_MIN) and result["unkillable"] == 1


def test_a_preview_gives_each_rule_its_band_and_leaves_the_others_their_value():
    tasks = [task_of(1, 1000, 0, PREFER, rule=0), task_of(2, 9000, 0), task_of(3, 500, 300)]
    bands = {0: 1000}
    result = explain.steered(tasks, Steered, lambda t: bands.get(t.rule, t.oom_score_adj))
    assert order(result) == [1, 2, 3]
    assert [result["steered"][pid][0] for pid in (1, 2, 3)] == [1000, 0, 300]


def test_steered_never_counts_a_reaped_or_vfork_task_or_one_outside_the_memcg():
    tasks = [task_of(1, 9000, flags=abi.EBPF_OOM_T_IN_MEMCG | abi.EBPF_OOM_T_REAPED),
             task_of(2, 9000, flags=abi.EBPF_OOM_T_IN_MEMCG | abi.EBPF_OOM_T_VFORK),
             task_of(3, 9000, flags=0), task_of(4, 10)]
    result = explain.steered(tasks, Steered, lambda t: t.oom_score_adj)
    assert order(result) == [4] and result["candidates"] == 3
