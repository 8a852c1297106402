"""Cgroup rules follow their paths, on this host's own kernel: the generic program's
programs on the cgroup_mkdir and cgroup_rmdir tracepoints (tp_btf, which this kernel
loads) keep, per rule, the id of the cgroup living at the rule's path, and the loader
fills in what exists when they attach (cgrouprules.sync).

The object is bpf/generic.bpf.c with only those two programs loaded (the hook's own
need the hook kernel: tests/vm shows them deciding real OOMs). Cgroups are made in a
cgroup v2 hierarchy: the host's, or, on a host that mounts cgroup v1 only, the v2
hierarchy mounted for the test on a directory of its own. Each test gets a bpffs root
and a state dir of its own.
"""

import os
import subprocess
import uuid

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import (
    abi, bpffs, cgrouprules, libbpf, loader, renderer, verify)
from ansible_collections.ebpf.oom.plugins.plugin_utils.bundled import compile_generic

POLICY = "cgrules"


@pytest.fixture(scope="module")
def generic(tmp_path_factory):
    return compile_generic(cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def roots(private_roots):
    yield
    loader.remove(POLICY)


@pytest.fixture(scope="module")
def v2(cgroup_v2):
    return cgroup_v2


class Followed:
    """The policy's rules as the kernel keeps them: rule index -> live cgroup id."""

    def __init__(self, generic, document, also=None):
        self.rendered = renderer.render(document)
        rules = self.rendered.cgroup_rules

        def after_attach(map_fd):
            cgrouprules.sync(map_fd(abi.LIVE_MAP), rules)
            if also is not None:
                also(map_fd)

        self.result = loader.apply(POLICY, generic, globals=self.rendered.globals,
                                   maps=self.rendered.maps, persist=False,
                                   programs=list(abi.CGROUP_PROGRAMS),
                                   after_attach=after_attach, derived=(abi.LIVE_MAP,))
        self.pin = bpffs.Layout(bpffs.roots()[0], POLICY).map(abi.LIVE_MAP)

    def live(self):
        with libbpf.pinned(self.pin) as fd:
            return cgrouprules.live(fd, self.rendered.cgroup_rules)

    def entries(self):
        """Every non-zero entry of oom_rule_cgroups: {rule index: id}."""
        with libbpf.pinned(self.pin) as fd:
            return dict((int.from_bytes(k, "little"), int.from_bytes(v, "little"))
                        for k, v in libbpf.map_items(fd, 4, 8) if int.from_bytes(v, "little"))


def doc(*paths):
    return {"name": POLICY, "rules": [{"match": {"cgroup": p}, "action": "prefer", "tier": i + 1}
                                      for i, p in enumerate(paths)]}


def ino(point, path):
    return os.stat(os.path.join(point, path.lstrip("/"))).st_ino


def test_a_cgroup_made_after_the_policy_is_matched(roots, generic, v2):
    point, top = v2
    rule = top + "/late"
    followed = Followed(generic, doc(rule))
    assert followed.result["action"] == "created"
    assert followed.live() == {rule: []}
    os.mkdir(os.path.join(point, rule.lstrip("/")))
    try:
        assert followed.live() == {rule: [ino(point, rule)]}
    finally:
        os.rmdir(os.path.join(point, rule.lstrip("/")))
    assert followed.live() == {rule: []}


def test_a_cgroup_removed_and_made_again_is_matched_under_its_new_id(roots, generic, v2):
    point, top = v2
    rule = top + "/again"
    path = os.path.join(point, rule.lstrip("/"))
    os.mkdir(path)
    first = os.stat(path).st_ino
    followed = Followed(generic, doc(rule))
    assert followed.live() == {rule: [first]}  # found by the sweep at apply time
    os.rmdir(path)
    os.mkdir(path)
    try:
        second = os.stat(path).st_ino
        assert second != first
        assert followed.live() == {rule: [second]}
    finally:
        os.rmdir(path)


def test_only_the_exact_path_matches(roots, generic, v2):
    """A sibling, a child or a path sharing a prefix is not the rule's cgroup (a child is
    matched at OOM time through its ancestry, not here)."""
    point, top = v2
    rule = top + "/job"
    made = [top + "/jobs", top + "/jo", top + "/other"]
    for path in made:
        os.mkdir(os.path.join(point, path.lstrip("/")))
    try:
        followed = Followed(generic, doc(rule))
        os.mkdir(os.path.join(point, rule.lstrip("/")))
        os.mkdir(os.path.join(point, rule.lstrip("/"), "child"))
        assert followed.live() == {rule: [ino(point, rule)]}
        os.rmdir(os.path.join(point, rule.lstrip("/"), "child"))
        assert followed.live() == {rule: [ino(point, rule)]}
        os.rmdir(os.path.join(point, rule.lstrip("/")))
    finally:
        for path in made:
            os.rmdir(os.path.join(point, path.lstrip("/")))
    assert followed.live() == {rule: []}


def test_cgroups_of_a_v1_hierarchy_at_the_same_path_are_not_matched(roots, generic, v2, tmp_path):
    """A v1 hierarchy's path means another tree: a named one, mounted for the test, gets the
    rule's path and the rule stays empty."""
    point, top = v2
    rule = top + "/v1only"
    v1 = tmp_path / "v1"
    v1.mkdir()
    subprocess.run(["mount", "-t", "cgroup", "-o", "none,name=ebpfoom%s" % uuid.uuid4().hex[:6],
                    "cgroup", str(v1)], check=True)
    try:
        followed = Followed(generic, doc(rule))
        os.makedirs(os.path.join(str(v1), rule.lstrip("/")))
        assert followed.live() == {rule: []}
        os.rmdir(os.path.join(str(v1), rule.lstrip("/")))
        os.rmdir(os.path.join(str(v1), top.lstrip("/")))
    finally:
        subprocess.run(["umount", str(v1)], check=True)


def test_two_hundred_mkdir_rmdir_cycles_leave_the_map_at_its_live_size(roots, generic, v2):
    point, top = v2
    kept, cycled = top + "/kept", top + "/cycled"
    os.mkdir(os.path.join(point, kept.lstrip("/")))
    try:
        followed = Followed(generic, doc(kept, cycled, top + "/never"))
        path = os.path.join(point, cycled.lstrip("/"))
        for _cycle in range(200):
            os.mkdir(path)
            os.rmdir(path)
        assert followed.entries() == {0: ino(point, kept)}
        os.mkdir(path)
        assert followed.entries() == {0: ino(point, kept), 1: os.stat(path).st_ino}
        os.rmdir(path)
    finally:
        os.rmdir(os.path.join(point, kept.lstrip("/")))
    assert followed.entries() == {}


def test_a_changed_document_sweeps_again_for_its_new_paths(roots, generic, v2):
    """A change of rules moves rule indexes and paths: the sweep after the update fills
    what exists under the new paths, and the old ones match nothing."""
    point, top = v2
    a, b = top + "/a", top + "/b"
    for path in (a, b):
        os.mkdir(os.path.join(point, path.lstrip("/")))
    try:
        first = Followed(generic, doc(a))
        assert first.entries() == {0: ino(point, a)}
        second = Followed(generic, doc(top + "/none", b))
        assert second.result["action"] == "reloaded"
        assert second.entries() == {1: ino(point, b)}
        assert second.live() == {top + "/none": [], b: [ino(point, b)]}
    finally:
        for path in (a, b):
            os.rmdir(os.path.join(point, path.lstrip("/")))


def decider(fd, key):
    return int.from_bytes(libbpf.map_lookup(fd, key.to_bytes(4, "little"), 8), "little")


def pinned_ids(record):
    return dict((m["name"], m["map_id"]) for m in record["pinned_maps"])


def test_a_changed_document_never_writes_the_running_rules_and_hands_over_once_filled(
        roots, generic, v2):
    """The rules the running programs read are never written (an OOM while they changed
    would meet half of each document): a new document gets new rule maps, written whole
    and their cgroups filled in while the old programs still decide; then one write of
    the new programs' token into the map both share hands the decision over."""
    point, top = v2
    a, b = top + "/a", top + "/b"
    for path in (a, b):
        os.mkdir(os.path.join(point, path.lstrip("/")))
    layout = bpffs.Layout(bpffs.roots()[0], POLICY)
    seen = {}
    try:
        first = Followed(generic, doc(a))
        old = first.result["record"]
        held = dict((name, libbpf.obj_get(layout.map(name)))
                    for name in (abi.RULES_MAP, abi.CONFIG_MAP, abi.PATHS_MAP, abi.LIVE_MAP))
        try:
            before = dict((name, dict(libbpf.map_items(fd))) for name, fd in held.items())
            with libbpf.pinned(layout.map(abi.DECIDER_MAP)) as fd:
                assert decider(fd, abi.EBPF_OOM_DECIDER_NEXT) == old["token"] != 0

            def handing_over(map_fd):
                seen["token"] = decider(map_fd(abi.DECIDER_MAP), abi.EBPF_OOM_DECIDER_NEXT)
                seen["live"] = dict(libbpf.map_items(map_fd(abi.LIVE_MAP)))

            second = Followed(generic, doc(top + "/none", b), also=handing_over)
            new = second.result["record"]
            assert second.result["action"] == "reloaded"
            assert dict((name, dict(libbpf.map_items(fd))) for name, fd in held.items()) == before
        finally:
            for fd in held.values():
                os.close(fd)
        assert seen["token"] == old["token"]
        assert seen["live"][(1).to_bytes(4, "little")] == ino(point, b).to_bytes(8, "little")
        with libbpf.pinned(layout.map(abi.DECIDER_MAP)) as fd:
            assert decider(fd, abi.EBPF_OOM_DECIDER_NEXT) == new["token"]
        assert new["token"] not in (0, old["token"])
        ids, old_ids = pinned_ids(new), pinned_ids(old)
        assert ids[abi.DECIDER_MAP] == old_ids[abi.DECIDER_MAP]
        assert ids[abi.STATE_MAP] == old_ids[abi.STATE_MAP]
        for name in (abi.RULES_MAP, abi.CONFIG_MAP, abi.PATHS_MAP, abi.LIVE_MAP):
            assert ids[name] != old_ids[name], name
        assert set(p["prog_id"] for p in new["programs"]).isdisjoint(
            p["prog_id"] for p in old["programs"])
        assert second.entries() == {1: ino(point, b)}
        again = Followed(generic, doc(top + "/none", b))
        assert (again.result["action"], again.result["record"]["token"]) == ("unchanged", new["token"])
        assert verify.verify(POLICY)["problems"] == []
        with libbpf.pinned(layout.map(abi.DECIDER_MAP)) as fd:  # as if an apply stopped halfway
            libbpf.map_update(fd, (0).to_bytes(4, "little"), (12345).to_bytes(8, "little"))
        assert verify.verify(POLICY)["problems"] == [
            "policy %s: its OOMs are handed to programs with token 12345, not to the ones its "
            "record names (token %d): an apply did not finish; apply it again" % (POLICY, new["token"])]
    finally:
        for path in (a, b):
            os.rmdir(os.path.join(point, path.lstrip("/")))
