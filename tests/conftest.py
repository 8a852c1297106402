"""Shared pytest setup: make the checkout importable as ansible_collections.ebpf.oom,
mark tests by their directory, and print where the run's time went."""

import hashlib
import os
import subprocess
import sys
import tempfile
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _collection_root():
    """A directory holding ansible_collections/ebpf/oom -> this checkout (one per
    checkout, so that two checkouts can run their tests at the same time)."""
    here = REPO.split(os.sep)
    if here[-3:-1] == ["ansible_collections", "ebpf"] and here[-1] == "oom":
        return os.sep.join(here[:-3])
    root = os.path.join(tempfile.gettempdir(), "ebpf-oom-collections-%d-%s"
                        % (os.getuid(), hashlib.sha256(REPO.encode()).hexdigest()[:8]))
    link = os.path.join(root, "ansible_collections", "ebpf", "oom")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.realpath(link) != REPO:
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(REPO, link)
    return root


COLLECTIONS = _collection_root()
sys.path.insert(0, COLLECTIONS)
os.environ["ANSIBLE_COLLECTIONS_PATH"] = COLLECTIONS


# ---------------------------------------------------------------- host test fixtures

@pytest.fixture(scope="module")
def cgroup_v2(tmp_path_factory):
    """(mount point, a directory of this module's own in it, as a cgroup path) of a cgroup
    v2 hierarchy: the host's, or, on a host that mounts cgroup v1 only, the v2 hierarchy
    mounted for the tests on a directory of their own (it has no controllers there)."""
    from ansible_collections.ebpf.oom.plugins.module_utils import cgroups

    point = cgroups.cgroup2_mount()
    mounted = None
    if point is None:
        mounted = point = str(tmp_path_factory.mktemp("cgroup2"))
        subprocess.run(["mount", "-t", "cgroup2", "none", point], check=True)
    top = "ebpfoom-test-%s" % uuid.uuid4().hex[:6]
    os.mkdir(os.path.join(point, top))
    try:
        yield point, "/" + top
    finally:
        for path, _dirs, _files in sorted(os.walk(os.path.join(point, top)), reverse=True):
            os.rmdir(path)
        if mounted:
            subprocess.run(["umount", mounted], check=True)


@pytest.fixture
def private_roots(tmp_path, monkeypatch):
    """A bpffs root (mounted by the engine on a directory of the test's own, unmounted at
    the end) and a state dir of the test's own."""
    mount = tmp_path / "bpffs"
    mount.mkdir()
    monkeypatch.setenv("EBPF_OOM_BPFFS_ROOT", str(mount / "ebpf_oom"))
    monkeypatch.setenv("EBPF_OOM_STATE_DIR", str(tmp_path / "state"))
    yield str(mount)
    from ansible_collections.ebpf.oom.plugins.module_utils import bpffs

    if bpffs.is_bpffs(str(mount)):
        subprocess.run(["umount", str(mount)], check=True)


def area(item):
    """The part of the suite a test belongs to: its directory under tests/
    (unit, host, vm, molecule, sanity), or vm/<file> for the VM tests."""
    rel = os.path.relpath(str(item.fspath), os.path.join(REPO, "tests")).split(os.sep)
    if rel[0] == "vm" and len(rel) > 1:
        return "vm/" + os.path.splitext(rel[1])[0]
    return rel[0]


# With workers (pytest-xdist, --dist loadgroup: tests/run), the tests of one guest run on
# one worker, in order, and each worker boots only the guests its tests use. The groups
# go to whichever worker is free: the hook guest's tests, the stock guest's, each
# Molecule scenario (guests of its own) and the host tests (one at a time: they count
# the kernel's BPF objects and OOM kills). They are handed out longest first
# (FIRST, with tests/run's --no-loadscope-reorder; each worker starts with two), so that
# the two workers end close together: Molecule's default scenario and the stock guest's
# tests on one, the hook guest's and the rest on the other. The guest that boots from its
# own disk (the hook_kernel role's test, reboots and all) is a group of its own.
GUEST_GROUPS = (("disk", {"disk_vm"}),
                ("hook", {"hook_vm", "hook_lab", "hook_policies", "global_vm"}),
                ("stock", {"stock_vm", "stock_lab", "vm_factory", "vm_factory_module"}))
FIRST = ("molecule/default", "hook", "stock", "disk", "molecule/stock_kernel", "host")


def guest_group(item):
    if area(item) == "molecule":  # guests of their own: beside either worker's guest
        callspec = getattr(item, "callspec", None)
        return "molecule/" + callspec.id if callspec is not None else "molecule"
    if area(item) == "host":
        return "host"
    used = set(getattr(item, "fixturenames", ()))
    for group, fixtures in GUEST_GROUPS:
        if used & fixtures:
            return group
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Tests under tests/unit, host and vm carry that marker unless they say otherwise;
    tests that use a guest are grouped by it (see GUEST_GROUPS)."""
    for item in items:
        kind = area(item).split("/")[0]
        if kind in ("unit", "host", "vm") and not any(item.iter_markers(name=kind)):
            item.add_marker(getattr(pytest.mark, kind))
        group = guest_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    rank = dict((group, number) for number, group in enumerate(FIRST))
    items.sort(key=lambda item: rank.get(guest_group(item), len(FIRST)))  # stable


_spent = {}  # area -> [seconds, tests]


def pytest_runtest_logreport(report):
    """Wall time per test, setup and teardown included (session guests boot in a setup);
    the reports reach the main process also when workers (pytest-xdist) ran the tests."""
    path = report.nodeid.split("::")[0]
    parts = path.split("/")
    name = parts[1] if len(parts) > 2 else "other"
    if name == "vm" and len(parts) > 2:
        name = "vm/" + os.path.splitext(parts[2])[0]
    row = _spent.setdefault(name, [0.0, 0])
    row[0] += report.duration
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        row[1] += 1


def pytest_terminal_summary(terminalreporter):
    if not _spent:
        return
    write = terminalreporter.write_line
    terminalreporter.section("time per area")
    start = getattr(terminalreporter, "_session_start", None)  # pytest's own clock
    total = start.elapsed().seconds if start is not None else sum(s for s, _c in _spent.values())
    for name, (seconds, count) in sorted(_spent.items(), key=lambda kv: -kv[1][0]):
        write("%-34s %5d tests %8.1f s" % (name, count, seconds))
    write("%-34s %5d tests %8.1f s (wall time of the run; the areas above overlap when "
          "workers run side by side)" % ("all", sum(c for _s, c in _spent.values()), total))
