"""The compiler: input checks, wrapper, content-addressed cache, metadata (real clang, no kernel)."""

import os
import stat
import subprocess

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import common, compiler
from ansible_collections.ebpf.oom.plugins.module_utils.files import sha256_file
from ansible_collections.ebpf.oom.plugins.module_utils.names import POLICY_NAME_MAX

# A stand-in for the bundled minimal vmlinux.h, for these tests only.
STANDIN_VMLINUX = """\
#ifndef __VMLINUX_H__
#define __VMLINUX_H__
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef int pid_t;
enum bpf_func_id { BPF_FUNC_unspec = 0 };
struct task_struct { pid_t pid; } __attribute__((preserve_access_index));
#endif
"""

PROGRAM = """\
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile pid_t target_pid = 0;
int seen = 0;

SEC("tp_btf/mark_victim")
int BPF_PROG(on_mark_victim, struct task_struct *task)
{
    if (task->pid == target_pid)
        seen++;
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture
def env(tmp_path):
    """A source file, a stand-in vmlinux.h and an empty cache."""
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "vmlinux.h").write_text(STANDIN_VMLINUX)
    src = tmp_path / "prog.bpf.c"
    src.write_text(PROGRAM)
    src.chmod(0o644)

    class Env:
        source = str(src)
        vmlinux = str(inc / "vmlinux.h")
        cache = str(tmp_path / "cache")
        dest = str(tmp_path / "out" / "prog.bpf.o")

        def compile(self, **kw):
            kw.setdefault("src", self.source)
            kw.setdefault("vmlinux", self.vmlinux)
            kw.setdefault("cache_dir", self.cache)
            return compiler.compile_object(**kw)

    (tmp_path / "out").mkdir()
    return Env()


def tree(path):
    """Every file under path with its content hash (what the cache holds)."""
    out = {}
    for root, _dirs, files in os.walk(path):
        for f in files:
            out[os.path.join(root, f)] = sha256_file(os.path.join(root, f))
    return out


def btf_vars(obj):
    dump = subprocess.run(["bpftool", "btf", "dump", "file", obj], check=True,
                          stdout=subprocess.PIPE, universal_newlines=True).stdout
    return [line.split("'")[1] for line in dump.splitlines() if "] VAR '" in line]


def rodata_strings(obj):
    out = obj + ".rodata"
    subprocess.run(["llvm-objcopy-16", "-O", "binary", "--only-section=.rodata", obj, out], check=True)
    with open(out, "rb") as f:
        data = f.read()
    os.unlink(out)
    return [s.decode() for s in data.split(b"\0") if s]


def test_metadata_is_embedded_as_rodata_variables(env):
    r = env.compile(dest=env.dest, policy_name="select_pid")
    names = btf_vars(env.dest)
    for var in (common.META_SOURCE_SHA256, common.META_VERSION, common.META_POLICY):
        assert var in names
    strings = rodata_strings(env.dest)
    with open(env.source, "rb") as f:
        import hashlib
        assert hashlib.sha256(f.read()).hexdigest() == r["source_sha256"]
    assert r["source_sha256"] in strings
    assert common.COLLECTION_VERSION in strings
    assert "select_pid" in strings


def test_policy_metadata_only_when_a_policy_name_is_given(env):
    env.compile(dest=env.dest)
    assert common.META_POLICY not in btf_vars(env.dest)
    assert common.META_SOURCE_SHA256 in btf_vars(env.dest)


def test_same_input_compiles_once(env):
    first = env.compile(dest=env.dest)
    obj = os.path.join(env.cache, "objects", first["object_sha256"] + ".o")
    mtime = os.stat(obj).st_mtime_ns
    second = env.compile(dest=env.dest)
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["key"] == first["key"]
    assert os.stat(obj).st_mtime_ns == mtime
    assert os.listdir(os.path.join(env.cache, "objects")) == [first["object_sha256"] + ".o"]
    assert sha256_file(obj) == sha256_file(env.dest) == first["object_sha256"]


@pytest.fixture
def logging_clang(tmp_path):
    """A clang that logs each invocation's arguments (one line each) and runs the real one."""
    log = tmp_path / "clang.log"
    script = tmp_path / "logging-clang"
    script.write_text('#!/bin/sh\necho "$*" >> %s\nexec %s "$@"\n' % (log, compiler.find_clang()))
    script.chmod(0o755)

    class Clang:
        path = str(script)

        def preprocessed(self):
            return sum(1 for line in log.read_text().splitlines() if " -E " in line) if log.exists() else 0
    return Clang()


