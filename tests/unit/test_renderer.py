"""The renderer: documents become the generic program's map data (layout, semantics, lint).

The layout checks compile bpf/generic.bpf.c with the collection's compiler (real clang)
and read the object's BTF with bpftool; the semantic checks decode the rendered bytes
the way bpf/generic.bpf.c reads them and compare with the document's meaning.
"""

import ctypes
import os
import re
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.ebpf.oom.plugins.module_utils import abi, cgrouprules, common, compiler, language, renderer as R
from ansible_collections.ebpf.oom.plugins.module_utils.names import POLICY_NAME_MAX
from ansible_collections.ebpf.oom.plugins.plugin_utils.bundled import BUNDLED_VMLINUX
from ansible_collections.ebpf.oom.plugins.plugin_utils.documents import validate
from conftest import REPO
from samples import STORY

GENERIC_H = os.path.join(REPO, "bpf", "generic.h")
TOOL_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


# ---------------------------------------------------------------- layout vs the C side

@pytest.fixture(scope="module")
def generic_btf(tmp_path_factory):
    """{struct or var name: info} from the BTF of the compiled generic object."""
    cache = tmp_path_factory.mktemp("cache")
    built = compiler.compile_object(src=os.path.join(REPO, abi.GENERIC_SOURCE),
                                    include_dirs=[os.path.join(REPO, "bpf")],
                                    vmlinux=BUNDLED_VMLINUX, cache_dir=str(cache))
    bpftool = shutil.which("bpftool", path=TOOL_PATH)
    assert bpftool, "bpftool is needed to read the object's BTF"
    raw = subprocess.run([bpftool, "btf", "dump", "file", built["object"]], capture_output=True,
                         text=True, check=True).stdout
    return parse_btf(raw)


def parse_btf(raw):
    """bpftool's raw BTF dump -> {id: {'kind', 'name', 'size', 'members', ...}}."""
    types, current = {}, None
    for line in raw.splitlines():
        m = re.match(r"^\[(\d+)\] (\w+) '([^']*)'(.*)$", line)
        if m:
            attrs = dict(re.findall(r"(\w+)=([^\s,]+)", m.group(4)))
            current = types[int(m.group(1))] = dict(kind=m.group(2), name=m.group(3), attrs=attrs, members=[])
            continue
        m = re.match(r"^\s+'([^']*)' type_id=(\d+) bits_offset=(\d+)", line)
        if m and current is not None:
            current["members"].append((m.group(1), int(m.group(2)), int(m.group(3))))
    return types


def struct_named(types, name):
    found = [t for t in types.values() if t["kind"] == "STRUCT" and t["name"] == name]
    assert len(found) == 1, name
    return found[0]


