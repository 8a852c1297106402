"""The engine on this host's own kernel: load, attach, pin, verify, replace, remove.

Programs are tp_btf ones (bpf/testing/counter.bpf.c: count_kill on
oom/mark_victim, count_adj on oom/oom_score_adj_update), since this kernel refuses
fmod_ret/fentry.  Each test gets a bpffs of its own, mounted by the engine on a
temporary directory (EBPF_OOM_BPFFS_ROOT) and unmounted at teardown, and a state
dir of its own (EBPF_OOM_STATE_DIR).  Kernel objects are counted with bpftool JSON.
"""

import json
import os
import stat
import subprocess
import sys

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import (
    backends, bpffs, cgroups, libbpf, loader, pins, restore, state, verify)
from ansible_collections.ebpf.oom.plugins.module_utils.common import COLLECTION_VERSION, META_PREFIX
from ansible_collections.ebpf.oom.plugins.module_utils.errors import LoaderError, UnsupportedKernel
from hosthelpers import (COLLECTIONS, added_since, bpftool, engine,  # noqa: F401  # pylint: disable=unused-import
                         kernel_objects, new_objects, objects, remove_cgroup)

KILLS, ADJ_WRITES, VARIANT_SEEN = 0, 1, 2   # counters indexes in counter.bpf.c
MEMCG_V1 = "/sys/fs/cgroup/memory"
MEMCG_LIMIT = 64 << 20


def prog_ids(result):
    return sorted(p["prog_id"] for p in result["record"]["programs"])


def counters(engine, name="p"):
    with libbpf.pinned(bpffs.Layout(engine.root, name).map("counters")) as fd:
        return [int.from_bytes(v, "little") for _k, v in libbpf.map_items(fd)]


def write_oom_score_adj_in_child(value=0):
    """pid of a finished child that wrote its own oom_score_adj once."""
    child = subprocess.run([sys.executable, "-c",
                            "import os; open('/proc/self/oom_score_adj', 'w').write('%d');"
                            "print(os.getpid())" % value],
                           check=True, capture_output=True, text=True)
    return int(child.stdout)


# ---------------------------------------------------------------- apply

def test_apply_mounts_bpffs_when_missing(engine, objects):
    assert not bpffs.is_bpffs(engine.mount)
    loader.apply("p", objects["counter"])
    assert bpffs.is_bpffs(engine.mount)


def test_apply_pins_links_maps_and_record_in_a_root_only_policy_dir(engine, objects):
    result = loader.apply("p", objects["counter"], globals={"target_pid": 7})
    assert result["changed"] and result["action"] == "created"
    layout = bpffs.Layout(engine.root, "p")
    assert layout.entries() == ["link_count_adj", "link_count_kill", "map_counters",
                                "map_settings", "record"]
    for path in (engine.root, layout.dir):
        st = os.stat(path)
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, 0)
    record = bpffs.read_record(layout.record)
    assert record == result["record"]
    assert record["object_sha256"] == libbpf.Object(objects["counter"]).sha256
    assert record["collection_version"] == COLLECTION_VERSION
    assert record["source_sha256"] == "test-source"
    assert record["policy_name"] == "p"
    assert record["globals"] == {"target_pid": 7}
    links = {link["id"]: link for link in bpftool("link", "show")}
    for prog in record["programs"]:
        assert links[prog["link_id"]]["prog_id"] == prog["prog_id"]
        assert prog["attach_type"] == "trace_raw_tp" and prog["prog_type"] == "tracing"
    assert {p["name"]: p["target"] for p in record["programs"]} == \
        {"count_kill": "mark_victim", "count_adj": "oom_score_adj_update"}
    verified = verify.verify("p")
    assert verified["problems"] == []
    assert [p["attached"] for p in verified["policies"][0]["programs"]] == [True, True]


