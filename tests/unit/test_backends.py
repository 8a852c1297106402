"""The backend registry is the only source of backend names and choices, and the
one-decider rule is one function (pure logic here; tests/host/test_score_adj_agent.py
runs it against real pins, with the bpffs lock held)."""

import os
import re

import pytest
import yaml

from ansible_collections.ebpf.oom.plugins.module_utils import backends
from ansible_collections.ebpf.oom.plugins.module_utils.common import HOOK_FUNC
from ansible_collections.ebpf.oom.plugins.module_utils.errors import LoaderError
from ansible_collections.ebpf.oom.plugins.modules import explain as explain_module
from ansible_collections.ebpf.oom.plugins.modules import policy as policy_module
from conftest import REPO


def test_the_choices_are_auto_then_the_registry_best_first():
    assert backends.CHOICES == ("auto", "evaluate_task", "score_adj")
    assert [b.name for b in backends.REGISTRY] == list(backends.ORDER) == list(backends.CHOICES[1:])


@pytest.mark.parametrize("module", [policy_module, explain_module])
def test_the_modules_take_their_choices_from_the_registry(module):
    assert module.ARGUMENT_SPEC["backend"]["choices"] == list(backends.CHOICES)
    documented = yaml.safe_load(module.DOCUMENTATION)["options"]["backend"]
    assert documented["choices"] == list(backends.CHOICES)
    assert documented["default"] == backends.AUTO


def test_the_roles_choices_are_the_registrys():
    with open(os.path.join(REPO, "roles", "bpf_oom", "meta", "argument_specs.yml")) as f:
        spec = yaml.safe_load(f)["argument_specs"]["main"]["options"]["bpf_oom_backend"]
    assert spec["choices"] == list(backends.CHOICES)


def test_no_engine_file_but_the_backends_names_a_backend():
    """Outside backends.py a backend is named by its class, or by scoreadj.BACKEND (the
    ledger's records, below the backends' layer)."""
    engine = os.path.join(REPO, "plugins", "module_utils")
    for name in sorted(os.listdir(engine)):
        if not name.endswith(".py") or name in ("backends.py", "scoreadj.py"):
            continue
        with open(os.path.join(engine, name)) as f:
            found = re.findall(r"[\"'](evaluate_task|score_adj)[\"']", f.read())
        assert found == [], name


@pytest.mark.parametrize("record,decides", [
    ({"document": {"name": "a"}, "backend": "score_adj", "programs": []}, True),
    ({"document": {"name": "a"}, "programs": [{"target": HOOK_FUNC}]}, True),
    ({"document": None, "programs": [{"target": HOOK_FUNC}]}, True),
    ({"document": None, "programs": [{"target": "mark_victim"}]}, False),   # the observer
    ({"programs": []}, False),
])
def test_which_records_decide_ooms(record, decides):
    assert backends.decides(record) is decides


def test_a_record_names_its_backend_or_is_a_c_policy():
    assert backends.of_record({"document": None}) is None
    assert backends.of_record({"document": {}}) is backends.BACKENDS["evaluate_task"]  # before the choice
    assert backends.of_record({"document": {}, "backend": "score_adj"}) is backends.BACKENDS["score_adj"]
    with pytest.raises(LoaderError, match=r"backend 'struct_ops', which this version .* does not know"):
        backends.of_record({"name": "x", "document": {}, "backend": "struct_ops"})


def test_an_unknown_backend_is_refused_naming_the_choices():
    with pytest.raises(LoaderError, match=r"backend 'nope': unknown; one of auto, evaluate_task, score_adj"):
        backends.choose("nope")