def test_unchanged_rerun_does_not_even_preprocess(env, logging_clang):
    first = env.compile(dest=env.dest, clang=logging_clang.path)
    assert logging_clang.preprocessed() == 1
    second = env.compile(dest=env.dest, clang=logging_clang.path)
    assert logging_clang.preprocessed() == 1
    assert (second["key"], second["cached"], second["changed"]) == (first["key"], True, False)


def test_changed_header_is_noticed_without_a_changed_source(env, tmp_path, logging_clang):
    inc = tmp_path / "mine"
    inc.mkdir()
    (inc / "knob.h").write_text("#define KNOB 1\n")
    with open(env.source, "a") as f:
        f.write('#include "knob.h"\nconst volatile int knob = KNOB;\n')
    first = env.compile(include_dirs=[str(inc)], clang=logging_clang.path)
    (inc / "knob.h").write_text("#define KNOB 2\n")
    second = env.compile(include_dirs=[str(inc)], clang=logging_clang.path)
    assert logging_clang.preprocessed() == 2
    assert second["key"] != first["key"] and second["cached"] is False


def test_new_header_that_shadows_an_old_one_is_noticed(env, tmp_path):
    with open(env.source, "a") as f:
        f.write('#include "knob.h"\nconst volatile int knob = KNOB;\n')
    later, first_dir = tmp_path / "later", tmp_path / "first"
    later.mkdir()
    first_dir.mkdir()
    (later / "knob.h").write_text("#define KNOB 1\n")
    dirs = [str(first_dir), str(later)]
    first = env.compile(include_dirs=dirs)
    (first_dir / "knob.h").write_text("#define KNOB 2\n")  # found first from now on
    second = env.compile(include_dirs=dirs)
    assert second["key"] != first["key"]


def test_depfile_parsing_keeps_escaped_spaces():
    text = "-: /a/b.c /x\\ y/v.h \\\n  /usr/include/bpf/bpf_helpers.h\n"
    assert compiler.parse_depfile(text) == ["/a/b.c", "/x y/v.h", "/usr/include/bpf/bpf_helpers.h"]


def test_dest_is_rewritten_only_when_the_object_differs(env):
    assert env.compile(dest=env.dest)["changed"] is True
    inode = os.stat(env.dest).st_ino
    again = env.compile(dest=env.dest)
    assert again["changed"] is False
    assert os.stat(env.dest).st_ino == inode
    assert again["diff"]["before"] == again["diff"]["after"]


def test_changed_define_policy_name_or_source_changes_the_key(env):
    base = env.compile()["key"]
    assert env.compile(defines={"MAX": 3})["key"] != base
    assert env.compile(policy_name="p1")["key"] != base
    with open(env.source, "a") as f:
        f.write("/* edited */\n")
    assert env.compile()["key"] != base


def test_check_mode_writes_nothing_but_reports_the_change(env, tmp_path):
    r = env.compile(dest=env.dest, check_mode=True)
    assert r["changed"] is True
    assert not os.path.exists(env.dest)
    assert not os.path.exists(env.cache) or tree(env.cache) == {}


def test_check_mode_after_a_real_run_reports_no_change(env):
    env.compile(dest=env.dest)
    before = tree(env.cache)
    r = env.compile(dest=env.dest, check_mode=True)
    assert (r["changed"], r["cached"]) == (False, True)
    assert tree(env.cache) == before


def test_content_compiles_and_diagnostics_name_content(env):
    r = env.compile(src=None, content=PROGRAM)
    assert os.path.exists(r["object"])
    with pytest.raises(compiler.CompileError) as e:
        env.compile(src=None, content=PROGRAM + "\nint broken(void) { return nope; }\n")
    assert "<content>:%d:" % (PROGRAM.count("\n") + 2) in e.value.log_tail
    assert "nope" in e.value.log_tail


def test_syntax_error_names_the_users_file_and_line(env):
    with open(env.source, "a") as f:
        f.write("int oops(void) { return 1 }\n")
    with pytest.raises(compiler.CompileError) as e:
        env.compile(dest=env.dest)
    assert "compiling %s failed" % env.source in str(e.value)
    assert "%s:%d:" % (env.source, PROGRAM.count("\n") + 1) in e.value.log_tail
    assert "expected ';'" in e.value.log_tail
    assert not os.path.exists(env.dest)
    assert not os.path.exists(os.path.join(env.cache, "objects"))