def test_link_info_target_and_metadata_agree_with_bpftool(engine, objects):
    record = loader.apply("p", objects["counter"])["record"]
    for prog in record["programs"]:
        with libbpf.pinned(prog["pin"]) as fd:
            info = libbpf.link_info(fd)
        shown = bpftool("link", "show", "id", str(prog["link_id"]))
        assert (info["id"], info["prog_id"], info["target"], info["type"]) == \
            (shown["id"], shown["prog_id"], shown["tp_name"], shown["type"])
        fd = libbpf.prog_fd_by_id(prog["prog_id"])
        try:
            meta, pinfo = libbpf.prog_metadata(fd, META_PREFIX), libbpf.prog_info(fd)
        finally:
            os.close(fd)
        shown = bpftool("prog", "show", "id", str(prog["prog_id"]))
        assert meta == shown["metadata"] == {"ebpf_oom_policy": "p",
                                             "ebpf_oom_src_sha256": "test-source",
                                             "ebpf_oom_version": "0.0.0-test"}
        assert (pinfo["tag"], pinfo["map_ids"], pinfo["type"]) == \
            (shown["tag"], sorted(shown["map_ids"]), shown["type"])


def test_second_identical_apply_is_unchanged(engine, objects):
    first = loader.apply("p", objects["counter"], globals={"target_pid": 1},
                         maps={"settings": [(1, 2)]})
    second = loader.apply("p", objects["counter"], globals={"target_pid": 1},
                          maps={"settings": [(1, 2)]})
    assert (second["changed"], second["action"], second["map_changes"]) == \
        (False, "unchanged", [])
    assert second["record"] == first["record"]


def test_changed_global_reloads_with_new_programs_and_keeps_map_data(engine, objects):
    first = loader.apply("p", objects["counter"], globals={"target_pid": 1},
                         maps={"counters": [(3, 42)]})
    second = loader.apply("p", objects["counter"], globals={"target_pid": 2})
    assert (second["changed"], second["action"]) == (True, "reloaded")
    assert set(prog_ids(second)).isdisjoint(prog_ids(first))
    assert second["record"]["pinned_maps"] == first["record"]["pinned_maps"]
    assert counters(engine)[3] == 42
    assert second["record"]["maps"] == {"counters": first["record"]["maps"]["counters"]}
    live = {p["id"] for p in bpftool("prog", "show")}
    assert set(prog_ids(second)) <= live and not set(prog_ids(first)) & live
    assert verify.verify("p")["problems"] == []


def test_changed_map_entry_is_written_in_place(engine, objects):
    first = loader.apply("p", objects["counter"], maps={"settings": [(1, 10), (2, 20)]})
    second = loader.apply("p", objects["counter"], maps={"settings": [(1, 10), (2, 21)]})
    assert (second["changed"], second["action"]) == (True, "maps_updated")
    assert prog_ids(second) == prog_ids(first)
    assert second["map_changes"] == [{"map": "settings", "key": "02000000",
                                      "before": "14000000", "after": "15000000"}]
    dumped = bpftool("map", "dump", "pinned", bpffs.Layout(engine.root, "p").map("settings"))
    assert sorted((e["formatted"]["key"], e["formatted"]["value"]) for e in dumped) == \
        [(1, 10), (2, 21)]
    assert verify.verify("p")["problems"] == []


def test_hash_map_entries_not_given_are_deleted(engine, objects):
    loader.apply("p", objects["counter"], maps={"settings": {1: 1, 2: 2}})
    result = loader.apply("p", objects["counter"], maps={"settings": {2: 2}})
    assert result["map_changes"] == [{"map": "settings", "key": "01000000",
                                      "before": "01000000", "after": None}]


def test_changed_object_replaces_programs_atomically(engine, objects):
    first = loader.apply("p", objects["counter"])
    second = loader.apply("p", objects["counter2"])
    assert (second["changed"], second["action"]) == (True, "replaced")
    assert set(prog_ids(second)).isdisjoint(prog_ids(first))
    assert second["diff"]["before"] == first["record"]
    assert bpffs.Layout(engine.root, "p").entries() == ["link_count_adj", "link_count_kill",
                                                        "map_counters", "map_settings", "record"]
    assert verify.verify("p", object_sha256=second["record"]["object_sha256"])["problems"] == []


