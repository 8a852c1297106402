"""The score_adj backend's logic: the bands a document gives each class, what it refuses,
and the ledger of the values written over (bookkeeping, saved before each write, and
put back). The ledger's /proc reads and writes go to a table of processes here."""

import errno
import json
import os
import re
import stat

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.ebpf.oom.plugins.module_utils import backends, libbpf, scoreadj
from ansible_collections.ebpf.oom.plugins.module_utils.errors import RenderError
from ansible_collections.ebpf.oom.plugins.plugin_utils.bundled import compile_generic
from conftest import REPO


def doc(*rules, **top):
    return dict(name="t", rules=list(rules), **top)


def prefer(tier, **match):
    return {"match": match or {"comm": "x%d" % tier}, "action": "prefer", "tier": tier}


# ---------------------------------------------------------------- bands

def test_tiers_with_a_kernel_fallback_get_positive_values_the_lowest_tier_highest():
    bands = scoreadj.Bands(doc(prefer(5), prefer(1), prefer(2), prefer(1, comm="y")))
    assert bands.rules == [333, 1000, 666, 1000]
    assert bands.levels == [("tier 1", 1000), ("tier 2", 666), ("tier 5", 333),
                            ("no rule matches", 0)]
    assert bands.gap == 333


def test_protect_is_minus_1000_and_select_plus_1000_above_every_tier():
    bands = scoreadj.Bands(doc({"match": {"comm": "db"}, "action": "protect"},
                               {"match": {"pid": 7}, "action": "select"}, prefer(1)))
    assert bands.rules == [-1000, 1000, 500]
    assert bands.levels == [("select", 1000), ("tier 1", 500), ("no rule matches", 0)]


def test_a_prefer_fallback_is_the_zero_band_and_later_tiers_go_negative():
    bands = scoreadj.Bands(doc(prefer(1), prefer(3), prefer(4), prefer(1000),
                               fallback={"action": "prefer", "tier": 3}))
    assert bands.rules == [1000, 0, -499, -999]
    assert bands.levels == [("tier 1", 1000), ("tier 3 (fallback)", 0), ("tier 4", -499),
                            ("tier 1000", -999)]
    assert bands.gap == 499
    assert bands.value(-1) is None and bands.value(2) == -499


def test_a_document_without_ranked_rules_writes_only_protected_ones():
    bands = scoreadj.Bands(doc({"match": {"comm": "db"}, "action": "protect"}))
    assert bands.rules == [-1000] and bands.levels == [("no rule matches", 0)]
    assert bands.gap is None


@st.composite
def documents(draw):
    rules = draw(st.lists(st.one_of(
        st.integers(1, 1000).map(prefer),
        st.just({"match": {"comm": "s"}, "action": "select"}),
        st.just({"match": {"comm": "p"}, "action": "protect"})), max_size=12))
    fallback = draw(st.one_of(st.just("kernel"), st.integers(1, 1000).map(
        lambda t: {"action": "prefer", "tier": t})))
    return doc(*rules, fallback=fallback)


@settings(max_examples=300, deadline=None)
@given(documents())
def test_bands_keep_the_documents_order(document):
    """The first to die in the document has the higher value: select before every tier,
    a lower tier before a higher one, and the processes no rule matches (value 0) between
    the tiers before and after a prefer fallback's tier (after every tier by default)."""
    bands = scoreadj.Bands(document)
    fallback = document["fallback"]
    pivot = fallback["tier"] if isinstance(fallback, dict) else None

    def rank(rule):  # the document's order: smaller dies first
        if rule["action"] == "select":
            return (0, 0)
        return (1, rule["tier"]) if rule["action"] == "prefer" else None

    ranked = [(rank(r), v) for r, v in zip(document["rules"], bands.rules) if rank(r)]
    for (a, va) in ranked:
        assert -999 <= va <= 1000
        for (b, vb) in ranked:
            if a < b:
                assert va > vb, (a, b, bands.rules)
        unmatched = (1, pivot) if pivot is not None else (2, 0)
        assert (va > 0) == (a < unmatched) and (va == 0) == (a == unmatched)
    assert [v for r, v in zip(document["rules"], bands.rules) if r["action"] == "protect"] == \
        [-1000] * sum(r["action"] == "protect" for r in document["rules"])
    values = [v for _what, v in bands.levels]
    assert values == sorted(set(values), reverse=True)


