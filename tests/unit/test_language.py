"""The policy language is written once (plugins/module_utils/language.py): the schema file,
the docs' tables and the BPF side are held to its tables, and its interpreter of the
schema's keywords judges documents as a full JSON Schema validator does."""

import copy
import json
import os
import re
import subprocess
import sys

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.ebpf.oom.plugins.module_utils import abi, language
from conftest import COLLECTIONS, REPO
from samples import STORY

SCHEMA_FILE = os.path.join(REPO, "schemas", "policy.schema.json")
BPF = os.path.join(REPO, "bpf")


def read(*parts):
    with open(os.path.join(REPO, *parts)) as f:
        return f.read()


def test_the_schema_file_is_the_language_written_out():
    """Regenerate with: python -m ansible_collections.ebpf.oom.plugins.module_utils.language"""
    with open(SCHEMA_FILE) as f:
        assert json.load(f) == language.SCHEMA
    written = subprocess.run([sys.executable, "-m", "ansible_collections.ebpf.oom.plugins.module_utils.language"],
                             capture_output=True, text=True, check=True,
                             env=dict(os.environ, PYTHONPATH=COLLECTIONS)).stdout
    assert written == read("schemas", "policy.schema.json")


def test_the_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(language.SCHEMA)


@pytest.mark.parametrize("table", [language.key_table, language.action_table])
def test_the_docs_tables_come_from_the_language(table):
    assert table() + "\n" in read("schemas", "README.md")


def test_every_key_is_named_in_the_docs_index():
    index = [line for line in read("docs", "policy-language.md").splitlines() if "which tasks a rule matches" in line]
    assert len(index) == 1
    assert re.findall(r"`(\w+)`", index[0]) == [k.name for k in language.MATCH_KEYS]


def defines(text, prefix):
    return dict((name, int(value)) for name, value in re.findall(r"^#define (%s\w+) (\d+)" % prefix, text, re.M))


def test_every_match_bit_of_generic_h_is_a_key_and_classify_h_tests_it():
    bits = defines(read("bpf", "generic.h"), "EBPF_OOM_M_")
    assert sorted(set(bits.values())) == sorted(set(k.flag for k in language.MATCH_KEYS))
    classify = read("bpf", "classify.h")
    for name in bits:
        assert re.search(r"\(m & %s\)" % name, classify), "classify.h never matches %s" % name


def test_every_action_of_generic_h_is_in_the_table_with_its_number():
    acts = defines(read("bpf", "generic.h"), "EBPF_OOM_ACT_")
    assert acts == dict(("EBPF_OOM_ACT_" + a.name.upper(), a.number) for a in language.ACTIONS)


def test_every_key_has_an_encoder():
    from ansible_collections.ebpf.oom.plugins.module_utils import renderer
    assert set(k.encoding for k in language.MATCH_KEYS) <= set(renderer.ENCODERS)


# ---------------------------------------------------------------- the interpreter

REFERENCE = jsonschema.Draft202012Validator(language.SCHEMA)


def trailing_newline(value):
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return any(trailing_newline(v) for v in value)
    return isinstance(value, str) and value.endswith("\n")


def reference_valid(document):
    return not list(REFERENCE.iter_errors(document))


def json_values():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 1 << 33), st.sampled_from(
        ["", "x", "kernel", "protect", "prefer", "select", "abort", "memcg", "global", "both", "rss", "badness",
         "/", "/batch", "/a/../b", "/a/", "postgres", "a" * 16, "pg web", "job\n"]))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["name", "rules", "scope", "fallback", "match", "action", "tier", "by",
                                         "pid", "comm", "comm_prefix", "cgroup", "uid", "x"]), inner, max_size=4)),
        max_leaves=12)


@st.composite
def mutated(draw):
    """STORY with one to three values replaced, added or removed anywhere."""
    doc = copy.deepcopy(STORY)
    doc["scope"] = draw(st.sampled_from(["both", "memcg", "global"]))
    doc["fallback"] = draw(st.sampled_from(["kernel", "protect", {"action": "prefer", "tier": 9}]))
    for unused in range(draw(st.integers(1, 3))):
        node = doc
        for unused_depth in range(draw(st.integers(0, 3))):
            children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            children = [(k, v) for k, v in children if isinstance(v, (dict, list)) and v]
            if not children:
                break
            node = draw(st.sampled_from(children))[1]
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        what = draw(st.sampled_from(["set", "drop", "add"]))
        if what == "drop" and keys:
            del node[draw(st.sampled_from(keys))]
        elif what == "add" and isinstance(node, dict):
            node[draw(st.sampled_from(["tier", "by", "comm_prefix", "uid", "extra", "action"]))] = draw(json_values())
        elif keys:
            node[draw(st.sampled_from(keys))] = draw(json_values())
    return doc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_the_interpreter_judges_a_document_as_a_full_validator_does(document):
    """Reference: the jsonschema package. Where the language is stricter, the interpreter
    refuses more: a cgroup path of more than 254 bytes (its format), a trailing newline
    (jsonschema matches patterns with Python's `$`, which lets one through)."""
    ours = language.validate(document)
    if reference_valid(document):
        assert all(".cgroup: is longer than" in line for line in ours) or trailing_newline(document), ours
    else:
        assert ours, "jsonschema refuses %r, the interpreter does not" % (document,)


@pytest.mark.parametrize("document,wrong", [
    ({"name": "a", "rules": [], "fallback": "select"}, "fallback"),
    ({"name": "a\n", "rules": []}, "name"),
    ({"name": "a", "rules": [{"match": {"comm": "postgres\n"}, "action": "protect"}]}, "rules[0].match.comm"),
    ({"name": "a", "rules": [{"match": {"pid": 1.0}, "action": "protect"}]}, "rules[0].match.pid"),
    ({"name": "a", "rules": [{"match": {"pid": True}, "action": "protect"}]}, "rules[0].match.pid"),
    ({"name": "a", "rules": [{"match": {"cgroup": "/" + "\u00e9" * 200}, "action": "protect"}]},
     "rules[0].match.cgroup"),
    ({"name": "a", "rules": [{"match": {}, "action": "protect"}]}, "rules[0].match"),
    ({"name": "a", "rules": [{"match": {"pid": 1}, "action": "prefer", "tier": 1, "by": "rss", "x": 1}]},
     "rules[0].x"),
])
def test_the_interpreter_refuses_what_the_language_refuses(document, wrong):
    """Including what jsonschema lets through: an integral float, a boolean as an id, a
    cgroup path of more characters than bytes allowed."""
    errors = language.validate(document)
    assert any(line.startswith(wrong + ": ") for line in errors), errors


def test_a_valid_document_has_no_errors_and_renders():
    from ansible_collections.ebpf.oom.plugins.module_utils import renderer
    assert language.validate(STORY) == [] and language.check(STORY) == []
    assert renderer.render(STORY).name == STORY["name"]


def test_an_integral_float_is_no_integer_here_although_json_schema_says_so():
    document = {"name": "a", "rules": [{"match": {"pid": 1.0}, "action": "protect"}]}
    assert reference_valid(document)
    assert language.validate(document) == ["rules[0].match.pid: must be an integer, not a number"]


def test_abi_names_every_key_flag():
    flags = dict((v, k) for k, v in vars(abi).items() if k.startswith("EBPF_OOM_M_"))
    assert all(k.flag in flags for k in language.MATCH_KEYS)
