"""The BPF sources under bpf/: one header of CO-RE compatibility shims, and clang 14.

bpf/ebpf_oom_core.h holds every CO-RE flavour type (`name___flavour`) and every read of
mm_struct.rss_stat, so that no program carries a copy of a shim that can drift from it
(the RSS reader once existed twice, and a fix went into one copy only). No program uses
a CO-RE builtin that Debian 12's default clang (14) lacks, and every program compiles
with each clang the collection accepts that is installed here (real clang, no kernel).
"""

import glob
import os
import re

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import compiler
from ansible_collections.ebpf.oom.plugins.module_utils.errors import CompileError
from ansible_collections.ebpf.oom.plugins.module_utils.observer import OBSERVER_SOURCE, OBSERVER_VARIANTS
from conftest import REPO

BPF_DIR = os.path.join(REPO, "bpf")
INCLUDE_DIR = os.path.join(BPF_DIR, "include")
SHIM_HEADER = os.path.join(BPF_DIR, "ebpf_oom_core.h")
BUNDLED_VMLINUX = os.path.join(INCLUDE_DIR, "vmlinux.h")  # kernel types, not shims

# A CO-RE flavour: libbpf matches `name___anything` with the kernel's `name`.
FLAVOUR = r"[A-Za-z][A-Za-z0-9_]*?___[A-Za-z0-9_]+"
FLAVOUR_DEFINITION = re.compile(r"\b(?:struct|union|enum)\s+(%s)\s*\{|\btypedef\b[^;{]*?\b(%s)\b"
                                % (FLAVOUR, FLAVOUR))
RSS_STAT = re.compile(r"rss_stat")
# CO-RE builtins newer than clang 14 (it crashes on them: "Incorrect flag for
# llvm.bpf.preserve.type.info intrinsic").
AFTER_CLANG_14 = re.compile(r"\b(bpf_core_type_matches|BPF_TYPE_MATCHES)\b")
COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)

# The collection's own programs, compiled by the engine without a policy name; every
# other program is a policy and is compiled with one, as ebpf.oom.compile does.
NAMELESS = ("generic.bpf.c", OBSERVER_SOURCE)
# Debian 12's default clang, and the one the tests compile with (tests/setup installs both).
CLANGS = ("clang-14", "clang-16")


def code(text):
    """The text without its C comments (each replaced by a space)."""
    return COMMENT.sub(" ", text)


def shim_copies(text):
    """What of a BPF source only the shim header may hold: [(what, name)]."""
    text = code(text)
    found = [("flavour", a or b) for a, b in FLAVOUR_DEFINITION.findall(text)]
    found += [("rss_stat", m.group(0)) for m in RSS_STAT.finditer(text)]
    return found


def newer_than_clang_14(text):
    return AFTER_CLANG_14.findall(code(text))


def bpf_files():
    """Every C source and header under bpf/ (the bench programs, tests and examples too)."""
    return sorted(p for p in glob.glob(os.path.join(BPF_DIR, "**", "*"), recursive=True)
                  if p.endswith((".c", ".h")))


def read(path):
    with open(path) as f:
        return f.read()


def programs():
    return sorted(p for p in bpf_files() if p.endswith(".bpf.c"))


# ---------------------------------------------------------------- one shim header

def test_only_the_shim_header_defines_flavours_or_reads_rss_stat():
    copies = dict((os.path.relpath(p, REPO), shim_copies(read(p))) for p in bpf_files()
                  if p not in (SHIM_HEADER, BUNDLED_VMLINUX))
    assert dict((p, found) for p, found in copies.items() if found) == {}, (
        "CO-RE compatibility shims belong in bpf/ebpf_oom_core.h (include it)")


def test_the_scan_finds_a_copied_shim():
    """The scan above is not vacuous: the observer's former copy of the RSS shim, and
    its tracepoint flavour, are named; ___ in a plain identifier is not a flavour."""
    copy = """
typedef void (*btf_trace_mark_victim___task)(void *, struct task_struct *, unsigned int);
/* Before Linux 6.2 the RSS counters were atomics in a struct mm_rss_stat. */
struct mm_rss_stat___atomic {
\tatomic_long_t count[NR_MM_COUNTERS];
} __attribute__((preserve_access_index));
#define rss_pages(mm, idx) BPF_CORE_READ(mm, rss_stat[idx].count)
char ___name[16];
"""
    assert sorted(shim_copies(copy)) == [("flavour", "btf_trace_mark_victim___task"),
                                         ("flavour", "mm_rss_stat___atomic"),
                                         ("rss_stat", "rss_stat"), ("rss_stat", "rss_stat")]
    assert shim_copies("/* mm->rss_stat, struct x___y { } */\nchar ___name[16];\n") == []


def test_the_shim_header_holds_the_shims():
    flavours = set(name for what, name in shim_copies(read(SHIM_HEADER)) if what == "flavour")
    assert flavours == {"mm_rss_stat___atomic", "mm_struct___atomic", "mm_struct___percpu",
                        "mm_struct___word", "mm_struct___bitmap",
                        "trace_event_raw_mark_victim___task"}


def test_every_program_that_needs_a_shim_includes_the_header():
    """The observer directly, the generic program through ebpf_oom_task.h."""
    assert '#include "ebpf_oom_core.h"' in read(os.path.join(BPF_DIR, OBSERVER_SOURCE))
    assert '#include "ebpf_oom_core.h"' in read(os.path.join(BPF_DIR, "ebpf_oom_task.h"))
    assert '#include "ebpf_oom_task.h"' in read(os.path.join(BPF_DIR, "generic.bpf.c"))


# ---------------------------------------------------------------- clang 14

def test_no_program_needs_a_newer_clang_than_14():
    found = dict((os.path.relpath(p, REPO), newer_than_clang_14(read(p))) for p in bpf_files())
    assert dict((p, names) for p, names in found.items() if names) == {}
    assert newer_than_clang_14("if (bpf_core_type_matches(t)) {}") == ["bpf_core_type_matches"]


@pytest.mark.parametrize("clang", CLANGS)
def test_every_program_compiles_with(clang, tmp_path):
    """Each program (the observer in each of its builds) with the engine's flags against the
    bundled vmlinux.h, as the controller compiles them, and without a warning (clang only
    warns when a pointer of one type is passed for another, and the verifier then refuses
    the program on a kernel, or worse, reads the wrong field)."""
    failed = {}
    for src in programs():
        name = os.path.basename(src)
        variants = OBSERVER_VARIANTS if name == OBSERVER_SOURCE else [("", {})]
        for variant, defines in variants:
            where = "%s %s" % (os.path.relpath(src, REPO), variant)
            try:
                result = compiler.compile_object(
                    src=src, defines=defines, clang=clang, vmlinux=BUNDLED_VMLINUX,
                    include_dirs=[BPF_DIR, INCLUDE_DIR], cache_dir=str(tmp_path),
                    policy_name=None if name in NAMELESS else "sources")
            except CompileError as e:
                failed[where] = "%s\n%s" % (e.message, e.log_tail)
                continue
            if result["warnings"].strip():
                failed[where] = result["warnings"]
    assert failed == {}