# ---------------------------------------------------------------- what cannot be expressed

def test_abort_is_refused_naming_the_rule():
    with pytest.raises(RenderError) as err:
        scoreadj.Bands(doc(prefer(1), {"match": {"comm": "b"}, "action": "abort"}, scope="memcg"))
    assert str(err.value).startswith("rules[1].action: 'abort' cannot be expressed")
    assert "evaluate_task" in str(err.value)


def test_a_protect_fallback_is_refused():
    with pytest.raises(RenderError, match=r"^fallback: 'protect' cannot be expressed"):
        scoreadj.Bands(doc(prefer(1), fallback="protect"))


def test_by_rss_and_a_narrower_scope_are_accepted_with_warnings():
    found = scoreadj.Bands(doc(dict(prefer(2), by="rss"), scope="memcg",
                               fallback={"action": "prefer", "tier": 1, "by": "rss"})).warnings
    assert [w.split(":")[0] for w in found] == ["rules[0].by", "fallback.by", "scope"]
    assert "ranks the processes of a tier by its own badness" in found[0]


def test_the_backend_refuses_before_anything_changes_and_the_hook_backend_does_not():
    document = doc({"match": {"comm": "b"}, "action": "abort"}, scope="memcg", fallback="protect")
    with pytest.raises(RenderError, match=r"^rules\[0\]\.action: 'abort'"):
        backends.ScoreAdj().plan(document)
    assert backends.EvaluateTask().plan(document).warnings == []


def role_document(role):
    """A role's policy document from its defaults (its rules: the *_rules lists its
    template adds up, in that order)."""
    with open(os.path.join(REPO, "roles", role, "defaults", "main.yml")) as f:
        defaults = yaml.safe_load(f)
    policy = dict(defaults["%s_policy" % role], name=role[:15])
    policy["rules"] = [r for key in re.findall(r"\w+_rules", policy["rules"]) for r in defaults[key]]
    return policy


@pytest.mark.parametrize("role,levels", [
    ("database_server", [("tier 1 (fallback)", 0), ("tier 1000", -999)]),
    ("batch_worker", [("tier 1", 1000), ("tier 2", 500), ("tier 500 (fallback)", 0),
                      ("tier 1000", -999)]),
    ("container_host", [("tier 1", 1000), ("tier 2", 500), ("tier 3 (fallback)", 0),
                        ("tier 4", -499), ("tier 1000", -999)]),
])
def test_the_roles_documents_get_the_bands_their_readmes_show(role, levels):
    bands = scoreadj.Bands(role_document(role))
    assert bands.levels == levels and bands.warnings == []
    with open(os.path.join(REPO, "roles", role, "README.md")) as f:
        readme = f.read()
    for what, value in levels:
        row = r"\| %s \| %s \|" % (re.escape(what), re.escape("%+d" % value if value else "0"))
        assert re.search(row, readme), (role, what, value)


# ---------------------------------------------------------------- the ledger

class Procs(object):
    """A process table standing in for /proc: {pid: [start time, oom_score_adj]}; each
    write checks that the ledger on disk names the process (no original can be lost)."""

    def __init__(self, monkeypatch, tmp_path, **procs):
        self.table = dict((int(pid[1:]), list(v)) for pid, v in procs.items())
        self.path = tmp_path / "run" / scoreadj.LEDGER
        self.refuse = {}
        monkeypatch.setenv("EBPF_OOM_RUN_DIR", str(tmp_path / "run"))
        monkeypatch.setattr(scoreadj, "start_time", lambda pid: self.table.get(pid, [None])[0])
        monkeypatch.setattr(scoreadj, "read_adj", lambda pid: self.table.get(pid, [0, None])[1])
        monkeypatch.setattr(scoreadj, "write_adj", self.write)
        monkeypatch.setattr(scoreadj, "comm", lambda pid: "proc%d" % pid)

    def write(self, pid, value, start):
        if pid not in self.table or self.table[pid][0] != start:
            return errno.ESRCH
        if pid in self.refuse:
            return self.refuse[pid]
        saved = json.loads(self.path.read_text())
        assert str(pid) in saved["tasks"], (pid, saved)
        self.table[pid][1] = value
        return None

    def adj(self):
        return dict((pid, v[1]) for pid, v in self.table.items())