def test_verifier_rejection_raises_log_tail_and_keeps_the_old_policy(engine, objects):
    old = loader.apply("p", objects["counter"])
    layout = bpffs.Layout(engine.root, "p")
    with pytest.raises(LoaderError) as err:
        loader.apply("p", objects["rejected"])
    assert "the kernel refused to load policy p" in err.value.message
    assert "invalid access to map value, value_size=8 off=40 size=8" in err.value.log_tail
    assert len(err.value.log_tail.splitlines()) <= libbpf.LOG_TAIL_LINES + libbpf.LIBBPF_TAIL_LINES
    assert bpffs.read_record(layout.record) == old["record"]
    assert verify.verify("p")["problems"] == []
    with libbpf.pinned(layout.link("count_kill")) as fd:
        assert libbpf.link_info(fd)["prog_id"] in prog_ids(old)
    assert not os.path.exists(layout.staging)


def test_verifier_rejection_of_a_new_policy_leaves_nothing(engine, objects):
    before = kernel_objects()
    with pytest.raises(LoaderError):
        loader.apply("p", objects["rejected"])
    assert verify.verify("p")["problems"] == ["policy p is not loaded (no %s/p)" % engine.root]
    assert new_objects(before) == {"progs": [], "maps": [], "links": []}


def test_unknown_global_or_map_is_refused_before_any_change(engine, objects):
    with pytest.raises(LoaderError, match="no const volatile global 'nope'.*target_pid"):
        loader.apply("p", objects["counter"], globals={"nope": 1})
    with pytest.raises(LoaderError, match="no map 'nope' \\(it has: counters, settings\\)"):
        loader.apply("p", objects["counter"], maps={"nope": []})
    assert not os.path.exists(os.path.join(engine.root, "p"))


@pytest.mark.parametrize("owner,mode,why", [
    (1000, 0o644, "owned by uid 1000: only a file owned by root"),
    (0, 0o664, "group-writable"),
    (0, 0o646, "world-writable"),
])
def test_object_that_is_not_trusted_is_refused_before_any_change(engine, objects, tmp_path, owner, mode, why):
    obj = tmp_path / "untrusted.o"
    with open(objects["counter"], "rb") as handle:
        obj.write_bytes(handle.read())
    os.chown(str(obj), owner, owner)
    os.chmod(str(obj), mode)
    before = kernel_objects()
    with pytest.raises(LoaderError, match="refusing to load the object: %s is %s" % (obj, why)):
        loader.apply("p", str(obj))
    assert new_objects(before) == {"progs": [], "maps": [], "links": []}
    assert not os.path.exists(os.path.join(engine.root, "p"))


def test_kernel_without_the_hook_raises_unsupported_kernel_naming_it(engine, objects):
    hook = ["bpf_oom_evaluate_task", "bpf_set_policy_name", "set_oom_policy_name"]
    assert not any(libbpf.vmlinux_btf_has(name, "func") for name in hook)
    before = kernel_objects()
    with pytest.raises(UnsupportedKernel) as err:
        loader.apply("p", objects["needs_hook"])
    assert err.value.missing == hook
    assert new_objects(before) == {"progs": [], "maps": [], "links": []}
    assert not os.path.exists(os.path.join(engine.root, "p"))


def test_bpffs_that_cannot_be_mounted_is_a_clear_error(engine, objects, monkeypatch, tmp_path):
    nowhere = tmp_path / "no-such-dir"
    monkeypatch.setenv("EBPF_OOM_BPFFS_ROOT", str(nowhere / "ebpf_oom"))
    with pytest.raises(LoaderError, match="bpffs is not mounted at %s and mounting it "
                       "failed: No such file or directory" % nowhere):
        loader.apply("p", objects["counter"])
    assert not nowhere.exists()


@pytest.mark.parametrize("where", ["/srv", "shared", "busy"])
def test_bpffs_is_never_mounted_over_a_directory_others_use(engine, objects, monkeypatch, tmp_path, where):
    """EBPF_OOM_BPFFS_ROOT=/srv/x must not hide /srv: outside /sys/fs/bpf, bpffs goes only
    on an empty directory inside a private one."""
    if where == "/srv":
        mount = "/srv"
        assert os.path.isdir(mount) and not bpffs.is_bpffs(mount)
    elif where == "shared":  # an empty directory, but in a directory others can enter
        (tmp_path / "shared").mkdir(mode=0o755)
        (tmp_path / "shared" / "bpffs").mkdir()
        mount = str(tmp_path / "shared" / "bpffs")
    else:  # a directory with something in it
        (tmp_path / "busy").mkdir()
        (tmp_path / "busy" / "data").write_text("kept")
        mount = str(tmp_path / "busy")
    monkeypatch.setenv("EBPF_OOM_BPFFS_ROOT", os.path.join(mount, "x"))
    before = sorted(os.listdir(mount))
    try:
        with pytest.raises(LoaderError, match="bpffs is not mounted at %s and mounting it failed" % mount):
            loader.apply("p", objects["counter"])
        assert not bpffs.is_bpffs(mount) and sorted(os.listdir(mount)) == before
    finally:
        if bpffs.is_bpffs(mount):  # a regression must not leave the mount behind
            subprocess.run(["umount", mount], check=True)


