"""An apply killed at any step leaves nothing that the next apply does not clean up, and
two applies at once end with one of them whole.

Each apply under test runs in a child process (CRASH_CHILD) that SIGKILLs itself at a
named step of the loader: after the programs are loaded, after the new pins are in
staging/, after the first pin is renamed over a live one, during the removal of the
pins the new object no longer has, while the state dir's copy is written. Then a rerun,
of the previous object or of the new one, must converge: the record's programs and no
other attached (programs, links and maps counted with bpftool JSON), the policy's pins
and its two state files and nothing else; and a remove leaves nothing.

Uses this host's kernel (tp_btf programs of bpf/testing/counter.bpf.c) and the fixtures
of hosthelpers.py (the test programs, a private bpffs and state dir).
"""

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import bpffs, loader, pins, verify
from hosthelpers import (COLLECTIONS, SETTLE_TIMEOUT, added_since, bpftool, engine, kernel_objects,  # noqa: F401  # pylint: disable=unused-import
                         new_objects, objects)

# The policy runs PREVIOUS; the killed apply replaces it with NEW, which has one program
# fewer (so that the replace has a stale pin to remove) and other map entries.
PREVIOUS = dict(build="counter", programs=None, globals={"target_pid": 1}, maps={"settings": [[1, 1]]})
NEW = dict(build="counter2", programs=["count_kill"], globals={"target_pid": 2}, maps={"settings": [[2, 2]]})
ENTRIES = {"counter": ["link_count_adj", "link_count_kill", "map_counters", "map_settings", "record"],
           "counter2": ["link_count_kill", "map_counters", "map_settings", "record"]}
STEPS = ["after_load", "after_staging_pins", "between_renames", "during_stale_pin_removal",
         "during_state_write"]

CRASH_CHILD = r'''
import json, os, signal, sys
from ansible_collections.ebpf.oom.plugins.module_utils import files, loader
step, spec = sys.argv[1], json.loads(sys.argv[2])


def die(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def then_die(fn):
    def wrapped(*args, **kwargs):
        fn(*args, **kwargs)
        die()
    return wrapped


def during_promote(patch):
    promote = loader._promote_staging

    def wrapped(layout):
        patch()
        promote(layout)
    loader._promote_staging = wrapped


if step == "after_load":
    loader._load = then_die(loader._load)
elif step == "after_staging_pins":
    loader._promote_staging = die
elif step == "between_renames":
    during_promote(lambda: setattr(os, "rename", then_die(os.rename)))
elif step == "during_stale_pin_removal":
    during_promote(lambda: setattr(os, "unlink", die))
elif step == "during_state_write":
    os.fsync = die  # files.write_atomic: the temporary file is written, not yet renamed
elif step != "none":
    raise SystemExit("unknown step " + step)
if step == "none":
    sys.stdin.readline()  # wait for the go
loader.apply("p", spec["object"], globals=spec["globals"], programs=spec["programs"],
             maps=dict((m, [tuple(e) for e in entries]) for m, entries in spec["maps"].items()))
'''


def child(step, spec, objects, **popen):
    """The apply of ``spec`` in a child process that dies at ``step``."""
    spec = dict(spec, object=objects[spec["build"]])
    return subprocess.Popen([sys.executable, "-c", CRASH_CHILD, step, json.dumps(spec)],
                            env=dict(os.environ, PYTHONPATH=COLLECTIONS), **popen)


def apply(spec, objects):
    return loader.apply("p", objects[spec["build"]], globals=spec["globals"], programs=spec["programs"],
                        maps=dict((m, [tuple(e) for e in entries]) for m, entries in spec["maps"].items()))


def built(spec, objects):
    return dict(spec, object=objects[spec["build"]])


def settled(before, record):
    """The kernel objects added since ``before`` once they are the record's (bounded wait:
    what an unpinned link held is freed by a kernel work item)."""
    want = {"progs": sorted(p["prog_id"] for p in record["programs"]),
            "links": sorted(p["link_id"] for p in record["programs"])}
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        now = added_since(before)
        done = dict((k, now[k]) for k in want) == want and len(now["maps"]) == 4
        if done or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


