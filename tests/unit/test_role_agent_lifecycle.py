"""When the state module ebpf.oom.host (which the role ebpf.oom.bpf_oom runs) keeps the
score_adj agent running: converge.agent_wanted() is true exactly where a score_adj policy is
loaded after the run, with the backend converge.choose_backend() takes from what the kernel
offers. (tests/vm/test_role_score_adj.py runs the role: the agent runs, then goes with the
last policy.)"""

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import converge

HOOK = ["evaluate_task", "score_adj"]  # what a kernel with the hook offers, the best first
STOCK = ["score_adj"]


def agent(backends, listed, loaded, backend="auto", purge=True):
    """Whether the agent runs on a host whose kernel offers `backends`, with the policies
    `listed` (the module's policies) and those `loaded` now (kernel_info's records)."""
    info = {"backend": backends[0] if backends else "none", "backends": backends, "reasons": []}
    chosen, _reasons = converge.choose_backend(backend, info)
    return converge.agent_wanted(chosen, listed, loaded, purge)


def document(name, **extra):
    return dict(name=name, policy={"name": name, "rules": []}, **extra)


def record(name, backend=None):
    return dict(name=name, backend=backend) if backend else dict(name=name)


@pytest.mark.parametrize("backends, listed, loaded, options, runs", [
    pytest.param(STOCK, [document("a")], [], {}, True,
                 id="a document applied with score_adj"),
    pytest.param(HOOK, [document("a")], [], {"backend": "score_adj"}, True,
                 id="a document applied with score_adj asked for on a hook kernel"),
    pytest.param(STOCK, [], [], {}, False,
                 id="no policy"),
    pytest.param(STOCK, [dict(name="c", object="/c.bpf.o")], [], {}, False,
                 id="only a C policy"),
    pytest.param(STOCK, [document("a", state="absent")], [record("a", "score_adj")], {"purge": False}, False,
                 id="the last score_adj policy removed"),
    pytest.param(STOCK, [], [record("a", "score_adj"), record("observer")], {}, False,
                 id="no policy listed, purged"),
    pytest.param(HOOK, [document("a")], [record("a", "score_adj")], {}, False,
                 id="the host on the hook kernel: its document applied with the hook"),
    pytest.param(HOOK, [document("a")], [record("a", "score_adj")], {"purge": False}, False,
                 id="the host on the hook kernel without purge"),
    pytest.param(HOOK, [], [record("b", "score_adj"), dict(name="c", problem="no record")], {"purge": False}, True,
                 id="a score_adj policy neither listed nor purged"),
    pytest.param(HOOK, [document("a")], [record("b", "evaluate_task")], {"purge": False}, False,
                 id="a hook policy neither listed nor purged"),
    pytest.param(STOCK, [document("b")], [record("b", "score_adj")], {"backend": "evaluate_task"}, True,
                 id="a host whose policies are skipped keeps its score_adj policy"),
    pytest.param(STOCK, [document("b")], [], {"backend": "evaluate_task"}, False,
                 id="a host whose policies are skipped, with none loaded"),
])
def test_the_agent_runs_where_a_score_adj_policy_is_loaded_after_the_run(
        backends, listed, loaded, options, runs):
    assert agent(backends, listed, loaded, **options) is runs