def test_check_mode_reports_but_changes_nothing(engine, objects):
    planned = loader.apply("p", objects["counter"], check_mode=True)
    assert (planned["changed"], planned["action"]) == (True, "created")
    assert not os.path.exists(engine.root) and not os.path.exists(engine.state)
    first = loader.apply("p", objects["counter"], maps={"settings": [(1, 1)]})
    planned = loader.apply("p", objects["counter"], globals={"target_pid": 3}, check_mode=True)
    assert (planned["changed"], planned["action"]) == (True, "reloaded")
    planned = loader.apply("p", objects["counter"], maps={"settings": [(1, 2)]}, check_mode=True)
    assert planned["action"] == "maps_updated" and planned["map_changes"] == [
        {"map": "settings", "key": "01000000", "before": "01000000", "after": "02000000"}]
    removed = loader.remove("p", check_mode=True)
    assert removed["changed"]
    assert bpffs.read_record(bpffs.Layout(engine.root, "p").record) == first["record"]
    assert verify.verify("p")["problems"] == []


# ---------------------------------------------------------------- verify

def test_verify_lists_every_discrepancy(engine, objects):
    # Tracing links cannot be detached (BPF_LINK_DETACH: EOPNOTSUPP), so a link that
    # no longer runs the policy's program is made by pinning another link there.
    record = loader.apply("p", objects["counter"])["record"]
    kill = [p for p in record["programs"] if p["name"] == "count_kill"][0]
    layout = bpffs.Layout(engine.root, "p")
    os.unlink(layout.link("count_adj"))
    other = libbpf.Object(objects["counter2"])
    try:
        other.set_global("bpf_metadata_ebpf_oom_policy", "p")
        other.load()
        prog = [p for p in other.programs() if p.name == "count_kill"][0]
        foreign = prog.attach()
        os.unlink(layout.link("count_kill"))
        foreign.pin(layout.link("count_kill"))
        foreign_link, foreign_prog = libbpf.link_info(foreign.fd), libbpf.prog_info(prog.fd)
        foreign.close()
        result = verify.verify("p", object_sha256="0" * 64, policy_name="other")
    finally:
        other.close()
    assert sorted(result["problems"]) == sorted([
        "program count_adj: link pin %s is missing" % layout.link("count_adj"),
        "program count_kill: pin holds link %d, recorded link %d"
        % (foreign_link["id"], kill["link_id"]),
        "program count_kill: link runs program id %d, recorded %d"
        % (foreign_prog["id"], kill["prog_id"]),
        "program count_kill: tag %s, recorded %s" % (foreign_prog["tag"], kill["tag"]),
        "policy p runs object sha256 %s, expected %s" % (record["object_sha256"], "0" * 64),
        "policy p reports policy name 'p', expected 'other'",
    ])
    facts = {p["name"]: p["attached"] for p in result["policies"][0]["programs"]}
    assert facts == {"count_kill": False, "count_adj": False}


def test_verify_reports_map_drift_and_stray_pins(engine, objects):
    loader.apply("p", objects["counter"], maps={"settings": [(1, 1)]})
    layout = bpffs.Layout(engine.root, "p")
    with libbpf.pinned(layout.map("settings")) as fd:
        libbpf.map_update(fd, libbpf.pack(1, 4), libbpf.pack(9, 4))
    bpffs.make_dir(layout.staging)
    problems = verify.verify()["problems"]
    assert problems == ["map settings: key 01000000 holds 09000000, expected 01000000",
                        "policy p: unexpected entry %s" % layout.staging]


