"""Pure logic of the engine: packing, globals, map plans, link checks, record encoding,
the layout's directories."""

import os
import stat

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import bpffs, libbpf, loader, maps, pins
from ansible_collections.ebpf.oom.plugins.module_utils.errors import LoaderError

HASH, ARRAY = libbpf.BPF_MAP_TYPE_HASH, libbpf.BPF_MAP_TYPE_ARRAY


def k4(n):
    return n.to_bytes(4, "little")


# ---------------------------------------------------------------- packing

def test_pack_int_little_endian_to_size():
    assert libbpf.pack(0x0102, 4) == b"\x02\x01\x00\x00"


def test_pack_negative_int_is_twos_complement():
    assert libbpf.pack(-1, 2) == b"\xff\xff"


@pytest.mark.parametrize("value,size", [(256, 1), (-129, 1), (1 << 32, 4)])
def test_pack_refuses_int_that_does_not_fit(value, size):
    with pytest.raises(ValueError, match="does not fit in %d bytes" % size):
        libbpf.pack(value, size)


def test_pack_str_is_utf8_nul_padded():
    assert libbpf.pack("ab", 4) == b"ab\0\0"


def test_pack_refuses_too_long_bytes():
    with pytest.raises(ValueError, match="3 bytes long, more than its 2 bytes"):
        libbpf.pack(b"abc", 2)


def test_pack_bool_is_int():
    assert libbpf.pack(True, 1) == b"\x01"


def test_pack_refuses_other_types():
    with pytest.raises(ValueError, match="not float"):
        libbpf.pack(1.5, 4)


def test_normalize_globals_sorts_and_turns_bools_into_ints():
    assert loader.normalize_globals({"b": True, "a": "x"}) == {"a": "x", "b": 1}
    assert list(loader.normalize_globals({"b": 1, "a": 2})) == ["a", "b"]


def test_normalize_globals_refuses_floats():
    with pytest.raises(LoaderError, match="global x: value must be an int or a str"):
        loader.normalize_globals({"x": 1.0})


# ---------------------------------------------------------------- map plans

def spec(mtype=HASH, entries=(), max_entries=4):
    return maps.map_spec("m", mtype, 4, 4, max_entries, list(entries))


def test_map_spec_accepts_a_dict_of_entries():
    assert maps.map_spec("m", HASH, 4, 4, 4, {1: 2})["entries"] == {k4(1): k4(2)}


def test_map_spec_refuses_duplicate_keys():
    with pytest.raises(LoaderError, match="key 1 given twice"):
        spec(entries=[(1, 1), (1, 2)])


def test_map_spec_refuses_array_index_out_of_range():
    with pytest.raises(LoaderError, match="out of range"):
        spec(ARRAY, [(4, 1)])


def test_map_spec_refuses_more_entries_than_the_map_holds():
    with pytest.raises(LoaderError, match="3 entries given, it holds at most 2"):
        spec(entries=[(1, 1), (2, 2), (3, 3)], max_entries=2)


def test_map_spec_refuses_unmanaged_map_types():
    with pytest.raises(LoaderError, match="only hash, lru_hash and array"):
        maps.map_spec("rb", 27, 0, 0, 4096, [])


def test_map_spec_refuses_malformed_entry():
    with pytest.raises(LoaderError, match="pair"):
        spec(entries=[(1, 2, 3)])


def test_map_spec_names_the_value_that_does_not_fit():
    with pytest.raises(LoaderError, match="map m value for key 1"):
        spec(entries=[(1, 1 << 40)])


def test_plan_hash_deletes_unlisted_adds_new_changes_different():
    current = {k4(1): k4(10), k4(2): k4(20), k4(3): k4(30)}
    plan = maps.plan_map(spec(entries=[(2, 20), (3, 31), (4, 40)]), current)
    assert plan == [(k4(1), k4(10), None), (k4(3), k4(30), k4(31)), (k4(4), None, k4(40))]


def test_plan_hash_equal_contents_is_empty():
    assert maps.plan_map(spec(entries=[(1, 1)]), {k4(1): k4(1)}) == []