def assert_whole(engine, before, spec, record):
    """The policy runs ``spec`` as recorded, and nothing else of it is attached or pinned."""
    layout = bpffs.Layout(engine.root, "p")
    assert verify.verify("p")["problems"] == []
    assert layout.entries() == ENTRIES[spec["build"]]
    assert record["object_sha256"] == sha256(spec["object"])
    assert record["globals"] == spec["globals"]
    dumped = bpftool("map", "dump", "pinned", layout.map("settings"))
    assert [[e["formatted"]["key"], e["formatted"]["value"]] for e in dumped] == spec["maps"]["settings"]
    now = settled(before, record)
    assert now["progs"] == sorted(p["prog_id"] for p in record["programs"])
    assert now["links"] == sorted(p["link_id"] for p in record["programs"])
    assert len(now["maps"]) == 4  # counters, settings, .rodata, the record


def assert_converged(engine, before, spec, record):
    """Only ``spec``'s policy runs, its state copy is its two files, and a remove leaves
    nothing."""
    assert_whole(engine, before, spec, record)
    base = os.path.join(engine.state, "policies")
    assert os.listdir(base) == ["p"]
    assert sorted(os.listdir(os.path.join(base, "p"))) == ["object.o", "record.json"]
    with open(os.path.join(base, "p", "record.json")) as handle:
        assert json.load(handle) == record
    loader.remove("p")
    assert new_objects(before) == {"progs": [], "maps": [], "links": []}
    assert os.listdir(engine.root) == []


def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@pytest.mark.parametrize("rerun", ["previous", "new"])
@pytest.mark.parametrize("step", STEPS)
def test_an_apply_killed_at_any_step_is_repaired_by_the_next(engine, objects, step, rerun):
    before = kernel_objects()
    apply(PREVIOUS, objects)
    killed = child(step, NEW, objects)
    assert killed.wait(timeout=60) == -9
    spec = PREVIOUS if rerun == "previous" else NEW
    assert_converged(engine, before, built(spec, objects), apply(spec, objects)["record"])


@pytest.mark.parametrize("step", STEPS)
def test_a_first_create_killed_at_any_step_is_seen_and_repaired(engine, objects, step):
    before = kernel_objects()
    killed = child(step, NEW, objects)
    # A first create has no stale pin to remove: that apply runs to its end.
    assert killed.wait(timeout=60) == (0 if step == "during_stale_pin_removal" else -9)
    if os.path.isdir(os.path.join(engine.root, "p")):
        # What the role purges by: every policy directory is listed, with or without a record.
        assert [r["name"] for r in pins.list_policies()] == ["p"]
    assert_converged(engine, before, built(NEW, objects), apply(NEW, objects)["record"])


def test_a_first_create_killed_before_its_record_is_listed_and_removed(engine, objects):
    before = kernel_objects()
    assert child("after_staging_pins", NEW, objects).wait(timeout=60) == -9
    [listed] = pins.list_policies()
    assert listed["name"] == "p" and "no record" in listed["problem"]
    assert loader.remove("p")["changed"]
    assert new_objects(before) == {"progs": [], "maps": [], "links": []}
    assert os.listdir(engine.root) == []


def test_two_applies_at_once_end_with_one_of_them_whole(engine, objects):
    """Two processes apply other objects, globals and map entries to one policy at the same
    moment, ten times: each time the policy is one of them, whole (the bpffs lock)."""
    before = kernel_objects()
    apply(PREVIOUS, objects)
    specs = dict((sha256(objects[s["build"]]), built(s, objects)) for s in (PREVIOUS, NEW))
    for _round in range(10):
        racers = [child("none", spec, objects, stdin=subprocess.PIPE) for spec in (PREVIOUS, NEW)]
        for racer in racers:
            racer.stdin.write(b"go\n")
            racer.stdin.flush()
        assert [racer.wait(timeout=60) for racer in racers] == [0, 0]
        record = bpffs.read_record(bpffs.Layout(engine.root, "p").record)
        assert_whole(engine, before, specs[record["object_sha256"]], record)
    assert_converged(engine, before, specs[record["object_sha256"]], record)