def test_missing_include_fails_in_preprocessing(env):
    with pytest.raises(compiler.CompileError) as e:
        env.compile(content='#include "no_such_header.h"\n', src=None)
    assert "no_such_header.h" in e.value.log_tail


def test_missing_source_is_refused(env, tmp_path):
    with pytest.raises(compiler.CompileError, match="No such file"):
        env.compile(src=str(tmp_path / "nope.bpf.c"), dest=env.dest)
    assert not os.path.exists(env.cache)


def test_directory_as_source_is_refused(env, tmp_path):
    with pytest.raises(compiler.CompileError, match="not a regular file"):
        env.compile(src=str(tmp_path), dest=env.dest)


@pytest.mark.parametrize("mode,why", [(0o666, "world-writable"), (0o664, "group-writable"),
                                      (0o620, "group-writable")])
def test_source_others_can_write_is_refused_before_anything_is_written(env, mode, why):
    os.chmod(env.source, mode)
    with pytest.raises(compiler.CompileError, match=why):
        env.compile(dest=env.dest)
    assert not os.path.exists(env.cache)
    assert not os.path.exists(env.dest)


def test_source_of_another_user_is_refused_before_anything_is_written(env):
    os.chown(env.source, 1000, 1000)
    with pytest.raises(compiler.CompileError, match="owned by uid 1000: only a file owned by root"):
        env.compile(dest=env.dest)
    assert not os.path.exists(env.cache)


@pytest.mark.parametrize("how", ["owner", "mode"])
def test_header_that_is_not_trusted_is_refused(env, tmp_path, how):
    inc = tmp_path / "mine"
    inc.mkdir()
    (inc / "knob.h").write_text("#define KNOB 1\n")
    if how == "owner":
        os.chown(str(inc / "knob.h"), 1000, 1000)
    else:
        os.chmod(str(inc / "knob.h"), 0o666)
    with open(env.source, "a") as f:
        f.write('#include "knob.h"\nconst volatile int knob = KNOB;\n')
    with pytest.raises(compiler.CompileError, match="includes a header that is not trusted: %s"
                       % (inc / "knob.h")):
        env.compile(include_dirs=[str(inc)], dest=env.dest)
    assert not os.path.exists(env.dest)


def test_a_source_changed_between_hash_and_compile_is_not_what_is_compiled(env, tmp_path):
    """A clang that rewrites the source as soon as it runs (the source changed after the
    engine hashed it): the object is built from the bytes that were hashed."""
    with open(env.source, "rb") as f:
        hashed = f.read()
    script = tmp_path / "swapping-clang"
    script.write_text("#!/bin/sh\nprintf 'int evil_global = 1;\\n' >> %s\nexec %s \"$@\"\n"
                      % (env.source, compiler.find_clang()))
    script.chmod(0o755)
    r = env.compile(dest=env.dest, clang=str(script))
    with open(env.source, "rb") as f:
        assert f.read() != hashed  # the source did change under the compiler
    import hashlib
    assert r["source_sha256"] == hashlib.sha256(hashed).hexdigest()
    assert "evil_global" not in btf_vars(env.dest) and "seen" in btf_vars(env.dest)
    assert r["source_sha256"] in rodata_strings(env.dest)


def test_cache_entry_whose_content_changed_is_not_used(env):
    first = env.compile(dest=env.dest)
    obj = os.path.join(env.cache, "objects", first["object_sha256"] + ".o")
    with open(obj, "r+b") as f:
        f.seek(0, 2)
        f.write(b"tampered")
    os.unlink(env.dest)
    second = env.compile(dest=env.dest)
    assert second["cached"] is False and second["object_sha256"] == first["object_sha256"]
    assert sha256_file(env.dest) == sha256_file(obj) == first["object_sha256"]


def test_cache_entry_another_user_owns_is_refused(env):
    first = env.compile(dest=env.dest)
    os.chown(os.path.join(env.cache, "objects", first["object_sha256"] + ".o"), 1000, 1000)
    with pytest.raises(compiler.CompileError, match="owned by uid 1000"):
        env.compile(dest=env.dest)


@pytest.mark.parametrize("name", ["a" * 16, "", "bad name", 'q"uote', "ünïcodé_toolong"])
def test_bad_policy_names_are_refused_before_anything_is_written(env, name):
    with pytest.raises(compiler.CompileError, match="policy name"):
        env.compile(dest=env.dest, policy_name=name)
    assert not os.path.exists(env.cache)