def test_plan_array_zeroes_unlisted_indexes():
    current = {k4(i): k4(i + 1) for i in range(4)}
    plan = maps.plan_map(spec(ARRAY, [(1, 2)]), current)
    assert plan == [(k4(0), k4(1), k4(0)), (k4(2), k4(3), k4(0)), (k4(3), k4(4), k4(0))]


def test_map_changes_out_uses_hex_and_none():
    out = maps.map_changes_out("m", [(k4(1), None, k4(2))])
    assert out == [{"map": "m", "key": "01000000", "before": None, "after": "02000000"}]


def test_record_maps_round_trip_through_spec_from_record():
    s = spec(entries=[(2, 5), (1, 7)])
    back = maps.spec_from_record(s, maps.record_maps(s))
    assert back["entries"] == s["entries"]
    assert maps.record_maps(s) == [["01000000", "07000000"], ["02000000", "05000000"]]


# ---------------------------------------------------------------- link checks

RECORDED = {"name": "p", "link_id": 5, "prog_id": 9, "attach_type": "trace_raw_tp",
            "target": "mark_victim"}


def live(**changes):
    info = {"id": 5, "prog_id": 9, "attach_type": "trace_raw_tp", "target": "mark_victim"}
    info.update(changes)
    return info


def test_links_match_live_link_as_recorded():
    assert pins.links_match(RECORDED, live()) == []


def test_links_match_lists_every_discrepancy():
    problems = pins.links_match(RECORDED, live(id=6, prog_id=10, target="oom_kill"))
    assert problems == ["program p: pin holds link 6, recorded link 5",
                        "program p: link runs program id 10, recorded 9",
                        "program p: target is oom_kill, expected mark_victim"]


def test_links_match_reports_detached_link():
    assert pins.links_match(RECORDED, live(prog_id=0)) == \
        ["program p: link 5 is detached (no program)"]


# ---------------------------------------------------------------- record encoding

def test_record_encoding_is_padded_json_that_decodes_back():
    record = {"name": "p", "programs": [{"x": 1}]}
    value = bpffs.encode_record(record)
    assert len(value) % bpffs.RECORD_ALIGN == 0 and value.endswith(b"\0")
    assert bpffs.decode_record(value) == record


def test_layout_paths():
    layout = bpffs.Layout("/r", "p")
    assert layout.link("prog") == "/r/p/link_prog"
    assert layout.map("m", staging=True) == "/r/p/staging/map_m"
    assert layout.record == "/r/p/record"


def test_roots_follow_environment(monkeypatch):
    monkeypatch.setenv("EBPF_OOM_BPFFS_ROOT", "/x/bpf/root")
    monkeypatch.setenv("EBPF_OOM_STATE_DIR", "/x/state")
    assert bpffs.roots() == ("/x/bpf/root", "/x/state")
    assert bpffs.mount_point("/x/bpf/root") == "/x/bpf"


def test_default_root_mounts_at_sys_fs_bpf(monkeypatch):
    monkeypatch.delenv("EBPF_OOM_BPFFS_ROOT", raising=False)
    root = bpffs.roots()[0]
    assert root == "/sys/fs/bpf/ebpf_oom" and bpffs.mount_point(root) == "/sys/fs/bpf"


def test_make_dir_fixes_the_mode_of_the_directory_itself_never_through_a_link(tmp_path):
    made = tmp_path / "made"
    bpffs.make_dir(str(made))
    assert stat.S_IMODE(os.stat(str(made)).st_mode) == bpffs.DIR_MODE
    made.chmod(0o755)
    bpffs.make_dir(str(made))
    assert stat.S_IMODE(os.stat(str(made)).st_mode) == bpffs.DIR_MODE
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    os.symlink(str(elsewhere), str(tmp_path / "link"))
    with pytest.raises(bpffs.BpffsError, match="exists and is not a directory"):
        bpffs.make_dir(str(tmp_path / "link"))
    assert stat.S_IMODE(os.stat(str(elsewhere)).st_mode) == 0o755