def test_verify_of_an_unknown_policy_is_a_problem(engine, objects):
    assert verify.verify("ghost")["problems"] == \
        ["policy ghost is not loaded (no %s/ghost)" % engine.root]


@pytest.mark.parametrize("pin", ["link_count_adj", "map_settings"])
def test_apply_repairs_a_policy_whose_pin_went_missing(engine, objects, pin):
    first = loader.apply("p", objects["counter"], maps={"settings": {1: 2}})
    os.unlink(os.path.join(engine.root, "p", pin))
    assert verify.verify("p")["problems"]
    again = loader.apply("p", objects["counter"], maps={"settings": {1: 2}})
    assert (again["changed"], again["action"]) == (True, "reloaded")
    assert set(prog_ids(again)).isdisjoint(prog_ids(first))
    assert verify.verify("p")["problems"] == []


# ---------------------------------------------------------------- remove

def test_remove_leaves_no_pin_link_program_or_map(engine, objects):
    before = kernel_objects()
    result = loader.apply("p", objects["counter"], maps={"settings": [(1, 1)]})
    created = added_since(before)
    assert created["progs"] == prog_ids(result)
    assert len(created["links"]) == 2 and len(created["maps"]) == 4  # 2 own, .rodata, record
    removed = loader.remove("p")
    assert removed["changed"] and removed["diff"]["before"] == result["record"]
    assert new_objects(before) == {"progs": [], "maps": [], "links": []}
    assert os.listdir(engine.root) == []
    assert not os.path.exists(os.path.join(engine.state, "policies", "p"))


def test_remove_of_an_unknown_policy_is_not_a_change(engine, objects):
    assert loader.remove("ghost")["changed"] is False
    loader.apply("p", objects["counter"])
    assert loader.remove("ghost")["changed"] is False
    assert verify.verify("p")["problems"] == []


def test_200_apply_replace_remove_cycles_leave_nothing_behind(engine, objects):
    before = kernel_objects()
    for cycle in range(200):
        assert loader.apply("p", objects["counter"], maps={"settings": {cycle: 1}})["action"] \
            == "created"
        assert loader.apply("p", objects["counter2"])["action"] == "replaced"
        assert loader.remove("p")["changed"]
    assert new_objects(before) == {"progs": [], "maps": [], "links": []}
    assert os.listdir(engine.root) == []


# ---------------------------------------------------------------- persistence

def test_persist_keeps_object_and_record_root_only(engine, objects):
    result = loader.apply("p", objects["counter"], globals={"target_pid": 4})
    base = os.path.join(engine.state, "policies", "p")
    for path, mode in ((engine.state, 0o700), (os.path.dirname(base), 0o700), (base, 0o700),
                       (os.path.join(base, "object.o"), 0o600),
                       (os.path.join(base, "record.json"), 0o600)):
        assert stat.S_IMODE(os.stat(path).st_mode) == mode, path
    with open(os.path.join(base, "record.json")) as handle:
        assert json.load(handle) == result["record"]
    with open(os.path.join(base, "object.o"), "rb") as handle, \
            open(objects["counter"], "rb") as orig:
        assert handle.read() == orig.read()
    unpersisted = loader.apply("p", objects["counter"], globals={"target_pid": 4}, persist=False)
    assert (unpersisted["changed"], unpersisted["action"]) == (True, "persisted")
    assert not os.path.exists(base)


def test_restore_all_reloads_every_persisted_policy_with_its_globals_and_maps(engine, objects):
    loader.apply("p", objects["counter"], globals={"target_pid": 4},
                 maps={"settings": [(5, 6)]})
    loader.apply("q", objects["counter2"])
    subprocess.run(["umount", engine.mount], check=True)   # what a reboot does to bpffs
    assert pins.list_policies() == []
    ok, failed = restore.restore_all()
    assert (ok, failed) == (["p", "q"], {})
    assert [r["name"] for r in pins.list_policies()] == ["p", "q"]
    record = bpffs.read_record(bpffs.Layout(engine.root, "p").record)
    assert record["globals"] == {"target_pid": 4}
    assert record["maps"] == {"settings": [["05000000", "06000000"]]}
    assert verify.verify()["problems"] == []


