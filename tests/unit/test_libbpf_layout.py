"""The ctypes structures and constants of the libbpf binding match the C headers.

A C file including the kernel UAPI headers (linux/bpf.h, linux/btf.h) and libbpf's
headers prints sizeof/offsetof of every field the binding declares, and the value of
every constant it uses; gcc compiles it and the test compares with ctypes.
"""

import ctypes
import shutil
import subprocess

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import bpffs, libbpf

# (ctypes class, C type, fields the C side names differently or cannot offsetof)
STRUCTS = [
    (libbpf.BpfProgInfo, "struct bpf_prog_info", {"gpl_compatible"}),
    (libbpf.BpfMapInfo, "struct bpf_map_info", set()),
    (libbpf.BpfLinkInfo, "struct bpf_link_info", set()),
    (libbpf.BtfType, "struct btf_type", {"size_or_type"}),
    (libbpf.BtfArray, "struct btf_array", set()),
    (libbpf.BtfVarSecinfo, "struct btf_var_secinfo", set()),
    (libbpf.ObjectOpenOpts, "struct bpf_object_open_opts", set()),
    (libbpf.MapCreateOpts, "struct bpf_map_create_opts", set()),
]

# Structures whose kernel side may grow (the kernel accepts a shorter user copy).
EXTENSIBLE = {"struct bpf_prog_info", "struct bpf_map_info", "struct bpf_link_info"}

CONSTANTS = {
    "BPF_MAP_TYPE_HASH": libbpf.BPF_MAP_TYPE_HASH,
    "BPF_MAP_TYPE_ARRAY": libbpf.BPF_MAP_TYPE_ARRAY,
    "BPF_MAP_TYPE_LRU_HASH": libbpf.BPF_MAP_TYPE_LRU_HASH,
    "BPF_MAP_TYPE_RINGBUF": libbpf.BPF_MAP_TYPE_RINGBUF,
    "BPF_PROG_TYPE_RAW_TRACEPOINT": libbpf.BPF_PROG_TYPE_RAW_TRACEPOINT,
    "BPF_PROG_TYPE_TRACING": libbpf.BPF_PROG_TYPE_TRACING,
    "BPF_TRACE_RAW_TP": libbpf.BPF_TRACE_RAW_TP,
    "BPF_LINK_TYPE_RAW_TRACEPOINT": libbpf.BPF_LINK_TYPE_RAW_TRACEPOINT,
    "BPF_LINK_TYPE_TRACING": libbpf.BPF_LINK_TYPE_TRACING,
    "BPF_F_RDONLY_PROG": libbpf.BPF_F_RDONLY_PROG,
    "BPF_ANY": libbpf.BPF_ANY,
    "BPF_OBJ_NAME_LEN": libbpf.BPF_OBJ_NAME_LEN,
    "BPF_TAG_SIZE": libbpf.BPF_TAG_SIZE,
    "BTF_INT_SIGNED": libbpf.BTF_INT_SIGNED,
    "LIBBPF_WARN": libbpf.LIBBPF_WARN,
    "LIBBPF_INFO": libbpf.LIBBPF_INFO,
    "BPF_FS_MAGIC": bpffs.BPF_FS_MAGIC,
}
CONSTANTS.update(("BTF_KIND_" + kind.upper(), value) for kind, value in libbpf.BTF_KINDS.items())

# Expressions the checks below read besides each field's offset and size.
EXTRA = ["offsetof(struct btf_type, size)", "offsetof(struct btf_type, type)",
         "offsetof(struct statfs, f_type)", "sizeof(struct statfs)"]

HEADERS = ["stddef.h", "stdio.h", "sys/statfs.h", "linux/magic.h", "linux/bpf.h",
           "linux/btf.h", "bpf/libbpf.h", "bpf/bpf.h"]


def _fields(cls, prefix=""):
    """(dotted C member, offset, size) of every named field, through nested aggregates."""
    out = []
    anonymous = set(getattr(cls, "_anonymous_", ()))
    for name, ftype in cls._fields_:
        desc = getattr(cls, name)
        if name.startswith("_"):
            continue
        if name in anonymous:
            out.extend((path, desc.offset + off, size)
                       for path, off, size in _fields(ftype, prefix))
        elif isinstance(ftype, type) and issubclass(ftype, (ctypes.Structure, ctypes.Union)):
            out.extend((path, desc.offset + off, size)
                       for path, off, size in _fields(ftype, prefix + name + "."))
        else:
            out.append((prefix + name, desc.offset, desc.size))
    return out


