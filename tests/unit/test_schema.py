"""The policy schema: valid documents pass, invalid ones fail naming the field and the reason."""

import copy
import os
import re
import subprocess
import sys

import pytest
import yaml

from ansible_collections.ebpf.oom.plugins.module_utils import language, renderer
from ansible_collections.ebpf.oom.plugins.module_utils.errors import RenderError
from ansible_collections.ebpf.oom.plugins.plugin_utils.documents import field_path, validate
from conftest import COLLECTIONS, REPO
from samples import STORY

README = os.path.join(REPO, "schemas", "README.md")


def readme_documents():
    """Every ```yaml block of schemas/README.md that is a policy document."""
    with open(README) as f:
        blocks = re.findall(r"```yaml\n(.*?)```", f.read(), re.S)
    docs = [yaml.safe_load(b) for b in blocks]
    return [d for d in docs if isinstance(d, dict) and "rules" in d]


def with_rule(rule, **top):
    doc = dict(copy.deepcopy(STORY), **top)
    doc["rules"].append(rule)
    return doc


def changed(path, value):
    """STORY with the value at `path` (a list of keys) replaced, or removed when value is DROP."""
    doc = copy.deepcopy(STORY)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is DROP:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


DROP = object()

# (id, document, the exact line expected among the errors)
INVALID = [
    ("not-a-mapping", [STORY], "(document): must be a mapping, not a list"),
    ("name-missing", changed(["name"], DROP), "name: is required"),
    ("name-too-long", changed(["name"], "a" * 16), "name: must be 1 to 15 characters from A-Z a-z 0-9 _ -"),
    ("name-empty", changed(["name"], ""), "name: must be 1 to 15 characters from A-Z a-z 0-9 _ -"),
    ("name-space", changed(["name"], "pg web"), "name: must be 1 to 15 characters from A-Z a-z 0-9 _ -"),
    ("name-dot", changed(["name"], "pg.web"), "name: must be 1 to 15 characters from A-Z a-z 0-9 _ -"),
    # Python's `$` matches before a trailing newline; JSON Schema's (ECMA-262) does not.
    ("name-newline", changed(["name"], "pgweb\n"), "name: must be 1 to 15 characters from A-Z a-z 0-9 _ -"),
    ("unknown-top-field", dict(STORY, rule=[]),
     "rule: unknown field (allowed: description, fallback, mode, name, rules, scope)"),
    ("scope-unknown", changed(["scope"], "container"), "scope: 'container' is not one of global, memcg, both"),
    ("rules-missing", changed(["rules"], DROP), "rules: is required"),
    ("rules-mapping", changed(["rules"], {"comm": "x"}), "rules: must be a list, not a mapping"),
    ("too-many-rules", changed(["rules"], [{"match": {"pid": i + 1}, "action": "protect"} for i in range(65)]),
     "rules: has 65 entries; at most 64"),
    ("match-missing", changed(["rules", 0, "match"], DROP), "rules[0].match: is required"),
    ("action-missing", changed(["rules", 0, "action"], DROP), "rules[0].action: is required"),
    ("action-unknown", changed(["rules", 0, "action"], "kill"),
     "rules[0].action: 'kill' is not one of protect, prefer, select, abort"),
    ("abort-default-scope", with_rule({"match": {"comm": "backup"}, "action": "abort"}),
     "rules[3].action: 'abort' is only allowed with scope memcg"),
    ("abort-global-scope", changed(["rules", 2, "action"], "abort") | {"scope": "global"},
     "rules[2].action: 'abort' is only allowed with scope memcg"),
    ("prefer-without-tier", changed(["rules", 1, "tier"], DROP), "rules[1].tier: is required"),
    ("tier-zero", changed(["rules", 1, "tier"], 0), "rules[1].tier: 0 is below the minimum 1"),
    ("tier-too-high", changed(["rules", 1, "tier"], 1001), "rules[1].tier: 1001 is above the maximum 1000"),
    ("tier-not-integer", changed(["rules", 1, "tier"], "1"), "rules[1].tier: must be an integer, not a string"),
    ("tier-on-protect", changed(["rules", 0, "tier"], 3), "rules[0].tier: is only allowed with action prefer"),
    ("by-on-select", with_rule({"match": {"pid": 7}, "action": "select", "by": "rss"}),
     "rules[3].by: is only allowed with action prefer"),
    ("by-unknown", changed(["rules", 1, "by"], "memory"), "rules[1].by: 'memory' is not one of badness, rss"),
    ("tier-ranked-two-ways", with_rule({"match": {"uid": 33}, "action": "prefer", "tier": 2, "by": "rss"}),
     "rules[3].by: tier 2 is ranked by 'badness' in rules[2]; every rule of a tier must rank the same way"),
    ("rule-unknown-field", changed(["rules", 0, "tiers"], 1),
     "rules[0].tiers: unknown field (allowed: action, by, description, match, tier)"),
    ("match-empty", changed(["rules", 0, "match"], {}),
     "rules[0].match: needs at least one of pid, comm, comm_prefix, cgroup, uid"),
    ("match-unknown-key", changed(["rules", 0, "match"], {"user": "postgres"}),
     "rules[0].match.user: unknown field (allowed: cgroup, comm, comm_prefix, pid, uid)"),
    ("comm-and-prefix", changed(["rules", 0, "match", "comm_prefix"], "post"),
     "rules[0].match: give comm or comm_prefix, not both"),
    ("comm-too-long", changed(["rules", 0, "match", "comm"], "postgres-primary"),
     "rules[0].match.comm: must be 1 to 15 printable ASCII characters (the kernel keeps 15 bytes of a task name)"),
    ("comm-prefix-empty", changed(["rules", 0, "match"], {"comm_prefix": ""}),
     "rules[0].match.comm_prefix: must be 1 to 15 printable ASCII characters (the kernel keeps 15 bytes of a "
     "task name)"),
    ("comm-not-ascii", changed(["rules", 0, "match", "comm"], "postgr\u00e8s"),
     "rules[0].match.comm: must be 1 to 15 printable ASCII characters (the kernel keeps 15 bytes of a task name)"),
    ("pid-zero", changed(["rules", 0, "match"], {"pid": 0}), "rules[0].match.pid: 0 is below the minimum 1"),
    ("pid-too-high", changed(["rules", 0, "match"], {"pid": 4194305}),
     "rules[0].match.pid: 4194305 is above the maximum 4194304"),
    ("pid-string", changed(["rules", 0, "match"], {"pid": "42"}), "rules[0].match.pid: must be an integer, not a string"),
    ("pid-boolean", changed(["rules", 0, "match"], {"pid": True}),
     "rules[0].match.pid: must be an integer, not a boolean"),
    ("uid-negative", changed(["rules", 0, "match"], {"uid": -1}), "rules[0].match.uid: -1 is below the minimum 0"),
] + [
    ("cgroup-" + label, changed(["rules", 1, "match", "cgroup"], path),
     "rules[1].match.cgroup: must be an absolute cgroup path such as /batch or /system.slice/web.service: "
     "at most 16 levels, no trailing '/', no '.' or '..' components")
    for label, path in [("relative", "batch"), ("dotdot", "/batch/../web"), ("dot", "/./batch"),
                        ("trailing-slash", "/batch/"), ("double-slash", "/batch//x"),
                        ("too-deep", "/a" * 17), ("newline", "/batch\nx"), ("empty", "")]
] + [
    ("fallback-unknown", changed(["fallback"], "select"),
     "fallback: must be kernel, protect, or a mapping with action kernel, protect or prefer"),
    ("fallback-prefer-no-tier", changed(["fallback"], {"action": "prefer"}), "fallback.tier: is required"),
    ("fallback-select", changed(["fallback"], {"action": "select"}),
     "fallback.action: 'select' is not one of kernel, protect, prefer"),
    ("fallback-tier-on-protect", changed(["fallback"], {"action": "protect", "tier": 1}),
     "fallback.tier: is only allowed with action prefer"),
    ("fallback-tier-ranked-two-ways", changed(["fallback"], {"action": "prefer", "tier": 1, "by": "rss"}),
     "fallback.by: tier 1 is ranked by 'badness' in rules[1]; every rule of a tier must rank the same way"),
]


