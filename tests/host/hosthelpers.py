"""What more than one host test module needs: the test programs built for this kernel,
a private bpffs and state dir, bpftool's count of kernel objects, and a memory hog
killed by a real memcg OOM.

The fixtures `objects` and `engine` are imported by name (`from hosthelpers import
engine, objects`) rather than given by a tests/host/conftest.py: pytest would import
that file as the module `conftest`, and the test modules that `from conftest import
REPO` (tests/conftest.py) would get it instead.
"""

import json
import os
import subprocess
import sys
import time
import types

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import bpffs, compiler, loader

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROGS = os.path.join(REPO, "bpf", "testing")  # the host test programs
INCLUDE = os.path.join(REPO, "bpf", "include")  # the bundled CO-RE vmlinux.h
BUILDS = {  # object name: (source, extra clang flags)
    "counter": ("counter.bpf.c", []),
    "counter2": ("counter.bpf.c", ["-DVARIANT=2"]),
    "rejected": ("rejected.bpf.c", []),
    "needs_hook": ("needs_hook.bpf.c", []),
}
PROG_NAMES = {"count_kill", "count_adj", "pick", "name_it"}
MAP_NAMES = {"counters", "settings", "ebpf_oom.rodata", bpffs.RECORD_MAP_NAME}
SETTLE_TIMEOUT = 10.0
COLLECTIONS = os.path.abspath(os.path.join(os.path.dirname(loader.__file__), *[".."] * 5))


# ---------------------------------------------------------------- the engine's programs

@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    assert os.geteuid() == 0, "host tests need root (bpf(), bpffs, cgroups)"
    assert os.path.exists("/sys/kernel/btf/vmlinux"), "host tests need kernel BTF"
    clang = compiler.find_clang()
    out = tmp_path_factory.mktemp("objects")
    paths = {}
    for name, (src, extra) in BUILDS.items():
        paths[name] = str(out / (name + ".o"))
        subprocess.run([clang] + list(compiler.CFLAGS) + extra +
                       ["-I", INCLUDE, "-c", os.path.join(PROGS, src), "-o", paths[name]],
                       check=True)
    return paths


@pytest.fixture
def engine(tmp_path, monkeypatch):
    """Private roots: an (unmounted) mount point for bpffs and a state dir."""
    mount = tmp_path / "bpffs"
    mount.mkdir()
    env = types.SimpleNamespace(mount=str(mount), root=str(mount / "ebpf_oom"),
                                state=str(tmp_path / "state"))
    monkeypatch.setenv("EBPF_OOM_BPFFS_ROOT", env.root)
    monkeypatch.setenv("EBPF_OOM_STATE_DIR", env.state)
    yield env
    if bpffs.is_bpffs(env.mount):
        subprocess.run(["umount", env.mount], check=True)


def bpftool(*args):
    """bpftool's JSON; again when it fails (an object it lists can be freed before it
    shows it, while the kernel releases what was unpinned)."""
    for attempt in range(5):
        done = subprocess.run(["bpftool", "-j"] + list(args), capture_output=True, text=True, check=False)
        if done.returncode == 0 or attempt == 4:
            break
        time.sleep(0.1)
    done.check_returncode()
    return json.loads(done.stdout) if done.stdout.strip() else []


def kernel_objects():
    """Ids of the programs, maps and links that these tests' objects could leave."""
    progs = {p["id"] for p in bpftool("prog", "show") if p.get("name") in PROG_NAMES}
    maps = {m["id"] for m in bpftool("map", "show") if m.get("name") in MAP_NAMES}
    links = {link["id"] for link in bpftool("link", "show") if link.get("prog_id") in progs}
    return {"progs": progs, "maps": maps, "links": links}


def added_since(before):
    now = kernel_objects()
    return {kind: sorted(now[kind] - before[kind]) for kind in now}


def new_objects(before):
    """Objects present now and not in ``before``, once the kernel settled (bounded wait)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        new = added_since(before)
        if not any(new.values()) or time.monotonic() > deadline:
            return new
        time.sleep(0.05)


def remove_cgroup(path, bound=SETTLE_TIMEOUT):
    """rmdir a cgroup once the kernel has let its last process go (bounded wait)."""
    deadline = time.monotonic() + bound
    while True:
        try:
            os.rmdir(path)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# ---------------------------------------------------------------- a real memcg OOM

HOG_LIMIT_MIB = 64
HOG_TIMEOUT_S = 120

# Runs as root with any python3 (also in the VM tests, fed on stdin):
#   python3 - NAME COMM OOM_SCORE_ADJ LIMIT_MIB TIMEOUT_S
# Makes memory cgroup NAME (v1 when the memory controller is mounted there, else v2) with
# a LIMIT_MIB limit and no swap, runs a hog in it that names itself COMM and sets its
# oom_score_adj, waits until the OOM killer kills it, removes the cgroup and prints JSON:
# pid, returncode, memcg (the path as the kernel prints it), memcg_id (its inode).
OOM_CHILD = r'''
import json, os, subprocess, sys, time
name, comm, adj, mib, timeout = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
HOG = """import sys
open("/proc/self/comm", "w").write(sys.argv[1])
open("/proc/self/oom_score_adj", "w").write(sys.argv[2])
hold = []
while True:
    hold.append(b"\\1" * (1 << 20))
"""
def put(path, value):
    with open(path, "w") as f:
        f.write(str(value))
v1 = "/sys/fs/cgroup/memory"
if os.path.isdir(v1) and os.path.exists(os.path.join(v1, "memory.limit_in_bytes")):
    cg = os.path.join(v1, name)
    os.mkdir(cg)
    put(os.path.join(cg, "memory.limit_in_bytes"), mib << 20)
    if os.path.exists(os.path.join(cg, "memory.memsw.limit_in_bytes")):
        put(os.path.join(cg, "memory.memsw.limit_in_bytes"), mib << 20)
else:
    put("/sys/fs/cgroup/cgroup.subtree_control", "+memory")
    cg = os.path.join("/sys/fs/cgroup", name)
    os.mkdir(cg)
    put(os.path.join(cg, "memory.max"), mib << 20)
    if os.path.exists(os.path.join(cg, "memory.swap.max")):
        put(os.path.join(cg, "memory.swap.max"), 0)
out = {"memcg": "/" + name, "memcg_id": os.stat(cg).st_ino}
child = None
try:
    child = subprocess.Popen([sys.executable, "-c", HOG, comm, adj],
                             preexec_fn=lambda: put(os.path.join(cg, "cgroup.procs"), os.getpid()))
    out["pid"] = child.pid
    out["returncode"] = child.wait(timeout=timeout)
finally:
    if child is not None and child.poll() is None:
        child.kill()
        child.wait()
    for _ in range(100):
        try:
            os.rmdir(cg)
            break
        except OSError:
            time.sleep(0.1)
print(json.dumps(out))
'''


def oom_killed_hog(name, comm, adj=0):
    """Run OOM_CHILD here with memory cgroup NAME; returns its JSON (the hog must have
    died of SIGKILL)."""
    proc = subprocess.run([sys.executable, "-c", OOM_CHILD, name, comm, str(adj), str(HOG_LIMIT_MIB),
                           str(HOG_TIMEOUT_S)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=HOG_TIMEOUT_S + 30, check=False)
    assert proc.returncode == 0, proc.stderr
    hog = json.loads(proc.stdout)
    assert hog["returncode"] == -9, "the hog was not OOM-killed: %r" % hog
    return hog
