"""When the role ebpf.oom.bpf_oom runs the score_adj agent: its fact __bpf_oom_agent (set in
tasks/main.yml from what ebpf.oom.kernel_info reported and the role's variables) is true
exactly where a score_adj policy is loaded after the run. The expression is the role's own,
read from the task file and templated by Ansible. (tests/vm/test_role_score_adj.py runs the
role: the agent runs, then goes with the last policy.)"""

import os

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from conftest import REPO

try:  # ansible-core 2.19 templates only what is trusted as a template
    from ansible.template import trust_as_template
except ImportError:  # earlier ansible-core: every string is a template
    def trust_as_template(value):
        return value

MAIN = os.path.join(REPO, "roles", "bpf_oom", "tasks", "main.yml")
HOOK = ["evaluate_task", "score_adj"]  # what a kernel with the hook offers, the best first
STOCK = ["score_adj"]


def the_fact_task():
    with open(MAIN) as handle:
        tasks = yaml.safe_load(handle)
    [task] = [t for t in tasks if "__bpf_oom_agent" in t.get("ansible.builtin.set_fact", {})]
    return task


def agent(backends, listed, loaded, backend="auto", purge=True):
    """__bpf_oom_agent on a host whose kernel offers `backends`, with the policies `listed`
    (bpf_oom_policies) and those `loaded` now (kernel_info's records)."""
    task = the_fact_task()
    variables = dict((name, trust_as_template(value)) for name, value in task["vars"].items())
    variables.update(bpf_oom_backend=backend, bpf_oom_purge=purge, bpf_oom_policies=listed,
                     __bpf_oom_kernel={"backend": backends[0] if backends else "none",
                                       "backends": backends, "policies": loaded})
    templar = Templar(loader=DataLoader(), variables=variables)
    found = templar.template(trust_as_template(task["ansible.builtin.set_fact"]["__bpf_oom_agent"]))
    assert isinstance(found, bool), found
    return found


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
    pytest.param(STOCK, [dict(name="c", src="c.bpf.c")], [], {}, False,
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