def test_restore_all_reports_a_corrupt_object_and_restores_the_rest(engine, objects):
    loader.apply("p", objects["counter"])
    loader.apply("q", objects["counter2"])
    with open(os.path.join(engine.state, "policies", "p", "object.o"), "ab") as handle:
        handle.write(b"junk")
    subprocess.run(["umount", engine.mount], check=True)
    ok, failed = restore.restore_all()
    assert ok == ["q"] and list(failed) == ["p"]
    assert "does not match the recorded object sha256" in failed["p"]


@pytest.mark.parametrize("meanwhile", ["applied", "removed"])
def test_a_policy_changed_while_the_boot_restore_reads_it_keeps_the_change(
        engine, objects, monkeypatch, meanwhile):
    """The restore reads the kept copy (globals target_pid 4), then a playbook applies the
    policy with target_pid 9, or removes it, before the restore loads: the restore sees
    the copy changed (it reads it again with the lock held that every apply and removal
    takes) and keeps the change, live and on disk (it used to put the old one back)."""
    loader.apply("p", objects["counter"], globals={"target_pid": 4})
    subprocess.run(["umount", engine.mount], check=True)   # a reboot: only the copy is left
    real = backends.apply_record

    def playbook_first(*args, **kwargs):
        if meanwhile == "applied":
            loader.apply("p", objects["counter"], globals={"target_pid": 9})
        else:
            loader.remove("p")
        return real(*args, **kwargs)

    monkeypatch.setattr(backends, "apply_record", playbook_first)
    ok, failed = restore.restore_all()
    assert (ok, failed) == (["p"], {})
    if meanwhile == "applied":
        live = bpffs.read_record(bpffs.Layout(engine.root, "p").record)
        assert live["globals"] == {"target_pid": 9}
        assert state.load("p")[1]["globals"] == {"target_pid": 9}
    else:
        assert pins.list_policies() == [] and not state.saved("p")


MALFORMED_RECORDS = {  # what a record.json may hold after a bad copy, an edit or a bug
    "a JSON list": lambda rec: [rec],
    "not JSON": lambda rec: "{not json",
    "a document with a pid as text": lambda rec: dict(rec, document={
        "name": "p", "rules": [{"match": {"pid": "1"}, "action": "protect"}]}),
    "a document whose rules are a mapping": lambda rec: dict(rec, document={
        "name": "p", "rules": {"match": {"comm": 5}}}),
    "a document with a comm that is a number": lambda rec: dict(rec, document={
        "name": "p", "rules": [{"match": {"comm": 5}, "action": "protect"}]}),
    "an unknown backend": lambda rec: dict(rec, backend="bogus", document={"name": "p", "rules": []}),
    "maps as a list": lambda rec: dict(rec, maps=[1]),
    "globals as a list": lambda rec: dict(rec, globals=[1]),
}


@pytest.mark.parametrize("what", sorted(MALFORMED_RECORDS))
def test_restore_all_reports_a_malformed_record_and_restores_the_rest(engine, objects, what):
    loader.apply("p", objects["counter"])
    loader.apply("q", objects["counter2"])
    path = os.path.join(engine.state, "policies", "p", "record.json")
    with open(path) as handle:
        malformed = MALFORMED_RECORDS[what](json.load(handle))
    with open(path, "w") as handle:
        handle.write(malformed if isinstance(malformed, str) else json.dumps(malformed))
    subprocess.run(["umount", engine.mount], check=True)
    ok, failed = restore.restore_all()
    assert ok == ["q"] and list(failed) == ["p"]
    assert failed["p"]
    assert [r["name"] for r in pins.list_policies()] == ["q"]
    assert verify.verify("q")["problems"] == []