def apply(changes, policy="p"):
    with scoreadj.Ledger.locked() as ledger:
        written = ledger.apply(changes, policy)
        return written, dict(ledger.tasks), list(ledger.errors)


def restore():
    with scoreadj.Ledger.locked() as ledger:
        return ledger.restore_all()


def test_values_written_over_are_saved_first_and_put_back(monkeypatch, tmp_path):
    procs = Procs(monkeypatch, tmp_path, p10=(100, 0), p11=(110, 200), p12=(120, 0))
    written, tasks, errors = apply([(10, 1000, None), (11, -999, None), (12, None, None)])
    assert (written, errors) == (2, [])
    assert tasks == {10: [100, 0, 1000], 11: [110, 200, -999]}
    assert procs.adj() == {10: 1000, 11: -999, 12: 0}
    mode = stat.S_IMODE(os.stat(procs.path).st_mode)
    assert mode == 0o600 and stat.S_IMODE(os.stat(procs.path.parent).st_mode) == 0o700
    assert restore() == 2
    assert procs.adj() == {10: 0, 11: 200, 12: 0}
    assert json.loads(procs.path.read_text())["tasks"] == {}


def test_a_process_that_no_longer_matches_gets_its_own_value_back(monkeypatch, tmp_path):
    procs = Procs(monkeypatch, tmp_path, p10=(100, 300))
    apply([(10, 1000, None)])
    written, tasks, _errors = apply([(10, None, None)])   # e.g. it exec'd another program
    assert written == 1 and tasks == {} and procs.adj() == {10: 300}


def test_a_later_value_of_another_writer_is_left_in_place(monkeypatch, tmp_path):
    procs = Procs(monkeypatch, tmp_path, p10=(100, 0))
    apply([(10, 500, None)])
    procs.table[10][1] = 42            # systemd, the kubelet or the process itself
    assert restore() == 0 and procs.adj() == {10: 42}


def test_a_reused_pid_is_not_mistaken_for_the_process_written(monkeypatch, tmp_path):
    procs = Procs(monkeypatch, tmp_path, p10=(100, 0))
    apply([(10, 500, None)])
    procs.table[10] = [999, 500]       # exited; a new process got pid 10 (and value 500)
    written, tasks, _errors = apply([(10, None, None)])
    assert written == 0 and tasks == {} and procs.adj() == {10: 500}
    with scoreadj.Ledger.locked() as ledger:
        assert ledger.exited[-1][:4] == [10, 100, 500, "p"]


def test_a_child_inherits_the_value_written_and_is_put_back_to_its_parents_own(monkeypatch, tmp_path):
    procs = Procs(monkeypatch, tmp_path, p10=(100, 7))
    apply([(10, 1000, None)])
    procs.table[11] = [110, 1000]      # forked: the child carries what the parent carries
    procs.table[12] = [120, 1000]
    written, tasks, _errors = apply([(11, 1000, 10), (12, None, 10)])  # 12 exec'd another program
    assert written == 1 and tasks[11] == [110, 7, 1000] and 12 not in tasks
    assert procs.adj() == {10: 1000, 11: 1000, 12: 7}
    assert restore() == 2 and procs.adj() == {10: 7, 11: 7, 12: 7}


def test_a_process_the_kernel_never_kills_is_left_alone_as_the_hook_leaves_it(monkeypatch, tmp_path):
    procs = Procs(monkeypatch, tmp_path, p10=(100, -1000))
    assert apply([(10, 1000, None)])[:2] == (0, {}) and procs.adj() == {10: -1000}


def test_a_refused_write_is_reported_and_not_kept(monkeypatch, tmp_path):
    procs = Procs(monkeypatch, tmp_path, p10=(100, 0), p11=(110, 0))
    procs.refuse[10] = errno.EACCES
    written, tasks, errors = apply([(10, -999, None), (11, 500, None), (12, 500, None)])
    assert written == 1 and list(tasks) == [11]
    assert errors == ["pid 10 (proc10): cannot write oom_score_adj -999: Permission denied"]


def test_the_ledger_names_the_policy_of_a_value_after_the_process_is_gone(monkeypatch, tmp_path):
    procs = Procs(monkeypatch, tmp_path, p10=(100, 0), p11=(110, 0))
    apply([(10, 1000, None), (11, 500, None)], policy="batch")
    del procs.table[10]                # killed
    with scoreadj.Ledger.locked() as ledger:
        ledger.prune()
    ledger = scoreadj.Ledger.read()
    assert ledger.written_by_agent(10, 1000) == "batch"
    assert ledger.written_by_agent(11, 500) == "batch"
    assert ledger.written_by_agent(10, 0) is None and ledger.written_by_agent(12, 1000) is None


