"""The four modules run for real: ansible-playbook against localhost (connection local) on
this machine's kernel, with the tp_btf programs of bpf/testing (this kernel refuses fmod_ret
and fentry, and has no OOM policy hook, which is itself one of the bad inputs).

Each test uses its own bpffs root (EBPF_OOM_BPFFS_ROOT), state dir and compiler cache,
so nothing outside them changes, and every policy it loads is removed at teardown.
"""

import hashlib
import json
import os
import shutil
import stat
import subprocess

import pytest
import yaml

from ansible_collections.ebpf.oom.plugins.module_utils import bpffs, common
from support import venv_tool

ANSIBLE_PLAYBOOK = venv_tool("ansible-playbook")

# Records every task result as one JSON line (task name, status, result with diff).
CALLBACK = '''
import json, os
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "results_jsonl"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, status, result):
        data = getattr(result, "result", None)
        if data is None:
            data = result._result
        with open(os.environ["RESULTS_JSONL"], "a") as f:
            f.write(json.dumps({"task": result.task_name, "status": status, "result": data},
                               default=str) + "\\n")

    def v2_runner_on_ok(self, result):
        self._write("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write("failed", result)

    def v2_runner_on_skipped(self, result):
        self._write("skipped", result)
'''

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The host test programs (bpf/testing): counter.bpf.c counts OOM kills (program count_kill,
# maps counters and settings, global target_pid), the verifier refuses rejected.bpf.c,
# needs_hook.bpf.c needs the OOM hook that this host's kernel lacks.
PROGRAMS = os.path.join(REPO, "bpf", "testing")
PROGRAM = "count_kill"
LINK = "link_" + PROGRAM


def program_text(name):
    with open(os.path.join(PROGRAMS, name)) as f:
        return f.read()


NAME = "hosttest"


class Host:
    """Playbooks against localhost with this test's roots; results by task name."""

    def __init__(self, tmp_path, cache):
        self.tmp = tmp_path
        self.root = "/sys/fs/bpf/ebpf_oom_t%d" % os.getpid()
        self.state = str(tmp_path / "state")
        self.cache = cache
        self.files = tmp_path / "files"
        self.files.mkdir()
        cb = tmp_path / "callbacks"
        cb.mkdir()
        (cb / "results_jsonl.py").write_text(CALLBACK)
        self.env = dict(os.environ, ANSIBLE_CALLBACK_PLUGINS=str(cb), ANSIBLE_CALLBACKS_ENABLED="results_jsonl",
                        ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0",
                        ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
        self.runs = 0

    def environment(self, **override):
        env = {"EBPF_OOM_BPFFS_ROOT": self.root, "EBPF_OOM_STATE_DIR": self.state,
               "EBPF_OOM_CACHE": self.cache}
        env.update(override)
        return env

    def source(self, name, text=None, mode=0o644):
        """A copy of bpf/testing/<name> (or ``text``) among this test's files."""
        path = self.files / name
        path.write_text(program_text(name) if text is None else text)
        path.chmod(mode)
        return str(path)

    def play(self, tasks, check=False, diff=False, environment=None, inventory="localhost,"):
        """Run the tasks; returns {task name: {"status", "result"}} and the process."""
        self.runs += 1
        book = self.tmp / ("play%d.yml" % self.runs)
        results = self.tmp / ("results%d.jsonl" % self.runs)
        book.write_text(yaml.safe_dump([{
            "hosts": "localhost", "gather_facts": False, "connection": "local",
            "environment": environment or self.environment(), "tasks": tasks,
        }], sort_keys=False))
        argv = [ANSIBLE_PLAYBOOK, "-i", inventory, "-e", "ansible_python_interpreter=/usr/bin/python3",
                str(book)]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        proc = subprocess.run(argv, env=dict(self.env, RESULTS_JSONL=str(results)), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=600, check=False)
        out = {}
        if results.exists():
            for line in results.read_text().splitlines():
                rec = json.loads(line)
                out[rec["task"]] = rec
        return out, proc

    def run(self, tasks, **kw):
        """Like play(), the results only."""
        return self.play(tasks, **kw)[0]

    def policy_dir(self, name=NAME):
        return os.path.join(self.root, name)


def bpftool_json(*args):
    return json.loads(subprocess.run(["bpftool", "-j"] + list(args), check=True, stdout=subprocess.PIPE,
                                     universal_newlines=True).stdout or "null")


def map_contents(pin):
    """{key: value} as ints of the map pinned at pin (bpftool prints raw bytes as hex lists)."""
    def num(v):
        return v if isinstance(v, int) else int.from_bytes(bytes(int(b, 16) for b in v), "little")
    return {num(e["key"]): num(e["value"]) for e in bpftool_json("map", "dump", "pinned", pin)}


def prog_ids_named(name):
    return sorted(p["id"] for p in bpftool_json("prog", "show") if p.get("name") == name)


def pinned_prog_id(link_pin):
    return bpftool_json("link", "show", "pinned", link_pin)["prog_id"]


def tree_snapshot(path):
    """{relative path: (mode, sha256)} of every file under path (missing -> {})."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            st = os.lstat(full)
            out[os.path.relpath(full, path)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    # One compiler cache for the module: the host's vmlinux.h is generated once.
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def host(tmp_path, cache):
    h = Host(tmp_path, cache)
    try:
        yield h
    finally:
        if os.path.isdir(h.root):
            for name in os.listdir(h.root):
                bpffs.remove_tree(os.path.join(h.root, name))
            os.rmdir(h.root)


def compile_task(src, dest, **extra):
    args = dict(src=src, dest=dest, policy_name=NAME)
    args.update(extra)
    return {"name": "compile", "ebpf.oom.compile": args}


def policy_task(obj, **extra):
    args = {"name": NAME, "object": obj}
    args.update(extra)
    return {"name": "policy", "ebpf.oom.policy": args}


def verify_task(**extra):
    args = {"name": NAME, "policy_name": NAME}
    args.update(extra)
    return {"name": "verify", "ebpf.oom.verify": args}


def cycle(host, src, obj, **policy_args):
    return [compile_task(src, obj), policy_task(obj, **policy_args),
            verify_task(object=obj)]


def assert_ok(results, *tasks):
    for task in tasks:
        assert results[task]["status"] == "ok", results[task]["result"].get("msg")


def test_compile_pin_verify_then_a_second_run_changes_nothing(host):
    src = host.source("counter.bpf.c")
    obj = str(host.files / "counter.bpf.o")
    tasks = cycle(host, src, obj, globals={"target_pid": 4242}, maps={"settings": {7: 1, "8": "0x02000000"}})

    first = host.run(tasks)
    assert_ok(first, "compile", "policy", "verify")
    assert first["compile"]["result"]["changed"] and first["policy"]["result"]["changed"]
    assert first["policy"]["result"]["action"] == "created"
    link = os.path.join(host.policy_dir(), LINK)
    assert stat.S_IMODE(os.stat(host.policy_dir()).st_mode) == 0o700
    prog_id = pinned_prog_id(link)
    meta = bpftool_json("prog", "show", "id", str(prog_id)).get("metadata", {})
    assert meta.get("ebpf_oom_policy") == NAME
    assert meta.get("ebpf_oom_src_sha256") == first["compile"]["result"]["source_sha256"]
    assert meta.get("ebpf_oom_version") == common.COLLECTION_VERSION
    assert map_contents(os.path.join(host.policy_dir(), "map_settings")) == {7: 1, 8: 2}
    checked = first["verify"]["result"]["policies"]
    assert [p["name"] for p in checked] == [NAME]

    second, proc = host.play(tasks)
    assert_ok(second, "compile", "policy", "verify")
    assert [second[t]["result"]["changed"] for t in ("compile", "policy", "verify")] == [False] * 3, proc.stdout
    assert second["compile"]["result"]["cached"] is True
    assert second["policy"]["result"]["action"] == "unchanged"
    assert pinned_prog_id(link) == prog_id
    assert "changed=0" in proc.stdout


def test_changed_global_reloads_and_changed_map_entry_is_written_in_place(host):
    src = host.source("counter.bpf.c")
    obj = str(host.files / "counter.bpf.o")
    link = os.path.join(host.policy_dir(), LINK)
    host.play(cycle(host, src, obj, globals={"target_pid": 1}, maps={"settings": {1: 1}}))
    first_id = pinned_prog_id(link)

    maps_only = host.run([policy_task(obj, globals={"target_pid": 1}, maps={"settings": {1: 5}})])
    assert maps_only["policy"]["result"]["action"] == "maps_updated"
    assert pinned_prog_id(link) == first_id

    reload = host.run([policy_task(obj, globals={"target_pid": 2}, maps={"settings": {1: 5}}), verify_task()])
    assert reload["policy"]["result"]["changed"] is True
    assert reload["policy"]["result"]["action"] in ("reloaded", "replaced")
    assert pinned_prog_id(link) != first_id
    assert_ok(reload, "verify")
    assert first_id not in prog_ids_named(PROGRAM)


def test_check_mode_reports_changes_and_changes_nothing(host):
    src = host.source("counter.bpf.c")
    obj = str(host.files / "counter.bpf.o")
    before_cache = tree_snapshot(host.cache)
    fresh = host.run([compile_task(src, obj), policy_task(obj)], check=True, diff=True)
    assert_ok(fresh, "compile", "policy")
    assert fresh["compile"]["result"]["changed"] and fresh["policy"]["result"]["changed"]
    assert not os.path.exists(obj)
    assert not os.path.exists(host.policy_dir())
    assert not os.path.exists(host.state)
    after_cache = tree_snapshot(host.cache)
    assert {k: v for k, v in after_cache.items() if k.startswith("objects")} == \
        {k: v for k, v in before_cache.items() if k.startswith("objects")}

    host.play(cycle(host, src, obj, globals={"target_pid": 1}))
    link = os.path.join(host.policy_dir(), LINK)
    prog_id = pinned_prog_id(link)
    state = tree_snapshot(host.state)
    changed = host.run([policy_task(obj, globals={"target_pid": 2}),
                        {"name": "absent", "ebpf.oom.policy": {"name": NAME, "state": "absent"}}],
                       check=True, diff=True)
    assert changed["policy"]["result"]["changed"] is True
    assert changed["absent"]["result"]["changed"] is True
    assert pinned_prog_id(link) == prog_id
    assert tree_snapshot(host.state) == state


def test_diff_shows_what_changes(host):
    src = host.source("counter.bpf.c")
    obj = str(host.files / "counter.bpf.o")
    res = host.run([compile_task(src, obj), policy_task(obj, globals={"target_pid": 3})], diff=True)
    cdiff = res["compile"]["result"]["diff"]
    assert cdiff["before"]["sha256"] is None
    assert cdiff["after"]["sha256"] == res["compile"]["result"]["object_sha256"]
    pdiff = res["policy"]["result"]["diff"]
    assert pdiff["before"] != pdiff["after"]
    assert "3" in json.dumps(pdiff["after"])


def test_state_absent_removes_every_pin_program_and_map(host):
    src = host.source("counter.bpf.c")
    obj = str(host.files / "counter.bpf.o")
    host.play(cycle(host, src, obj))
    prog_id = pinned_prog_id(os.path.join(host.policy_dir(), LINK))
    map_ids = bpftool_json("prog", "show", "id", str(prog_id))["map_ids"]
    res = host.run([{"name": "absent", "ebpf.oom.policy": {"name": NAME, "state": "absent"}}])
    assert res["absent"]["result"]["changed"] is True
    assert not os.path.exists(host.policy_dir())
    assert prog_id not in [p["id"] for p in bpftool_json("prog", "show")]
    live_maps = [m["id"] for m in bpftool_json("map", "show")]
    assert not set(map_ids) & set(live_maps)


def test_state_absent_of_an_unknown_policy_is_ok_and_unchanged(host):
    res = host.run([{"name": "absent", "ebpf.oom.policy": {"name": "neverloaded", "state": "absent"}}])
    assert res["absent"]["status"] == "ok"
    assert res["absent"]["result"]["changed"] is False


def test_verify_fails_listing_every_discrepancy(host):
    src = host.source("counter.bpf.c")
    obj = str(host.files / "counter.bpf.o")
    host.play(cycle(host, src, obj))
    os.mkdir(os.path.join(host.policy_dir(), "stray"))
    res = host.run([verify_task(object_sha256="0" * 64, policy_name="othername")])
    assert res["verify"]["status"] == "failed"
    problems = res["verify"]["result"]["problems"]
    assert len(problems) == 3, problems
    assert any("0" * 64 in p for p in problems)
    assert any("othername" in p for p in problems)
    assert any("stray" in p for p in problems)
    assert all(p in res["verify"]["result"]["msg"] for p in problems)

    os.rmdir(os.path.join(host.policy_dir(), "stray"))
    os.unlink(os.path.join(host.policy_dir(), LINK))
    res = host.run([verify_task()])
    assert res["verify"]["status"] == "failed"
    assert any(LINK in p and "missing" in p for p in res["verify"]["result"]["problems"])


def test_verify_without_a_name_fails_when_no_policy_is_loaded(host):
    res = host.run([{"name": "verify", "ebpf.oom.verify": {}}])
    assert res["verify"]["status"] == "failed"
    assert res["verify"]["result"]["problems"] == ["no policy is loaded"]


def test_kernel_info_reports_this_host_and_its_policies(host):
    src = host.source("counter.bpf.c")
    obj = str(host.files / "counter.bpf.o")
    host.play(cycle(host, src, obj))
    res = host.run([{"name": "info", "ebpf.oom.kernel_info": {}}], check=True)
    info = res["info"]["result"]
    assert info["changed"] is False
    assert info["btf"] is True
    assert info["hook"] == {common.HOOK_FUNC: False, common.NAME_FUNC: False, common.NAME_KFUNC: False}
    # no hook here: documents are enforced through oom_score_adj
    assert info["backends"] == ["score_adj"] and info["backend"] == "score_adj"
    assert common.HOOK_FUNC in info["unusable"]["evaluate_task"] and info["reasons"] == []
    assert info["bpffs_mounted"] is True
    with open("/proc/sys/net/core/bpf_jit_enable") as f:
        assert info["jit"] == int(f.read())
    assert info["clang"]["version"] and info["libbpf_version"].startswith("1.")
    assert [p["name"] for p in info["policies"]] == [NAME]


# ---- bad inputs: each a clear error, and nothing on the host changed -------------------------

def assert_failed_and_untouched(host, res, task, *fragments, obj=None):
    assert res[task]["status"] == "failed"
    msg = res[task]["result"]["msg"]
    for fragment in fragments:
        assert fragment in msg, msg
    assert not os.path.exists(host.policy_dir())
    assert not os.path.exists(host.state)
    if obj:
        assert not os.path.exists(obj)


def test_missing_source_is_refused(host):
    obj = str(host.files / "x.bpf.o")
    res = host.run([compile_task(str(host.files / "missing.bpf.c"), obj)])
    assert_failed_and_untouched(host, res, "compile", "missing.bpf.c", "No such file", obj=obj)


def test_unreadable_source_is_refused(host):
    obj = str(host.files / "x.bpf.o")
    unreadable = host.files / "dir.bpf.c"
    unreadable.mkdir()
    res = host.run([compile_task(str(unreadable), obj)])
    assert_failed_and_untouched(host, res, "compile", "dir.bpf.c", "not a regular file", obj=obj)


def test_c_syntax_error_names_file_and_line(host):
    text = program_text("counter.bpf.c").replace("return 0;\n}", "return 0\n}")
    src = host.source("broken.bpf.c", text)
    obj = str(host.files / "x.bpf.o")
    res = host.run([compile_task(src, obj)])
    broken = text.splitlines()
    line = [i for i, text in enumerate(broken, 1) if text.strip() == "return 0"][0]
    assert_failed_and_untouched(host, res, "compile", "compiling %s failed" % src, "expected ';'", obj=obj)
    assert "%s:%d:" % (src, line) in res["compile"]["result"]["stderr"]


def test_world_writable_source_is_refused(host):
    src = host.source("open.bpf.c", program_text("counter.bpf.c"), mode=0o666)
    obj = str(host.files / "x.bpf.o")
    res = host.run([compile_task(src, obj)])
    assert_failed_and_untouched(host, res, "compile", "world-writable", obj=obj)


@pytest.mark.parametrize("task", ["compile", "policy"])
def test_policy_name_longer_than_15_bytes_is_refused(host, task):
    src = host.source("counter.bpf.c")
    obj = str(host.files / "counter.bpf.o")
    if task == "policy":
        host.play([compile_task(src, obj)])
        tasks = [{"name": "policy", "ebpf.oom.policy": {"name": "n" * 16, "object": obj}}]
    else:
        tasks = [compile_task(src, obj, policy_name="n" * 16)]
    res = host.run(tasks)
    assert res[task]["status"] == "failed"
    assert "n" * 16 in res[task]["result"]["msg"] and "15" in res[task]["result"]["msg"]
    assert not os.path.exists(os.path.join(host.root, "n" * 16))
    assert not os.path.exists(host.state)
    if task == "compile":
        assert not os.path.exists(obj)


def test_verifier_rejection_keeps_the_old_policy_attached(host):
    good = host.source("counter.bpf.c")
    bad = host.source("rejected.bpf.c")
    good_obj, bad_obj = str(host.files / "good.bpf.o"), str(host.files / "bad.bpf.o")
    host.play(cycle(host, good, good_obj))
    link = os.path.join(host.policy_dir(), LINK)
    prog_id = pinned_prog_id(link)
    pins = sorted(os.listdir(host.policy_dir()))
    res = host.run([compile_task(bad, bad_obj), policy_task(bad_obj)])
    assert res["compile"]["status"] == "ok"
    assert res["policy"]["status"] == "failed"
    msg = res["policy"]["result"]["msg"]
    assert PROGRAM in msg
    assert "invalid access to map value" in msg or "value_size=8" in msg, msg
    assert pinned_prog_id(link) == prog_id
    assert sorted(os.listdir(host.policy_dir())) == pins
    assert_ok(host.run([verify_task(object=good_obj)]), "verify")


def test_kernel_without_the_hook_is_refused_naming_what_is_missing(host):
    src = host.source("needs_hook.bpf.c")
    obj = str(host.files / "needs_hook.bpf.o")
    res = host.run([compile_task(src, obj), policy_task(obj)])
    assert res["compile"]["status"] == "ok"
    assert_failed_and_untouched(host, res, "policy", common.HOOK_FUNC, common.NAME_FUNC, common.NAME_KFUNC)
    assert res["policy"]["result"]["missing"] == [common.HOOK_FUNC, common.NAME_FUNC, common.NAME_KFUNC]


def test_a_shadow_document_is_refused_on_a_host_without_the_hook(host):
    """mode: shadow needs the hook: the score_adj backend this host has cannot know the
    victim its values would have produced, so it refuses before anything is loaded."""
    document = {"name": NAME, "mode": "shadow",
                "rules": [{"match": {"comm": "sh-x"}, "action": "prefer", "tier": 1}]}
    res = host.run([{"name": "policy", "ebpf.oom.policy": {"policy": document}, "ignore_errors": True},
                    {"name": "option", "ebpf.oom.policy": {"policy": dict(document, mode="enforce"),
                                                           "mode": "shadow"}}])
    for task in ("policy", "option"):
        assert_failed_and_untouched(host, res, task, "backend score_adj",
                                    "mode: shadow needs the OOM hook (backend evaluate_task)")


def test_kernel_without_the_hook_is_skipped_with_on_unsupported_skip(host):
    src = host.source("needs_hook.bpf.c")
    obj = str(host.files / "needs_hook.bpf.o")
    res, proc = host.play([compile_task(src, obj), policy_task(obj, on_unsupported="skip")])
    assert res["policy"]["status"] == "skipped"
    assert "skipped=1" in proc.stdout
    assert not os.path.exists(host.policy_dir())


def test_object_without_a_hook_program_is_refused_when_the_hook_is_required(host):
    src = host.source("counter.bpf.c")
    obj = str(host.files / "counter.bpf.o")
    res = host.run([compile_task(src, obj), policy_task(obj, require_hook="always")])
    assert_failed_and_untouched(host, res, "policy", "has no fmod_ret/%s program" % common.HOOK_FUNC)


def test_bpffs_that_cannot_be_mounted_is_a_clear_error(host):
    src = host.source("counter.bpf.c")
    obj = str(host.files / "counter.bpf.o")
    host.play([compile_task(src, obj)])
    nowhere = str(host.tmp / "no-such-dir" / "ebpf_oom")
    res = host.run([policy_task(obj)], environment=host.environment(EBPF_OOM_BPFFS_ROOT=nowhere))
    assert res["policy"]["status"] == "failed"
    assert "bpffs" in res["policy"]["result"]["msg"] and "mount" in res["policy"]["result"]["msg"]
    assert not os.path.exists(os.path.dirname(nowhere))
    assert not os.path.exists(host.state)
    assert PROGRAM not in [p.get("name") for p in bpftool_json("prog", "show")]


def test_check_mode_with_an_object_not_built_yet_reports_a_change(host):
    res = host.run([policy_task(str(host.files / "later.bpf.o"))], check=True)
    assert res["policy"]["status"] == "ok"
    assert res["policy"]["result"]["changed"] is True
    assert not os.path.exists(host.policy_dir())


def test_missing_object_is_refused(host):
    res = host.run([policy_task(str(host.files / "nothere.bpf.o"))])
    assert_failed_and_untouched(host, res, "policy", "nothere.bpf.o", "does not exist")


def test_compile_on_a_host_uses_its_own_btf_and_a_root_owned_cache(host):
    src = host.source("counter.bpf.c")
    obj = str(host.files / "counter.bpf.o")
    res = host.run([compile_task(src, obj)])
    digest = res["compile"]["result"]["object_sha256"]
    st = os.stat(os.path.join(host.cache, "objects", digest + ".o"))
    assert st.st_uid == 0 and not st.st_mode & stat.S_IWOTH
    assert res["compile"]["result"]["vmlinux"].startswith(os.path.join(host.cache, "vmlinux") + os.sep)


def test_compile_delegated_to_the_controller_uses_the_bundled_headers(host):
    src = host.source("counter.bpf.c")
    obj = str(host.files / "counter.bpf.o")
    task = dict(compile_task(src, obj), delegate_to="localhost", run_once=True)
    res = host.run([task])
    assert_ok(res, "compile")
    header = res["compile"]["result"]["vmlinux"]
    assert header.startswith(os.path.join(host.cache, "include") + os.sep)
    with open(header) as mine, open(os.path.join(REPO, "bpf", "include", "vmlinux.h")) as bundled:
        assert mine.read() == bundled.read()


def test_the_engine_is_one_archive_the_host_command_runs_and_a_rerun_keeps(host):
    """ebpf.oom.engine: the archive is written root-owned 0644 (check mode and diff say so
    first, writing nothing); a second run changes nothing; the host command beside it
    imports the engine from it (zipimport) and runs."""
    directory = host.tmp / "lib"
    directory.mkdir()
    archive = directory / "ebpf_oom_engine.zip"
    task = {"name": "engine", "ebpf.oom.engine": {"path": str(archive)}}
    checked = host.run([task], check=True, diff=True)["engine"]
    assert checked["status"] == "ok" and checked["result"]["changed"] and not archive.exists()
    assert checked["result"]["diff"]["before"] == "sha256: None\n"
    first = host.run([task])["engine"]["result"]
    st = archive.stat()
    assert first["changed"] and (st.st_mode & 0o7777, st.st_uid) == (0o644, 0)
    assert first["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert host.run([task])["engine"]["result"]["changed"] is False
    command = directory / "ebpf-oom"
    shutil.copy(os.path.join(REPO, "roles", "bpf_oom", "files", "ebpf-oom"), str(command))
    done = subprocess.run(["/usr/bin/python3", str(command), "explain", "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0 and "--document FILE" in done.stdout, done.stderr
    assert host.run([dict(task, **{"ebpf.oom.engine": {"path": str(archive), "state": "absent"}})])[
        "engine"]["result"]["changed"] and not archive.exists()


# ebpf.oom.host, the role's state module: what this host can show of it. (It converges
# real hosts through the role in the VM tests: test_role_options, test_role_score_adj.)
HOST_DOC = {"name": NAME, "rules": [{"match": {"comm": "nobody-here"}, "action": "prefer", "tier": 1}]}


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"),
                    reason="this host runs systemd: ebpf.oom.host would converge it (the VM tests do that)")
def test_host_refuses_a_host_without_systemd_before_anything_changes(host):
    engine_dir = host.tmp / "engine"
    res = host.run([{"name": "host", "ebpf.oom.host": {"engine_dir": str(engine_dir), "on_unsupported": "skip",
                                                       "policies": [{"name": NAME, "policy": HOST_DOC}]}}])
    assert res["host"]["status"] == "failed", res
    result = res["host"]["result"]
    assert result["part"] == "kernel" and "does not run systemd" in result["msg"], result
    assert result["changes"] == [] and not result["changed"], result
    assert not engine_dir.exists()
    assert not os.path.exists(host.policy_dir()) and not os.path.exists(host.state)


def test_host_refuses_an_invalid_document_on_the_controller_naming_the_entry(host):
    bad = dict(HOST_DOC, rules=[{"match": {"comm": "x"}, "action": "abort"}])
    res = host.run([{"name": "host", "ebpf.oom.host": {"engine_dir": str(host.tmp / "engine"),
                                                       "policies": [{"name": NAME, "policy": bad}]}}])
    assert res["host"]["status"] == "failed", res
    msg = res["host"]["result"]["msg"]
    assert msg.startswith("policies: %s: policy document is invalid" % NAME) and "rules[0]" in msg, msg
    assert not (host.tmp / "engine").exists() and not os.path.exists(host.state)


def test_the_roles_strict_entry_fails_its_lint_findings_before_the_host_is_changed(host):
    linty = dict(HOST_DOC, fallback="protect")  # lint: protecting every task the rules leave
    role = {"name": "role", "ansible.builtin.include_role": {"name": "ebpf.oom.bpf_oom"},
            "vars": {"bpf_oom_install_packages": False, "bpf_oom_engine_dir": str(host.tmp / "engine"),
                     "bpf_oom_policies": [{"name": NAME, "policy": linty, "strict": True}]}}
    res = host.run([role])
    failed = res["Converge the host"]
    assert failed["status"] == "failed", res
    assert "policies: %s fails lint (strict: true)" % NAME in failed["result"]["msg"], failed
    assert failed["result"]["lint"][NAME], failed
    assert not (host.tmp / "engine").exists() and not os.path.exists(host.state)


def test_a_hosts_own_policies_come_after_its_class_and_replace_one_of_the_same_name(host):
    """database_server with bpf_oom_policies in the host's inventory variables: the role
    checks (and would apply) the class's entries, then the host's, the host's entry named
    like the class's extra one in its place. Check mode: only the entry check matters here."""
    mine = dict(HOST_DOC, name="mine")
    swap = dict(HOST_DOC, name="extra", description="the host's own")
    inventory = host.tmp / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local",
        "bpf_oom_policies": [{"name": "mine", "policy": mine}, {"name": "extra", "policy": swap}]}}}}))
    role = {"name": "role", "ansible.builtin.include_role": {"name": "ebpf.oom.database_server"},
            "vars": {"bpf_oom_install_packages": False, "bpf_oom_engine_dir": str(host.tmp / "engine"),
                     "database_server_extra_policies": [{"name": "extra", "policy": dict(HOST_DOC, name="extra")}]}}
    res = host.run([role], check=True, inventory=str(inventory))
    checked = res["Check the policy entries"]["result"]["results"]
    assert [(r["item"]["name"], r["item"]["policy"].get("description")) for r in checked] == [
        ("database", "Database engines die last; everything else first, largest first."),
        ("mine", None), ("extra", "the host's own")], checked