def test_pinned_link_stays_attached_after_the_loading_process_exits(engine, objects):
    writer = subprocess.Popen([sys.executable, "-c",
                               "import os, sys; print(os.getpid(), flush=True); sys.stdin.readline();"
                               "open('/proc/self/oom_score_adj', 'w').write('0')"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(writer.stdout.readline())
        apply_code = ("import json, sys\n"
                      "from ansible_collections.ebpf.oom.plugins.module_utils import loader\n"
                      "r = loader.apply('p', sys.argv[1], globals={'target_pid': int(sys.argv[2])})\n"
                      "print(json.dumps(r['record']))\n")
        done = subprocess.run([sys.executable, "-c", apply_code, objects["counter"], str(pid)],
                              check=True, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=COLLECTIONS))
        record = json.loads(done.stdout)
        links = {link["id"]: link for link in bpftool("link", "show")}
        for prog in record["programs"]:
            assert links[prog["link_id"]]["prog_id"] == prog["prog_id"]
        assert counters(engine)[ADJ_WRITES] == 0
        writer.communicate("go\n", timeout=30)
        assert writer.returncode == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    write_oom_score_adj_in_child()   # another pid: filtered out by target_pid
    assert counters(engine)[ADJ_WRITES] == 1


# ---------------------------------------------------------------- a real OOM

def memcg_place(name):
    """(path, [(limit file, value), in the order to write them]) of a memory cgroup
    limited to MEMCG_LIMIT with no swap: in the cgroup v1 memory hierarchy when this host
    mounts one, else in the cgroup v2 hierarchy, whose root then gives its children the
    memory controller (as tests/host/hosthelpers.py's OOM_CHILD makes its own)."""
    if os.path.isfile(os.path.join(MEMCG_V1, "memory.limit_in_bytes")):
        return os.path.join(MEMCG_V1, name), [("memory.limit_in_bytes", MEMCG_LIMIT),
                                              ("memory.memsw.limit_in_bytes", MEMCG_LIMIT)]
    point = cgroups.cgroup2_mount()
    assert point, "the memcg OOM test needs a memory controller: at %s or in cgroup v2" % MEMCG_V1
    with open(os.path.join(point, "cgroup.controllers")) as handle:
        assert "memory" in handle.read().split(), \
            "the memcg OOM test needs the memory controller of cgroup v2 at %s" % point
    with open(os.path.join(point, "cgroup.subtree_control"), "w") as handle:
        handle.write("+memory")
    return os.path.join(point, name), [("memory.max", MEMCG_LIMIT), ("memory.swap.max", 0)]


@pytest.fixture
def memcg():
    """A memory cgroup limited to MEMCG_LIMIT (memcg_place), removed at teardown."""
    path, limits = memcg_place("ebpf-oom-test-%d" % os.getpid())
    os.mkdir(path)
    try:
        for name, value in limits:
            if os.path.exists(os.path.join(path, name)):  # no swap accounting: no swap
                with open(os.path.join(path, name), "w") as handle:
                    handle.write(str(value))
        yield path
    finally:
        remove_cgroup(path)


def test_mark_victim_program_fires_on_a_real_memcg_oom(engine, objects, memcg):
    loader.apply("p", objects["counter2"])
    assert counters(engine)[KILLS] == 0
    hog = subprocess.Popen([sys.executable, "-c",
                            "import sys\nsys.stdin.readline()\nheap = []\n"
                            "while True:\n    heap.append(b'x' * (1 << 20))\n"],
                           stdin=subprocess.PIPE, text=True)
    try:
        with open(os.path.join(memcg, "cgroup.procs"), "w") as handle:
            handle.write(str(hog.pid))
        hog.stdin.write("go\n")
        hog.stdin.flush()
        assert hog.wait(timeout=120) == -9
    finally:
        if hog.poll() is None:
            hog.kill()
            hog.wait()
    values = counters(engine)
    assert values[KILLS] >= 1
    assert values[VARIANT_SEEN] == 2 * values[KILLS]


def test_integer_global_given_as_decimal_text_is_packed_as_a_number(objects):
    # Ansible's templating hands numbers over as text ("{{ pid }}" -> "1234").
    obj = libbpf.Object(objects["counter"])
    try:
        obj.set_global("target_pid", "1234")
        assert obj.get_global("target_pid") == (1234).to_bytes(4, "little")
        obj.set_global("bpf_metadata_ebpf_oom_policy", "1234")
        assert obj.get_global("bpf_metadata_ebpf_oom_policy").rstrip(b"\0") == b"1234"
        with pytest.raises(libbpf.BpfError, match="target_pid|invalid literal"):
            obj.set_global("target_pid", "twelve")
    finally:
        obj.close()