@pytest.mark.parametrize("c_name", sorted(abi.STRUCTS))
def test_ctypes_struct_matches_compiled_c_struct(generic_btf, c_name):
    py = abi.STRUCTS[c_name]
    c = struct_named(generic_btf, c_name)
    assert int(c["attrs"]["size"]) == ctypes.sizeof(py)
    assert [(m[0], m[2] // 8) for m in c["members"]] == [(f, getattr(py, f).offset) for f, unused in py._fields_]


def _array_len(types, type_id):
    """__uint(name, N) in a map definition is a pointer to an array of N ints."""
    ptr = types[type_id]
    return int(types[int(ptr["attrs"]["type_id"])]["attrs"]["nr_elems"])


@pytest.mark.parametrize("map_name,value,entries", [
    (abi.RULES_MAP, "ebpf_oom_rule", abi.EBPF_OOM_MAX_RULES),
    (abi.CONFIG_MAP, "ebpf_oom_config", 1),
    (abi.STATE_MAP, "ebpf_oom_state", 1),
    (abi.SHADOW_LOG_MAP, "ebpf_oom_verdict", abi.EBPF_OOM_VERDICTS),
    ("oom_shadow_scan", "ebpf_oom_shadow_scan", 1),
    (abi.SHADOW_STATS_MAP, "ebpf_oom_shadow_stats", 1),
])
def test_map_definition_matches_renderer(generic_btf, map_name, value, entries):
    var = [t for t in generic_btf.values() if t["kind"] == "VAR" and t["name"] == map_name]
    assert len(var) == 1
    definition = generic_btf[int(var[0]["attrs"]["type_id"])]
    members = {name: type_id for name, type_id, unused in definition["members"]}
    assert _array_len(generic_btf, members["max_entries"]) == entries
    assert _array_len(generic_btf, members["type"]) == 2  # BPF_MAP_TYPE_ARRAY
    value_type = generic_btf[int(generic_btf[members["value"]]["attrs"]["type_id"])]
    assert value_type["name"] == value


def test_policy_name_global_has_the_kernel_buffer_size(generic_btf):
    var = [t for t in generic_btf.values() if t["kind"] == "VAR" and t["name"] == common.META_POLICY]
    assert len(var) == 1
    array = generic_btf[int(var[0]["attrs"]["type_id"])]
    while array["kind"] in ("CONST", "VOLATILE"):
        array = generic_btf[int(array["attrs"]["type_id"])]
    assert int(array["attrs"]["nr_elems"]) == POLICY_NAME_MAX + 1


def test_constants_equal_generic_h():
    with open(GENERIC_H) as f:
        defines = dict(re.findall(r"^#define (EBPF_OOM_\w+) (\d+)", f.read(), re.M))
    assert defines, "no EBPF_OOM_ constants found in generic.h"
    python = {k: v for k, v in vars(abi).items() if k.startswith("EBPF_OOM_")}
    assert {k: int(v) for k, v in defines.items()} == python


@pytest.mark.parametrize("header,pattern", [
    ("ebpf_oom.h", r"^#define (NO_BPF_POLICY|BPF_EVAL_\w+) (\d+)"),
    ("vmlinux.h", r"^\s+(NO_BPF_POLICY|BPF_EVAL_\w+) = (\d+),"),
])
def test_return_codes_in_headers_equal_common(header, pattern):
    with open(os.path.join(REPO, "bpf", "include", header)) as f:
        values = dict(re.findall(pattern, f.read(), re.M))
    assert {k: int(v) for k, v in values.items()} == {
        "NO_BPF_POLICY": common.NO_BPF_POLICY, "BPF_EVAL_ABORT": common.BPF_EVAL_ABORT,
        "BPF_EVAL_NEXT": common.BPF_EVAL_NEXT, "BPF_EVAL_SELECT": common.BPF_EVAL_SELECT}


# ---------------------------------------------------------------- rendering

def decode(rendered):
    rules = [abi.Rule.from_buffer_copy(v) for unused, v in rendered.maps[abi.RULES_MAP]]
    (key, value), = rendered.maps[abi.CONFIG_MAP]
    assert key == 0
    return abi.Config.from_buffer_copy(value), rules


def test_story_renders_to_three_rules_config_and_two_paths():
    out = R.render(STORY)
    cfg, rules = decode(out)
    assert out.globals == {common.META_POLICY: "pg-batch-web"}
    assert [k for k, unused in out.maps[abi.RULES_MAP]] == [0, 1, 2]
    assert cfg.nr_rules == 3
    assert cfg.scope == abi.EBPF_OOM_SCOPE_GLOBAL | abi.EBPF_OOM_SCOPE_MEMCG
    assert (cfg.fallback_action, cfg.fallback_tier) == (abi.EBPF_OOM_ACT_KERNEL, 0)
    assert cfg.needs == abi.EBPF_OOM_M_COMM | abi.EBPF_OOM_M_CGROUP
    assert (rules[0].match, rules[0].action) == (abi.EBPF_OOM_M_COMM, abi.EBPF_OOM_ACT_PROTECT)
    assert (rules[1].action, rules[1].tier, rules[1].by) == (abi.EBPF_OOM_ACT_PREFER, 1, abi.EBPF_OOM_BY_BADNESS)
    assert (rules[1].match, rules[1].cgroup_level) == (abi.EBPF_OOM_M_CGROUP, 1)
    assert (rules[2].cgroup_level, rules[2].tier) == (1, 2)
    # The rules keep their paths: oom_cgroup_paths maps each to the rules naming it.
    assert out.maps[abi.PATHS_MAP] == [(R.path_key("/batch"), 1 << 1), (R.path_key("/web"), 1 << 2)]
    assert out.cgroup_rules == {"/batch": [1], "/web": [2]}


def test_a_path_named_by_several_rules_maps_to_all_of_them():
    doc = {"name": "p", "rules": [{"match": {"cgroup": "/a/b", "comm": "x"}, "action": "protect"},
                                  {"match": {"pid": 3}, "action": "select"},
                                  {"match": {"cgroup": "/a/b"}, "action": "prefer", "tier": 2}]}
    out = R.render(doc)
    assert out.maps[abi.PATHS_MAP] == [(R.path_key("/a/b"), (1 << 0) | (1 << 2))]
    assert decode(out)[1][2].cgroup_level == 2
    key = out.maps[abi.PATHS_MAP][0][0]
    assert len(key) == abi.EBPF_OOM_PATH_LEN and key.rstrip(b"\0") == b"/a/b"
    assert R.describe(abi.PATHS_MAP, key) == {"path": "/a/b"}


def test_rendering_needs_no_cgroup_to_exist():
    """The same document renders the same everywhere: nothing is looked up on the host."""
    doc = {"name": "m", "rules": [{"match": {"cgroup": "/gone/away"}, "action": "prefer", "tier": 1}]}
    first, second = R.render(doc), R.render(doc)
    assert first.maps == second.maps and first.cgroup_rules == second.cgroup_rules


@pytest.mark.parametrize("path,why", [
    ("batch", "must be an absolute path"),
    ("/batch/", "empty, '.' or '..' part"),
    ("/a//b", "empty, '.' or '..' part"),
    ("/a/../b", "empty, '.' or '..' part"),
    ("/a/./b", "empty, '.' or '..' part"),
    ("/batch\n", "NUL or a newline"),
    ("/" + "x" * 254, "longer than 254 bytes"),
    ("/a" * 17, "17 levels deep; at most 16"),
])
def test_cgroup_paths_the_kernel_cannot_write_are_refused(path, why):
    doc = {"name": "c", "rules": [{"match": {"cgroup": path}, "action": "protect"}]}
    with pytest.raises(R.RenderError, match=r"rules\[0\]\.match\.cgroup: .*" + re.escape(why)):
        R.render(doc)


@pytest.mark.parametrize("key,value", [("comm", "postgres\n"), ("comm_prefix", "job\n"),
                                       ("comm", "\u00e9t\u00e9"), ("comm", "a" * 16)])
def test_names_a_task_cannot_have_are_refused(key, value):
    doc = {"name": "c", "rules": [{"match": {key: value}, "action": "protect"}]}
    with pytest.raises(R.RenderError, match=r"rules\[0\]\.match\.%s: .*printable ASCII" % key):
        R.render(doc)


@pytest.mark.parametrize("key,value", [("pid", 1 << 32), ("pid", (1 << 32) + 1), ("uid", -1), ("pid", True),
                                       ("uid", 1 << 32), ("pid", "1"), ("uid", 1.0)])
def test_ids_the_kernel_cannot_hold_are_refused_rather_than_cut(key, value):
    doc = {"name": "c", "rules": [{"match": {key: value}, "action": "protect"}]}
    refused = r"(must be an integer|-?\d+ is (below the minimum|above the maximum) \d+)"
    with pytest.raises(R.RenderError, match=r"rules\[0\]\.match\.%s: %s" % (key, refused)):
        R.render(doc)


def test_exact_comm_compares_the_terminating_nul_and_prefix_does_not():
    doc = {"name": "c", "rules": [{"match": {"comm": "postgres"}, "action": "protect"},
                                  {"match": {"comm_prefix": "postgres"}, "action": "protect"},
                                  {"match": {"comm": "a" * 15}, "action": "protect"}]}
    unused, (exact, prefix, longest) = decode(R.render(doc))
    assert bytes(exact)[:16] == b"postgres" + b"\0" * 8
    assert R.describe(abi.RULES_MAP, bytes(exact))["comm_mask"] == "ff" * 9 + "00" * 7
    assert R.describe(abi.RULES_MAP, bytes(prefix))["comm_mask"] == "ff" * 8 + "00" * 8
    assert R.describe(abi.RULES_MAP, bytes(longest))["comm_mask"] == "ff" * 16


def test_root_cgroup_is_level_zero():
    doc = {"name": "r", "rules": [{"match": {"cgroup": "/"}, "action": "prefer", "tier": 4, "by": "rss"}]}
    out = R.render(doc)
    unused, (rule,) = decode(out)
    assert (rule.cgroup_level, rule.by) == (0, abi.EBPF_OOM_BY_RSS)
    assert out.cgroup_rules == {"/": [0]}


def test_document_without_cgroup_rules_has_no_paths():
    doc = {"name": "p", "scope": "memcg", "rules": [{"match": {"pid": 42, "uid": 0}, "action": "abort"}],
           "fallback": {"action": "prefer", "tier": 9, "by": "rss"}}
    out = R.render(doc)
    cfg, (rule,) = decode(out)
    assert (rule.pid, rule.uid, rule.action) == (42, 0, abi.EBPF_OOM_ACT_ABORT)
    assert cfg.needs == abi.EBPF_OOM_M_PID | abi.EBPF_OOM_M_UID
    assert cfg.scope == abi.EBPF_OOM_SCOPE_MEMCG
    assert (cfg.fallback_action, cfg.fallback_tier, cfg.fallback_by) == (abi.EBPF_OOM_ACT_PREFER, 9, abi.EBPF_OOM_BY_RSS)
    assert out.maps[abi.PATHS_MAP] == [] and out.cgroup_rules == {}


def test_select_ranks_in_tier_zero():
    unused, (rule,) = decode(R.render({"name": "s", "rules": [{"match": {"pid": 7}, "action": "select"}]}))
    assert (rule.action, rule.tier) == (abi.EBPF_OOM_ACT_SELECT, abi.EBPF_OOM_TIER_SELECT)


def test_render_refuses_abort_outside_memcg_scope():
    with pytest.raises(R.RenderError, match=r"rules\[0\]\.action: 'abort' is only allowed with scope memcg"):
        R.render({"name": "a", "rules": [{"match": {"pid": 7}, "action": "abort"}]})


def test_render_refuses_a_tier_ranked_two_ways():
    doc = {"name": "t", "rules": [{"match": {"pid": 1}, "action": "prefer", "tier": 1, "by": "rss"},
                                  {"match": {"pid": 2}, "action": "prefer", "tier": 1}]}
    with pytest.raises(R.RenderError, match=r"rules\[1\]\.by: tier 1 is ranked by 'rss' in rules\[0\]"):
        R.render(doc)


def test_describe_reads_back_a_rule():
    out = R.render(STORY)
    rule = R.describe(abi.RULES_MAP, out.maps[abi.RULES_MAP][0][1].hex())
    assert (rule["comm"], rule["action"], rule["match"]) == ("postgres", abi.EBPF_OOM_ACT_PROTECT, abi.EBPF_OOM_M_COMM)


# ---------------------------------------------------------------- lint

def test_story_is_lint_clean():
    assert language.lint(STORY) == []


def test_global_fallback_protect_warns():
    (warning,) = language.lint(dict(STORY, fallback="protect"))
    assert warning.startswith("fallback: protect: every task gets BPF_EVAL_NEXT in a global OOM")
    assert "panics" in warning


def test_protect_everything_rule_warns():
    doc = dict(STORY, rules=STORY["rules"] + [{"match": {"cgroup": "/"}, "action": "protect"}])
    (warning,) = language.lint(doc)
    assert warning.startswith("rules[3]: protect matches every task (cgroup /)")


def test_memcg_scope_never_warns():
    doc = dict(STORY, scope="memcg", fallback="protect",
               rules=[{"match": {"cgroup": "/"}, "action": "protect"}])
    assert language.lint(doc) == []


def test_catch_all_ranking_rule_makes_fallback_unreachable():
    doc = dict(STORY, fallback="protect",
               rules=STORY["rules"] + [{"match": {"cgroup": "/"}, "action": "prefer", "tier": 9}])
    assert language.lint(doc) == []


SLICES = [{"match": {"cgroup": path}, "action": "protect"}
          for path in ("/system.slice", "/user.slice", "/init.scope")]


def test_protecting_every_top_level_cgroup_of_a_systemd_host_warns():
    doc = dict(STORY, rules=STORY["rules"] + SLICES)
    (warning,) = language.lint(doc)
    assert warning.startswith("rules[3], rules[4], rules[5]: protect every task of a systemd host "
                              "(/init.scope, /system.slice, /user.slice hold them all)")
    assert "every task gets BPF_EVAL_NEXT in a global OOM" in warning and "panics" in warning


def test_protecting_the_systemd_slices_with_a_protect_fallback_warns_twice():
    assert len(language.lint(dict(STORY, rules=SLICES, fallback="protect"))) == 2


@pytest.mark.parametrize("doc", [
    dict(STORY, rules=SLICES[:2]),                                     # /init.scope is ranked
    dict(STORY, rules=[{"match": {"cgroup": "/init.scope"}, "action": "prefer", "tier": 1}] + SLICES),
    dict(STORY, rules=SLICES[:2] + [{"match": {"cgroup": "/init.scope", "uid": 0}, "action": "protect"}]),
    dict(STORY, rules=SLICES, scope="memcg"),
], ids=["two-of-three", "ranked-first", "narrower-match", "memcg"])
def test_protecting_part_of_a_systemd_host_does_not_warn(doc):
    assert language.lint(doc) == []


# ---------------------------------------------------------------- property tests

CGROUPS = ["/", "/a", "/a/b", "/a/b/c", "/d", "/d/e"]
COMMS = ["postgres", "postgres-wal", "java", "j", "a" * 15]
TASK_CGROUPS = CGROUPS + ["/a/b/c/x", "/d/e/f/g", "/z"]


def matches():
    return st.fixed_dictionaries({}, optional={
        "pid": st.integers(1, 6),
        "comm": st.sampled_from(COMMS),
        "cgroup": st.sampled_from(CGROUPS + ["/missing"]),
        "uid": st.integers(0, 3),
    }).filter(bool)


def rules(tier_by):
    base = st.fixed_dictionaries({"match": matches(), "action": st.sampled_from(["protect", "select", "abort"])})
    prefer = st.integers(1, 6).map(lambda t: {"action": "prefer", "tier": t, "by": tier_by[t]})
    prefer = st.tuples(matches(), prefer).map(lambda mp: dict(mp[1], match=mp[0]))
    return st.one_of(base, prefer)


def prefix_variant(rule):
    """Some comm matches become comm_prefix matches."""
    match = dict(rule["match"])
    if "comm" in match and match["comm"].startswith("p"):
        match["comm_prefix"] = match.pop("comm")[:4]
    return dict(rule, match=match)


@st.composite
def documents(draw):
    tier_by = {t: draw(st.sampled_from(["badness", "rss"])) for t in range(1, 7)}
    scope = draw(st.sampled_from(["global", "memcg", "both"]))
    doc_rules = [prefix_variant(r) for r in draw(st.lists(rules(tier_by), max_size=abi.EBPF_OOM_MAX_RULES))]
    if scope != "memcg":
        doc_rules = [r for r in doc_rules if r["action"] != "abort"]
    doc = {"name": draw(st.from_regex(r"\A[A-Za-z0-9_-]{1,15}\Z")), "scope": scope, "rules": doc_rules}
    fallback = draw(st.sampled_from(["kernel", "protect", "prefer", None]))
    if fallback == "prefer":
        tier = draw(st.integers(1, 6))
        doc["fallback"] = {"action": "prefer", "tier": tier, "by": tier_by[tier]}
    elif fallback:
        doc["fallback"] = fallback
    return doc


@pytest.fixture(scope="module")
def fake_cgroups(tmp_path_factory):
    root = tmp_path_factory.mktemp("cgroupfs")
    for path in TASK_CGROUPS:
        os.makedirs(os.path.join(str(root), path.strip("/")), exist_ok=True)
    return str(root)


def ancestors(root, path):
    """{level: cgroup id} of a task in cgroup `path`, as the program's ancestry walk sees it."""
    parts = [p for p in path.split("/") if p]
    return {level: os.stat(os.path.join(root, *parts[:level])).st_ino for level in range(len(parts) + 1)}, len(parts)


def live_ids(rendered, root):
    """oom_rule_cgroups as cgrouprules.sync() fills it on a host whose cgroup v2 mount is root."""
    found = cgrouprules.look(rendered.cgroup_rules, mount=(root, "/"))
    return dict((i, found[path]) for path, indexes in rendered.cgroup_rules.items() for i in indexes)


def bpf_classify(cfg, rules, live, task, root):
    """classify.h's read_facts + first_match over the rendered bytes and the live ids."""
    anc, level = ancestors(root, task["cgroup"])
    comm = task["comm"].encode().ljust(abi.EBPF_OOM_COMM_LEN, b"\0")
    for i, r in enumerate(rules[:cfg.nr_rules]):
        raw = bytes(r)
        name = raw[abi.Rule.comm.offset:][:16]
        mask = raw[abi.Rule.comm_mask.offset:][:16]
        if r.match & abi.EBPF_OOM_M_PID and task["pid"] != r.pid:
            continue
        if r.match & abi.EBPF_OOM_M_UID and task["uid"] != r.uid:
            continue
        if r.match & abi.EBPF_OOM_M_COMM and any((c ^ n) & m for c, n, m in zip(comm, name, mask)):
            continue
        if r.match & abi.EBPF_OOM_M_CGROUP and (not live.get(i)
                                                or r.cgroup_level > abi.EBPF_OOM_MAX_CGROUP_LEVEL
                                                or r.cgroup_level > level
                                                or anc[r.cgroup_level] != live[i]):
            continue
        return r.action, r.tier, r.by
    return cfg.fallback_action, cfg.fallback_tier, cfg.fallback_by


def document_classify(doc, task, root):
    """The document's meaning (schemas/README.md), straight from the YAML."""
    def holds(match):
        if "pid" in match and task["pid"] != match["pid"]:
            return False
        if "uid" in match and task["uid"] != match["uid"]:
            return False
        if "comm" in match and task["comm"] != match["comm"]:
            return False
        if "comm_prefix" in match and not task["comm"].startswith(match["comm_prefix"]):
            return False
        if "cgroup" in match:
            if not os.path.isdir(os.path.join(root, match["cgroup"].strip("/"))):
                return False  # missing on this host: matches nothing
            if not (match["cgroup"] == "/" or task["cgroup"] == match["cgroup"]
                    or task["cgroup"].startswith(match["cgroup"] + "/")):
                return False
        return True

    def numbers(rule):
        action = rule["action"]
        tier = rule.get("tier", 0)
        return language.ACTION[action].number, tier if action == "prefer" else 0, language.BY[rule.get("by", "badness")]

    for rule in doc["rules"]:
        if holds(rule["match"]):
            return numbers(rule)
    fallback = doc.get("fallback", "kernel")
    return numbers(fallback if isinstance(fallback, dict) else {"action": fallback})


tasks = st.fixed_dictionaries({
    "pid": st.integers(1, 7),
    "uid": st.integers(0, 4),
    "comm": st.sampled_from(COMMS + ["postgre", "postgres1", "jav", "bash"]),
    "cgroup": st.sampled_from(TASK_CGROUPS),
})

PROPERTY = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@PROPERTY
@given(doc=documents())
def test_valid_document_renders_to_data_the_program_accepts(doc):
    assert validate(doc) == []
    out = R.render(doc)
    cfg, rules = decode(out)
    assert [k for k, unused in out.maps[abi.RULES_MAP]] == list(range(len(doc["rules"])))
    assert cfg.nr_rules == len(rules) <= abi.EBPF_OOM_MAX_RULES
    assert all(len(v) == ctypes.sizeof(abi.Rule) for unused, v in out.maps[abi.RULES_MAP])
    assert cfg.scope in (1, 2, 3)
    assert cfg.fallback_action in (abi.EBPF_OOM_ACT_KERNEL, abi.EBPF_OOM_ACT_PROTECT, abi.EBPF_OOM_ACT_PREFER)
    needs = 0
    for r in rules:
        needs |= r.match
        assert r.match and not r.match & ~0xF and r.pad == 0
        assert r.action in (abi.EBPF_OOM_ACT_PROTECT, abi.EBPF_OOM_ACT_PREFER, abi.EBPF_OOM_ACT_SELECT,
                            abi.EBPF_OOM_ACT_ABORT)
        if r.action == abi.EBPF_OOM_ACT_PREFER:
            assert abi.EBPF_OOM_TIER_MIN <= r.tier <= abi.EBPF_OOM_TIER_MAX
        else:
            assert r.tier == 0
        assert r.by in (abi.EBPF_OOM_BY_BADNESS, abi.EBPF_OOM_BY_RSS)
        assert r.action != abi.EBPF_OOM_ACT_ABORT or cfg.scope == abi.EBPF_OOM_SCOPE_MEMCG
        if r.match & abi.EBPF_OOM_M_CGROUP:
            assert r.cgroup_level <= abi.EBPF_OOM_MAX_CGROUP_LEVEL
        mask = bytes(r)[abi.Rule.comm_mask.offset:][:16]
        assert mask == b"\xff" * mask.count(b"\xff") + b"\0" * (16 - mask.count(b"\xff"))
        assert bool(mask.count(b"\xff")) == bool(r.match & abi.EBPF_OOM_M_COMM)
    assert cfg.needs == needs
    if cfg.fallback_action == abi.EBPF_OOM_ACT_PREFER:
        assert abi.EBPF_OOM_TIER_MIN <= cfg.fallback_tier <= abi.EBPF_OOM_TIER_MAX


@PROPERTY
@given(doc=documents(), task_list=st.lists(tasks, min_size=1, max_size=12))
def test_rendered_rules_classify_tasks_as_the_document_says(doc, task_list, fake_cgroups):
    out = R.render(doc)
    cfg, rules = decode(out)
    live = live_ids(out, fake_cgroups)
    for task in task_list:
        assert bpf_classify(cfg, rules, live, task, fake_cgroups) == document_classify(doc, task, fake_cgroups), task


# ---------------------------------------------------------------- the scan, modelled

NO_BPF_POLICY, ABORT, NEXT, SELECT = (common.NO_BPF_POLICY, common.BPF_EVAL_ABORT, common.BPF_EVAL_NEXT,
                                      common.BPF_EVAL_SELECT)


def scan(order, verdict_of):
    """oom_evaluate_task() of the hook kernel over `order` (tasks with 'badness'); the victim or None.

    A SELECTed task counts with its own badness, so a later NO_BPF_POLICY task
    with more badness replaces it: the program must answer NEXT after a choice.
    """
    state = {"have": False}
    chosen, chosen_points = None, None
    for task in order:
        verdict = verdict_of(task, state)
        if verdict == ABORT:
            return "abort"
        if verdict == NEXT:
            continue
        if verdict == NO_BPF_POLICY and chosen is not None and task["badness"] < chosen_points:
            continue
        chosen, chosen_points = task, task["badness"]
    return chosen


def program_verdict(classify):
    """The decision part of ebpf_oom_eval in generic.bpf.c."""
    def verdict(task, state):
        action, tier, by = classify(task)
        if action == abi.EBPF_OOM_ACT_PROTECT:
            return NEXT
        if action == abi.EBPF_OOM_ACT_ABORT:
            return ABORT
        if action in (abi.EBPF_OOM_ACT_PREFER, abi.EBPF_OOM_ACT_SELECT):
            points = task["rss"] if by == abi.EBPF_OOM_BY_RSS else task["badness"]
            if state["have"] and (tier > state["tier"] or (tier == state["tier"] and points < state["points"])):
                return NEXT
            state.update(have=True, tier=tier, points=points)
            return SELECT
        return NEXT if state["have"] else NO_BPF_POLICY
    return verdict


def expected_victim(classified):
    """schemas/README.md: best (tier, points) among ranked tasks, else the most badness among the rest."""
    if any(c[0] == abi.EBPF_OOM_ACT_ABORT for c, unused in classified):
        return "abort"
    ranked = [(c[1], -(t["rss"] if c[2] == abi.EBPF_OOM_BY_RSS else t["badness"]), t["pid"])
              for c, t in classified if c[0] in (abi.EBPF_OOM_ACT_PREFER, abi.EBPF_OOM_ACT_SELECT)]
    if ranked:
        return min(ranked)[1:]
    rest = [(t["badness"], t["pid"]) for c, t in classified if c[0] == abi.EBPF_OOM_ACT_KERNEL]
    return max(rest) if rest else None


candidate = st.fixed_dictionaries({"uid": st.integers(0, 4),
                                   "comm": st.sampled_from(COMMS + ["bash"]),
                                   "cgroup": st.sampled_from(TASK_CGROUPS),
                                   "badness": st.integers(0, 10 ** 6),
                                   "rss": st.integers(0, 10 ** 6)})


@PROPERTY
@given(doc=documents(), population=st.lists(candidate, min_size=1, max_size=10), data=st.data())
def test_victim_does_not_depend_on_scan_order(doc, population, data, fake_cgroups):
    """With distinct points, the modelled scan picks the documented victim in any order."""
    population = [dict(t, pid=i + 1, badness=t["badness"] * 16 + i, rss=t["rss"] * 16 + i)
                  for i, t in enumerate(population)]
    out = R.render(doc)
    cfg, rules = decode(out)
    live = live_ids(out, fake_cgroups)

    def classify(task):
        return bpf_classify(cfg, rules, live, task, fake_cgroups)

    want = expected_victim([(classify(t), t) for t in population])
    order = data.draw(st.permutations(population))
    got = scan(order, program_verdict(classify))
    if isinstance(got, dict):
        ranked = classify(got)[0] in (abi.EBPF_OOM_ACT_PREFER, abi.EBPF_OOM_ACT_SELECT)
        by_rss = classify(got)[2] == abi.EBPF_OOM_BY_RSS
        got = (-(got["rss"] if by_rss else got["badness"]), got["pid"]) if ranked else (got["badness"], got["pid"])
    assert got == want