def test_boot_kernel_writes_grubs_environment_block_once_and_refuses_what_grub_would_ignore(host):
    """ebpf.oom.boot_kernel on a menu as grub-mkconfig writes it (tests/unit/test_grub.py's) with
    the real grub-editenv: a one-shot entry, then the default; check mode and a second run write
    nothing; a menu without GRUB_DEFAULT=saved and an unknown release fail before any write.
    (That GRUB boots what it chose: tests/vm/test_hook_kernel_role.py.)"""
    from support import GRUB_HOOK as HOOK, GRUB_MENU as MENU, GRUB_STOCK as STOCK, GRUB_UUID as UUID
    menu, env = host.files / "grub.cfg", host.files / "grubenv"
    menu.write_text(MENU)
    paths = dict(grub_cfg=str(menu), grubenv=str(env))

    def boot(release, when, **kw):
        done = host.run([{"name": "boot", "ebpf.oom.boot_kernel": dict(paths, release=release, boot=when)}],
                        **kw)["boot"]
        return dict(done["result"], failed=done["status"] == "failed")

    planned = boot(HOOK, "once", check=True, diff=True)
    assert planned["changed"] and not env.exists(), planned
    assert planned["diff"]["after"] == "next_entry=gnulinux-advanced-%s>gnulinux-%s-advanced-%s\n" % (UUID, HOOK, UUID)
    once = boot(HOOK, "once")
    assert once["changed"] and (once["next_boot"], once["default"]) == (HOOK, HOOK), once
    pinned = boot(STOCK, "default")
    assert pinned["changed"] and (pinned["next_boot"], pinned["default"]) == (HOOK, STOCK), pinned
    written = env.read_bytes()
    assert len(written) == 1024 and b"saved_entry=gnulinux-advanced-%s>gnulinux-%s-advanced-" % (
        UUID.encode(), STOCK.encode()) in written
    assert not boot(STOCK, "default")["changed"] and env.read_bytes() == written
    unknown = boot("6.12.0-none", "default")
    assert unknown.get("failed") and "no entry for kernel 6.12.0-none (it has %s, %s)" % (HOOK, STOCK) in unknown["msg"]
    menu.write_text(MENU.replace('set default="${saved_entry}"', 'set default="0"'))
    refused = boot(HOOK, "default")
    assert refused.get("failed") and "was not made with GRUB_DEFAULT=saved" in refused["msg"], refused
    assert env.read_bytes() == written