def test_story_document_is_valid():
    assert validate(STORY) == []


@pytest.mark.parametrize("document", readme_documents(), ids=lambda d: d["name"])
def test_readme_example_is_valid(document):
    assert validate(document) == []


def test_readme_examples_cover_every_action_and_match():
    docs = readme_documents()
    rules = [r for d in docs for r in d["rules"]]
    assert {r["action"] for r in rules} == {"protect", "prefer", "select", "abort"}
    assert {k for r in rules for k in r["match"]} == {"pid", "comm", "comm_prefix", "cgroup", "uid"}
    assert {"rss", "badness"} <= {r.get("by") for r in rules} | {d.get("fallback", {}).get("by")
                                                                 for d in docs if isinstance(d.get("fallback"), dict)}


def test_invalid_documents_are_distinct_and_enough():
    ids = [case[0] for case in INVALID]
    assert len(set(ids)) == len(ids) >= 20
    bodies = [repr(case[1]) for case in INVALID]
    assert len(set(bodies)) == len(bodies)


@pytest.mark.parametrize("document,expected", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_document_is_rejected_naming_field_and_reason(document, expected):
    errors = validate(document)
    assert expected in errors, errors


@pytest.mark.parametrize("document", [c[1] for c in INVALID], ids=[c[0] for c in INVALID])
def test_every_error_line_starts_with_a_field_path(document):
    for line in validate(document):
        assert re.match(r"^(\(document\)|[a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*): \S", line), line


def test_abort_with_scope_memcg_is_valid():
    assert validate(with_rule({"match": {"comm": "backup"}, "action": "abort"}, scope="memcg")) == []


def test_fallback_forms_are_valid():
    for fallback in ("kernel", "protect", {"action": "kernel"}, {"action": "protect"},
                     {"action": "prefer", "tier": 3}, {"action": "prefer", "tier": 3, "by": "rss"}):
        assert validate(dict(STORY, fallback=fallback)) == [], fallback


def test_field_path_formats_indexes_and_keys():
    assert field_path(["rules", 2, "action"]) == "rules[2].action"
    assert field_path(["rules", 0, "match", "cgroup"]) == "rules[0].match.cgroup"
    assert field_path([]) == "(document)"


PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - ebpf.oom.policy:
        {task}
"""


@pytest.mark.parametrize("task,expected", [
    ("policy: policy.yml", "rules[3].action: 'abort' is only allowed with scope memcg"),
    ("name: pg.web\n        state: absent", "policy name 'pg.web' may only hold letters, digits"),
    ("policy: {name: slices, rules: [{match: {cgroup: /system.slice}, action: protect}, {match: "
     "{cgroup: /user.slice}, action: protect}, {match: {cgroup: /init.scope}, action: protect}]}\n"
     "        strict: true", "policy slices fails lint (strict: true)"),
])
def test_bad_input_fails_the_task_before_any_host_is_contacted(tmp_path, task, expected):
    """The action plugin validates on the controller: the host (unroutable) is never reached."""
    bad = with_rule({"match": {"comm": "backup"}, "action": "abort"})
    (tmp_path / "policy.yml").write_text(yaml.safe_dump(bad))
    (tmp_path / "play.yml").write_text(PLAYBOOK.format(task=task))
    (tmp_path / "inventory.ini").write_text(
        "nowhere ansible_host=127.0.0.1 ansible_port=9 ansible_user=root ansible_timeout=2\n")
    playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    done = subprocess.run([playbook, "-i", "inventory.ini", "play.yml"], cwd=str(tmp_path),
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1",
                                   ANSIBLE_FORCE_COLOR="0", ANSIBLE_HOST_KEY_CHECKING="False"), check=False)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert expected in out
    assert "UNREACHABLE" not in out and "unreachable=0" in out


@pytest.mark.parametrize("document,expected", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_the_host_refuses_every_document_the_controller_refuses(document, expected):
    """language.check is what the host runs (render calls it: the boot restore, a direct
    module call): the document is refused there too, naming the same field."""
    errors = language.check(document)
    field = expected.split(": ", 1)[0]
    assert any(line.startswith(field + ":") for line in errors), errors
    with pytest.raises(RenderError):
        renderer.render(document)


@pytest.mark.parametrize("document", [STORY] + readme_documents() + [
    dict(STORY, fallback=fallback) for fallback in ("kernel", "protect", {"action": "kernel"},
                                                    {"action": "prefer", "tier": 3, "by": "rss"})]
    + [with_rule({"match": {"comm": "backup", "pid": 4194304, "uid": 4294967294}, "action": "abort"},
                 scope="memcg")])
def test_the_host_accepts_every_document_the_controller_accepts(document):
    assert validate(document) == [] and language.check(document) == []