def test_fifteen_byte_policy_name_is_accepted(env):
    env.compile(dest=env.dest, policy_name="a" * POLICY_NAME_MAX)
    assert "a" * 15 in rodata_strings(env.dest)


def test_source_declaring_the_policy_variable_gets_the_embedded_name(env):
    with open(env.source, "a") as f:
        f.write("const volatile char %s[%d];\n" % (common.META_POLICY, POLICY_NAME_MAX + 1))
    env.compile(dest=env.dest, policy_name="generic")
    assert "generic" in rodata_strings(env.dest)


def test_policy_name_macro_is_defined_for_the_source(env):
    with open(env.source, "a") as f:
        f.write("const volatile char copy_of_name[] = EBPF_OOM_POLICY_NAME;\n")
    env.compile(dest=env.dest, policy_name="macro_name")
    assert "copy_of_name" in btf_vars(env.dest)


def test_user_include_dirs_come_before_vmlinux_dir(env, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "vmlinux.h").write_text("#error picked the user's include dir\n")
    with pytest.raises(compiler.CompileError) as e:
        env.compile(include_dirs=[str(mine)])
    assert "picked the user's include dir" in e.value.log_tail


def test_bundled_headers_are_stored_by_content_and_used(env):
    headers = {"vmlinux.h": STANDIN_VMLINUX, "extra.h": "#define EXTRA 7\n"}
    r = env.compile(vmlinux="bundled", bundled_headers=headers,
                    content='#include "vmlinux.h"\n#include "extra.h"\nint x = EXTRA;\n', src=None)
    d = os.path.dirname(r["vmlinux"])
    assert sorted(os.listdir(d)) == ["extra.h", "vmlinux.h"]
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o755
    assert env.compile(vmlinux="bundled", bundled_headers=headers, src=None,
                       content='#include "vmlinux.h"\n')["vmlinux"] == r["vmlinux"]


def test_bundled_vmlinux_missing_is_a_clear_error(env):
    with pytest.raises(compiler.CompileError, match="bundled vmlinux.h is not available"):
        env.compile(vmlinux="bundled")


def test_vmlinux_path_with_another_file_name_is_copied_into_the_cache(env, tmp_path):
    other = tmp_path / "types.h"
    other.write_text(STANDIN_VMLINUX)
    r = env.compile(vmlinux=str(other))
    assert r["vmlinux"].startswith(os.path.join(env.cache, "vmlinux"))


def test_cache_files_are_not_world_writable(env):
    r = env.compile(dest=env.dest)
    for path in [os.path.join(env.cache, "objects", r["object_sha256"] + ".o"), env.dest] + list(tree(env.cache)):
        assert not os.stat(path).st_mode & (stat.S_IWOTH | stat.S_IWGRP), path


@pytest.mark.parametrize("defines,flags", [
    ({"A": 1, "B": None, "C": "x y"}, ["-DA=1", "-DB", "-DC=x y"]),
    ({"ON": True, "OFF": False}, ["-DOFF=0", "-DON"]),
])
def test_define_flags(defines, flags):
    assert compiler.define_flags(defines) == flags


@pytest.mark.parametrize("name", ["1abc", "a-b", "a b", "", "A\n"])
def test_define_names_must_be_identifiers(name):
    with pytest.raises(compiler.CompileError, match="not a C identifier"):
        compiler.define_flags({name: 1})


def test_wrapper_puts_metadata_before_the_source_bytes():
    unit = compiler.wrapper("ab" * 32, "pol", "/x/y.bpf.c", b"int x;\xff\n")
    assert unit.index(common.META_POLICY.encode()) < unit.index(b'#line 1 "/x/y.bpf.c"\nint x;\xff\n')
    assert b'const volatile char %s[16] = "pol";' % common.META_POLICY.encode() in unit
    assert b"#include" not in unit


def test_clang_search_order_and_explicit_choice(tmp_path, monkeypatch):
    for name in ("clang", "clang-19"):
        p = tmp_path / name
        p.write_text("#!/bin/sh\necho 'Fake clang version 19.1.2 (x)'\n")
        p.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert compiler.find_clang() == str(tmp_path / "clang-19")
    assert compiler.find_clang(str(tmp_path / "clang")) == str(tmp_path / "clang")
    assert compiler.clang_version(str(tmp_path / "clang-19"))[1] == "19.1.2"
    with pytest.raises(compiler.CompileError, match="not found"):
        compiler.find_clang(str(tmp_path / "clang-99"))