def test_hook_kernel_role_in_check_mode_only_says_what_it_would_do(host, tmp_path):
    """The role ebpf.oom.hook_kernel in check mode on this host: it asks kernel_info, passes
    the Secure Boot check (this host has none), says what it would do and stops there: no
    build, no package, no GRUB file, nothing changed. (Its real runs: tests/vm/test_hook_kernel_role.py.)"""
    cache = tmp_path / "build-cache"
    results, proc = host.play([{"name": "role", "ansible.builtin.include_role": {"name": "ebpf.oom.hook_kernel"},
                                "vars": {"hook_kernel_cache": str(cache),
                                         "hook_kernel_package_dir": str(tmp_path / "packages")}}], check=True)
    said = [r for name, r in results.items() if name.endswith("Say what would change")]
    assert said and "would build or reuse the package" in said[0]["result"]["msg"], proc.stdout
    assert not [name for name, r in results.items() if r["result"].get("changed")], proc.stdout
    ran = [name.split(" : ")[-1] for name, r in results.items() if r["status"] != "skipped"]
    assert not [name for name in ran if "Build" in name or "Install" in name or "Reboot" in name], ran
    assert not cache.exists() and not (tmp_path / "packages").exists()
    assert not os.path.exists("/etc/default/grub.d/ebpf-oom-hook-kernel.cfg")