# ---------------------------------------------------------------- the seam

@pytest.fixture(scope="module")
def generic(tmp_path_factory):
    return compile_generic(cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.mark.parametrize("name", sorted(backends.BACKENDS))
def test_a_backends_needs_are_what_its_programs_need(generic, name):
    backend = backends.BACKENDS[name]
    with libbpf.Object(generic) as obj:
        obj.select(backend.programs)
        assert sorted(backend.needs) == obj.kernel_symbols()
    assert sorted(backends.ORDER) == sorted(backends.BACKENDS)


def test_a_pid_namespace_not_the_initial_one_is_named_and_refused(tmp_path):
    """The initial pid namespace has the fixed inode PROC_PID_INIT_INO; any other one is
    refused (here a stand-in /proc whose self/ns/pid is a file with another inode)."""
    (tmp_path / "self" / "ns").mkdir(parents=True)
    (tmp_path / "pidns").write_text("")
    os.symlink(str(tmp_path / "pidns"), str(tmp_path / "self" / "ns" / "pid"))
    problem = scoreadj.pid_namespace_problem(str(tmp_path))
    assert problem and "not the host's initial one" in problem and "hostPID" in problem
    assert "cannot read its pid namespace" in scoreadj.pid_namespace_problem(str(tmp_path / "none"))


def test_an_event_about_the_process_that_had_the_pid_before_writes_nothing(monkeypatch, tmp_path):
    """The event carries its process's start (ns); pid 10 is another process now (start 100
    ticks), so an event of the one that started at 90 ticks is dropped, and the one of
    the process there now is applied."""
    procs = Procs(monkeypatch, tmp_path, p10=(100, 0))
    tick_ns = 1000000000 // os.sysconf("SC_CLK_TCK")
    written, tasks, _errors = apply([(10, 1000, None, 90 * tick_ns)])
    assert (written, tasks, procs.adj()) == (0, {}, {10: 0})
    written, tasks, _errors = apply([(10, 1000, None, 100 * tick_ns + 1)])
    assert (written, tasks, procs.adj()) == (1, {10: [100, 0, 1000]}, {10: 1000})


@pytest.mark.parametrize("content", [b"{not json", b'{"tasks": {"10": 5}}', b'{"tasks": {"x": [1, 2, 3]}}',
                                     b'{"tasks": {"10": [1, "2", 3]}}', b'{"exited": [[1, 2]]}', b"[]",
                                     b'{"policy": 7}'])
def test_a_ledger_that_is_not_one_is_moved_aside_and_a_new_one_starts(monkeypatch, tmp_path, content):
    """Read as empty and overwritten, its values to put back were lost; a wrong type made
    the agent crash in a loop and a removal fail."""
    procs = Procs(monkeypatch, tmp_path, p10=(100, 0))
    procs.path.parent.mkdir(mode=0o700)
    procs.path.write_bytes(content)
    with pytest.raises(scoreadj.LedgerError):
        scoreadj.Ledger.read(str(procs.path))
    with scoreadj.Ledger.locked() as ledger:
        aside = ledger.set_aside
        assert ledger.tasks == {} and ledger.apply([(10, 1000, None)], "p") == 1
    assert aside and open(aside, "rb").read() == content
    assert json.loads(procs.path.read_text())["tasks"] == {"10": [100, 0, 1000]}


def test_a_pid_taken_by_another_process_after_the_look_gets_no_write(monkeypatch, tmp_path):
    """The ledger hands the write the start it saw: a process that has the pid by the time
    of the write (the first one exited) is not written, and its entry is dropped."""
    procs = Procs(monkeypatch, tmp_path, p10=(100, 0))
    save = scoreadj.Ledger.save

    def save_then_reuse(ledger):
        save(ledger)
        procs.table[10] = [999, 0]  # pid 10 is another process now

    monkeypatch.setattr(scoreadj.Ledger, "save", save_then_reuse)
    written, tasks, errors = apply([(10, 500, None)])
    assert (written, procs.adj(), tasks, errors) == (0, {10: 0}, {}, [])
