"""The one policy-name rule (plugins/module_utils/names.py) and the places that state it
again in their own language: the schema's pattern and the bpf_oom role's check."""

import json
import os
import re

import pytest
import yaml

from ansible_collections.ebpf.oom.plugins.module_utils import language
from ansible_collections.ebpf.oom.plugins.module_utils.errors import CompileError, LoaderError
from ansible_collections.ebpf.oom.plugins.module_utils.names import (NAME_CHARS, POLICY_NAME_MAX,
                                                                     check_name, name_problem)
from conftest import REPO

GOOD = ["a", "protect_db", "web-tier", "A1_b-2", "x" * POLICY_NAME_MAX]
BAD = ["", None, 5, "has.dot", "..", "a/b", "sp ace", "tab\t", "star*", "abc\n", "\nabc",
       "x" * (POLICY_NAME_MAX + 1), "\u00e9" * 8]


@pytest.mark.parametrize("name", GOOD)
def test_check_name_accepts_bpffs_safe_names(name):
    assert check_name(name) == name and name_problem(name) is None


def test_check_name_refuses_name_longer_than_kernel_buffer():
    with pytest.raises(ValueError, match="16 bytes long; the kernel keeps at most 15"):
        check_name("x" * (POLICY_NAME_MAX + 1))


def test_check_name_counts_bytes_not_characters():
    # 8 characters, 16 bytes in UTF-8
    with pytest.raises(ValueError, match="16 bytes long"):
        check_name("\u00e9" * 8)


@pytest.mark.parametrize("name", ["has.dot", "..", "a/b", "sp ace", "tab\t", "star*", "abc\n"])
def test_check_name_refuses_characters_bpffs_or_paths_cannot_take(name):
    with pytest.raises(ValueError, match="may only hold"):
        check_name(name)


@pytest.mark.parametrize("name", ["", None, 5])
def test_check_name_refuses_empty_or_non_string(name):
    with pytest.raises(ValueError, match="non-empty string"):
        check_name(name)


@pytest.mark.parametrize("error", [LoaderError, CompileError])
def test_check_name_raises_the_callers_error(error):
    with pytest.raises(error, match="may only hold"):
        check_name("a.b", error)


def schema_pattern():
    with open(os.path.join(REPO, "schemas", "policy.schema.json")) as f:
        return json.load(f)["properties"]["name"]["pattern"]


def role_pattern():
    """The regex of the bpf_oom role's name check (`item.name is regex('...', ...)`)."""
    with open(os.path.join(REPO, "roles", "bpf_oom", "tasks", "main.yml")) as f:
        tasks = yaml.safe_load(f)
    that = [t for t in tasks if t["name"] == "Check the policy entries"][0]["ansible.builtin.assert"]["that"]
    [found] = [m for m in (re.match(r"item\.name is regex\('([^']*)', match_type='fullmatch'\)$", c)
                           for c in that) if m]
    return found.group(1)


def test_schema_and_role_state_the_same_rule():
    rule = "%s{1,%d}" % (NAME_CHARS, POLICY_NAME_MAX)
    assert schema_pattern() == "^%s$" % rule
    assert role_pattern() == rule


@pytest.mark.parametrize("name", GOOD + BAD)
def test_role_pattern_decides_as_the_rule_does(name):
    role = isinstance(name, str) and re.fullmatch(role_pattern(), name) is not None
    assert role == (name_problem(name) is None)


@pytest.mark.parametrize("name", GOOD + BAD)
def test_renderer_refuses_exactly_the_names_the_rule_refuses(name):
    errors = language.check({"name": name, "rules": []})
    assert bool(errors) == (name_problem(name) is not None)