@pytest.fixture(scope="module")
def c_facts(tmp_path_factory):
    """{expression: value} printed by a gcc-compiled program including the headers."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    assert gcc, "gcc is needed to compare the ctypes layouts with the C headers"
    lines = ["#include <%s>" % h for h in HEADERS]
    lines.append("int main(void) {")
    exprs = []
    for cls, ctype, skip in STRUCTS:
        exprs.append("sizeof(%s)" % ctype)
        for path, _off, _size in _fields(cls):
            if path.split(".")[0] in skip:
                continue
            exprs.append("offsetof(%s, %s)" % (ctype, path))
            exprs.append("sizeof(((%s *)0)->%s)" % (ctype, path))
    exprs.extend(EXTRA)
    exprs.extend(CONSTANTS)
    for expr in exprs:
        lines.append('  printf("%%s=%%llu\\n", "%s", (unsigned long long)(%s));' % (expr, expr))
    lines.append("  return 0;\n}")
    tmp = tmp_path_factory.mktemp("layout")
    src, exe = tmp / "layout.c", tmp / "layout"
    src.write_text("\n".join(lines) + "\n")
    subprocess.run([gcc, "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return dict(line.rsplit("=", 1) for line in out.splitlines())


@pytest.mark.parametrize("cls,ctype,skip", STRUCTS, ids=[s[1] for s in STRUCTS])
def test_struct_fields_match_c_offsets_and_sizes(c_facts, cls, ctype, skip):
    wrong = []
    for path, off, size in _fields(cls):
        if path.split(".")[0] in skip:
            continue
        c_off = int(c_facts["offsetof(%s, %s)" % (ctype, path)])
        c_size = int(c_facts["sizeof(((%s *)0)->%s)" % (ctype, path)])
        if (off, size) != (c_off, c_size):
            wrong.append("%s: ctypes offset %d size %d, C offset %d size %d"
                         % (path, off, size, c_off, c_size))
    assert not wrong


@pytest.mark.parametrize("cls,ctype,skip", STRUCTS, ids=[s[1] for s in STRUCTS])
def test_struct_size_matches_c(c_facts, cls, ctype, skip):
    c_size = int(c_facts["sizeof(%s)" % ctype])
    if ctype in EXTENSIBLE:
        # The kernel copies min(user size, its size): shorter is fine, longer is not.
        assert ctypes.sizeof(cls) <= c_size
        assert ctypes.sizeof(cls) % 8 == 0
    else:
        assert ctypes.sizeof(cls) == c_size


def test_prog_info_gpl_bitfield_word_follows_ifindex(c_facts):
    # gpl_compatible is a 1-bit field: ctypes reads its whole 32-bit word, which sits
    # between ifindex and netns_dev in the C struct.
    assert libbpf.BpfProgInfo.gpl_compatible.offset == \
        int(c_facts["offsetof(struct bpf_prog_info, ifindex)"]) + 4
    assert libbpf.BpfProgInfo.netns_dev.offset == \
        int(c_facts["offsetof(struct bpf_prog_info, netns_dev)"])


def test_btf_type_union_member_is_size_and_type(c_facts):
    assert libbpf.BtfType.size_or_type.offset == int(c_facts["offsetof(struct btf_type, size)"])
    assert libbpf.BtfType.size_or_type.offset == int(c_facts["offsetof(struct btf_type, type)"])


def test_statfs_f_type_is_first_and_buffer_is_large_enough(c_facts):
    assert int(c_facts["offsetof(struct statfs, f_type)"]) == 0
    assert ctypes.sizeof(bpffs._Statfs) >= int(c_facts["sizeof(struct statfs)"])


@pytest.mark.parametrize("name", sorted(CONSTANTS))
def test_constant_matches_header(c_facts, name):
    assert int(c_facts[name]) == CONSTANTS[name]
