# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ctypes binding over the system's libbpf.so.1 (Debian libbpf1 >= 1.1).

Layer 1 (kernel binding): imports only the leaf helpers.

Everything that makes a bpf() call goes through here: open and load an object,
set its ``const volatile`` globals, attach programs by section, pin links, reuse
pinned maps, map element operations, and the info of programs, links and maps
(by fd; open a pin with :func:`obj_get`).  BTF is read through libbpf too:
names of attach targets, presence of kernel symbols, and the ``bpf_metadata_*``
variables of a loaded program.

The ctypes structures mirror the kernel UAPI (linux/bpf.h, linux/btf.h);
tests/unit/test_libbpf_layout.py compiles a C file against the UAPI headers and
checks every size, offset and constant used here.

File descriptors returned by this module are plain ints owned by the caller
(close them with ``os.close`` or use :func:`pinned`).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import ctypes
import errno
import hashlib
import os
import time

from .errors import BpfError

LOG_TAIL_LINES = 20          # verifier log lines kept in BpfError.log_tail
LIBBPF_TAIL_LINES = 6        # libbpf's own messages kept after them
KERNEL_LOG_SIZE = 1 << 20    # verifier log buffer; kernels >= 6.4 keep its tail
MESSAGES_KEPT = 200          # libbpf messages buffered between operations
OBJECT_NAME = "ebpf_oom"     # prefix of internal map names: "ebpf_oom.rodata"
BPF_OBJ_NAME_LEN = 16
BPF_TAG_SIZE = 8

# enum bpf_map_type / bpf_prog_type / bpf_attach_type / bpf_link_type values used here.
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_RINGBUF = 27
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_RAW_TP = 23
BPF_TRACE_FEXIT = 25
BPF_LINK_TYPE_RAW_TRACEPOINT = 1
BPF_LINK_TYPE_TRACING = 2
BPF_F_RDONLY_PROG = 1 << 7
BPF_ANY = 0

# libbpf print levels.
LIBBPF_WARN = 0
LIBBPF_INFO = 1

BTF_KINDS = {
    "int": 1, "ptr": 2, "array": 3, "struct": 4, "union": 5, "enum": 6,
    "fwd": 7, "typedef": 8, "volatile": 9, "const": 10, "restrict": 11,
    "func": 12, "func_proto": 13, "var": 14, "datasec": 15, "float": 16,
    "decl_tag": 17, "type_tag": 18, "enum64": 19,
}
BTF_KIND_INT = BTF_KINDS["int"]
BTF_KIND_ARRAY = BTF_KINDS["array"]
BTF_KIND_VAR = BTF_KINDS["var"]
BTF_KIND_DATASEC = BTF_KINDS["datasec"]
BTF_KIND_ENUM = BTF_KINDS["enum"]
BTF_KIND_ENUM64 = BTF_KINDS["enum64"]
BTF_KIND_FUNC = BTF_KINDS["func"]
BTF_FUNC_EXTERN = 2  # enum btf_func_linkage, kept in a FUNC's vlen
BTF_MODIFIERS = (BTF_KINDS["typedef"], BTF_KINDS["volatile"], BTF_KINDS["const"],
                 BTF_KINDS["restrict"], BTF_KINDS["type_tag"])
BTF_INT_SIGNED = 1


# ---------------------------------------------------------------- UAPI structs

class BpfProgInfo(ctypes.Structure):
    """struct bpf_prog_info (linux/bpf.h)."""
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * BPF_TAG_SIZE),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),  # bitfield :1 + :31 pad
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32),
        ("attach_btf_obj_id", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class BpfMapInfo(ctypes.Structure):
    """struct bpf_map_info (linux/bpf.h)."""
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


class _LinkRawTracepoint(ctypes.Structure):
    _fields_ = [("tp_name", ctypes.c_uint64), ("tp_name_len", ctypes.c_uint32)]


class _LinkTracing(ctypes.Structure):
    _fields_ = [("attach_type", ctypes.c_uint32), ("target_obj_id", ctypes.c_uint32),
                ("target_btf_id", ctypes.c_uint32)]


class _LinkUnion(ctypes.Union):
    # The UAPI union has more members (cgroup, iter, netns, xdp, ...); _raw keeps
    # this union as large as the one in the UAPI header (checked by the unit test).
    _fields_ = [("raw_tracepoint", _LinkRawTracepoint), ("tracing", _LinkTracing),
                ("_raw", ctypes.c_uint64 * 4)]


class BpfLinkInfo(ctypes.Structure):
    """struct bpf_link_info (linux/bpf.h), the members this collection reads."""
    _anonymous_ = ("u",)
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("prog_id", ctypes.c_uint32), ("u", _LinkUnion)]


class BtfType(ctypes.Structure):
    """struct btf_type (linux/btf.h); size and type share the union."""
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32),
                ("size_or_type", ctypes.c_uint32)]

    @property
    def kind(self):
        return (self.info >> 24) & 0x1f

    @property
    def vlen(self):
        return self.info & 0xffff


class BtfArray(ctypes.Structure):
    """struct btf_array, follows a BTF_KIND_ARRAY btf_type."""
    _fields_ = [("type", ctypes.c_uint32), ("index_type", ctypes.c_uint32),
                ("nelems", ctypes.c_uint32)]


class BtfVarSecinfo(ctypes.Structure):
    """struct btf_var_secinfo, vlen of them follow a BTF_KIND_DATASEC btf_type."""
    _fields_ = [("type", ctypes.c_uint32), ("offset", ctypes.c_uint32),
                ("size", ctypes.c_uint32)]


class ObjectOpenOpts(ctypes.Structure):
    """struct bpf_object_open_opts (bpf/libbpf.h, libbpf 1.1)."""
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
        ("_attach_prog_fd", ctypes.c_uint32),
        ("kconfig", ctypes.c_char_p),
        ("btf_custom_path", ctypes.c_char_p),
        ("kernel_log_buf", ctypes.c_void_p),
        ("kernel_log_size", ctypes.c_size_t),
        ("kernel_log_level", ctypes.c_uint32),
    ]


class ProgLoadOpts(ctypes.Structure):
    """The head of struct bpf_prog_load_opts, up to attach_prog_fd (sz says so)."""
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("attempts", ctypes.c_int),
        ("expected_attach_type", ctypes.c_int),
        ("prog_btf_fd", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_ifindex", ctypes.c_uint32),
        ("kern_version", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("attach_btf_obj_fd", ctypes.c_uint32),
        ("attach_prog_fd", ctypes.c_int),
    ]


class MapCreateOpts(ctypes.Structure):
    """struct bpf_map_create_opts (bpf/bpf.h, libbpf 1.1)."""
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("btf_fd", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
        ("numa_node", ctypes.c_uint32),
        ("map_ifindex", ctypes.c_uint32),
    ]


# ---------------------------------------------------------------- the library

_P = ctypes.c_void_p
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)

_SIGNATURES = {
    # name: (restype, argtypes)
    "libbpf_set_print": (_P, [_PRINT_FN]),
    "libbpf_bpf_attach_type_str": (ctypes.c_char_p, [ctypes.c_int]),
    "libbpf_bpf_link_type_str": (ctypes.c_char_p, [ctypes.c_int]),
    "libbpf_bpf_map_type_str": (ctypes.c_char_p, [ctypes.c_int]),
    "libbpf_bpf_prog_type_str": (ctypes.c_char_p, [ctypes.c_int]),
    "libbpf_major_version": (ctypes.c_uint32, []),
    "libbpf_minor_version": (ctypes.c_uint32, []),
    "bpf_object__open_mem": (_P, [_P, ctypes.c_size_t, ctypes.POINTER(ObjectOpenOpts)]),
    "bpf_object__load": (ctypes.c_int, [_P]),
    "bpf_object__close": (None, [_P]),
    "bpf_object__btf": (_P, [_P]),
    "bpf_object__next_program": (_P, [_P, _P]),
    "bpf_object__next_map": (_P, [_P, _P]),
    "bpf_object__find_map_by_name": (_P, [_P, ctypes.c_char_p]),
    "bpf_program__name": (ctypes.c_char_p, [_P]),
    "bpf_program__section_name": (ctypes.c_char_p, [_P]),
    "bpf_program__fd": (ctypes.c_int, [_P]),
    "bpf_program__type": (ctypes.c_int, [_P]),
    "bpf_program__expected_attach_type": (ctypes.c_int, [_P]),
    "bpf_program__attach": (_P, [_P]),
    "bpf_program__autoload": (ctypes.c_bool, [_P]),
    "bpf_program__set_autoload": (ctypes.c_int, [_P, ctypes.c_bool]),
    "libbpf_strerror": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]),
    "bpf_map__pin_path": (ctypes.c_char_p, [_P]),
    "bpf_map__set_pin_path": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "bpf_link__fd": (ctypes.c_int, [_P]),
    "bpf_iter_create": (ctypes.c_int, [ctypes.c_int]),
    "bpf_link__pin": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "bpf_link__destroy": (ctypes.c_int, [_P]),
    "bpf_map__name": (ctypes.c_char_p, [_P]),
    "bpf_map__fd": (ctypes.c_int, [_P]),
    "bpf_map__type": (ctypes.c_int, [_P]),
    "bpf_map__key_size": (ctypes.c_uint32, [_P]),
    "bpf_map__value_size": (ctypes.c_uint32, [_P]),
    "bpf_map__max_entries": (ctypes.c_uint32, [_P]),
    "bpf_map__map_flags": (ctypes.c_uint32, [_P]),
    "bpf_map__is_internal": (ctypes.c_bool, [_P]),
    "bpf_map__reuse_fd": (ctypes.c_int, [_P, ctypes.c_int]),
    "bpf_map__initial_value": (_P, [_P, ctypes.POINTER(ctypes.c_size_t)]),
    "bpf_map__set_initial_value": (ctypes.c_int, [_P, _P, ctypes.c_size_t]),
    "bpf_obj_get": (ctypes.c_int, [ctypes.c_char_p]),
    "bpf_obj_pin": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p]),
    "bpf_obj_get_info_by_fd": (ctypes.c_int, [ctypes.c_int, _P, ctypes.POINTER(ctypes.c_uint32)]),
    "bpf_prog_get_fd_by_id": (ctypes.c_int, [ctypes.c_uint32]),
    "bpf_map_get_fd_by_id": (ctypes.c_int, [ctypes.c_uint32]),
    "bpf_link_get_fd_by_id": (ctypes.c_int, [ctypes.c_uint32]),
    "bpf_map_create": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32,
                                      ctypes.c_uint32, ctypes.c_uint32,
                                      ctypes.POINTER(MapCreateOpts)]),
    "bpf_prog_load": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, _P,
                                     ctypes.c_size_t, ctypes.POINTER(ProgLoadOpts)]),
    "bpf_link_create": (ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_int, _P]),
    "bpf_map_lookup_elem": (ctypes.c_int, [ctypes.c_int, _P, _P]),
    "bpf_map_update_elem": (ctypes.c_int, [ctypes.c_int, _P, _P, ctypes.c_uint64]),
    "bpf_map_delete_elem": (ctypes.c_int, [ctypes.c_int, _P]),
    "bpf_map_get_next_key": (ctypes.c_int, [ctypes.c_int, _P, _P]),
    "bpf_map_freeze": (ctypes.c_int, [ctypes.c_int]),
    "btf__load_vmlinux_btf": (_P, []),
    "btf__load_from_kernel_by_id": (_P, [ctypes.c_uint32]),
    "btf__load_from_kernel_by_id_split": (_P, [ctypes.c_uint32, _P]),
    "btf__free": (None, [_P]),
    "btf__find_by_name_kind": (ctypes.c_int32, [_P, ctypes.c_char_p, ctypes.c_uint32]),
    "btf__type_cnt": (ctypes.c_uint32, [_P]),
    "btf__parse_elf": (_P, [ctypes.c_char_p, _P]),
    "btf__type_by_id": (ctypes.POINTER(BtfType), [_P, ctypes.c_uint32]),
    "btf__name_by_offset": (ctypes.c_char_p, [_P, ctypes.c_uint32]),
    "btf__resolve_size": (ctypes.c_int64, [_P, ctypes.c_uint32]),
    "libbpf_probe_bpf_map_type": (ctypes.c_int, [ctypes.c_int, _P]),
    "ring_buffer__new": (_P, [ctypes.c_int, _SAMPLE_FN, _P, _P]),
    "ring_buffer__poll": (ctypes.c_int, [_P, ctypes.c_int]),
    "ring_buffer__consume": (ctypes.c_int, [_P]),
    "ring_buffer__free": (None, [_P]),
}

_lib = None
_libc = None
_messages = []          # libbpf's messages since the last _take_messages()
_print_cb = None        # keeps the ctypes callback alive


def lib():
    """The loaded libbpf.so.1 with typed functions (loaded on first use)."""
    global _lib, _libc, _print_cb
    if _lib is None:
        try:
            handle = ctypes.CDLL("libbpf.so.1", use_errno=True)
        except OSError as exc:
            raise BpfError("cannot load libbpf.so.1 (install the libbpf1 package): %s" % exc)
        for name, (restype, argtypes) in _SIGNATURES.items():
            func = getattr(handle, name)
            func.restype = restype
            func.argtypes = argtypes
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.vsnprintf.restype = ctypes.c_int
        _libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, _P]
        _print_cb = _PRINT_FN(_on_libbpf_print)
        handle.libbpf_set_print(_print_cb)
        _lib = handle
    return _lib


def libbpf_version():
    """'major.minor' of the loaded libbpf."""
    return "%d.%d" % (lib().libbpf_major_version(), lib().libbpf_minor_version())


def _on_libbpf_print(level, fmt, args):
    if level > LIBBPF_INFO:
        return 0
    buf = ctypes.create_string_buffer(4096)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    _messages.append(buf.value.decode("utf-8", "replace").rstrip("\n"))
    del _messages[:-MESSAGES_KEPT]
    return 0


def _take_messages():
    out = []
    for msg in _messages:
        out.extend(msg.splitlines())
    del _messages[:]
    return out


def _errno():
    return ctypes.get_errno()


def strerror(err):
    """Text of an errno or of a libbpf error code (4000 and up)."""
    buf = ctypes.create_string_buffer(256)
    lib().libbpf_strerror(err, buf, len(buf))
    return _s(buf.value) or os.strerror(err)


def _fail(what, err=None, log_tail=""):
    err = _errno() if err is None else abs(err)
    raise BpfError("%s: %s" % (what, strerror(err) if err else "failed"), log_tail, err)


def _check_fd(fd, what):
    if fd < 0:
        _fail(what, -fd if fd != -1 else None)
    return fd


def _check(ret, what):
    if ret < 0:
        _fail(what, -ret if ret != -1 else None)
    return ret


def _s(value):
    return value.decode("utf-8", "replace") if value is not None else None


def _enum_str(func, value):
    name = getattr(lib(), func)(value)
    return _s(name) if name else str(value)


def prog_type_str(value):
    return _enum_str("libbpf_bpf_prog_type_str", value)


def attach_type_str(value):
    return _enum_str("libbpf_bpf_attach_type_str", value)


def link_type_str(value):
    return _enum_str("libbpf_bpf_link_type_str", value)


def map_type_str(value):
    return _enum_str("libbpf_bpf_map_type_str", value)


# ---------------------------------------------------------------- packing

def pack(value, size, what="value"):
    """Bytes of ``size`` for an int (little-endian), a str (UTF-8) or bytes (NUL-padded)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        bits = size * 8
        if not -(1 << (bits - 1)) <= value < (1 << bits):
            raise ValueError("%s %d does not fit in %d bytes" % (what, value, size))
        return (value & ((1 << bits) - 1)).to_bytes(size, "little")
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        if len(value) > size:
            raise ValueError("%s is %d bytes long, more than its %d bytes"
                             % (what, len(value), size))
        return bytes(value) + b"\0" * (size - len(value))
    raise ValueError("%s must be an int, a str or bytes, not %s" % (what, type(value).__name__))


# ---------------------------------------------------------------- BTF

class Btf:
    """Read-only view of a libbpf ``struct btf`` (not owned unless ``owned``)."""

    def __init__(self, ptr, owned=False):
        self.ptr = ptr
        self.owned = owned

    def close(self):
        if self.owned and self.ptr:
            lib().btf__free(self.ptr)
        self.ptr = None

    def find(self, name, kind):
        """Type id of ``name`` with BTF ``kind`` ('func', 'struct', ...), or None."""
        tid = lib().btf__find_by_name_kind(self.ptr, name.encode(), BTF_KINDS[kind])
        return tid if tid > 0 else None

    def type(self, tid):
        ptr = lib().btf__type_by_id(self.ptr, tid)
        if not ptr:
            raise BpfError("BTF has no type id %d" % tid)
        return ptr.contents

    def name(self, tid):
        return _s(lib().btf__name_by_offset(self.ptr, self.type(tid).name_off)) or ""

    def _tail(self, tid, struct_type, count):
        base = ctypes.addressof(self.type(tid)) + ctypes.sizeof(BtfType)
        return (struct_type * count).from_address(base)

    def strip(self, tid):
        """Type id behind typedef/const/volatile/restrict/type_tag modifiers."""
        while self.type(tid).kind in BTF_MODIFIERS:
            tid = self.type(tid).size_or_type
        return tid

    def datasec_vars(self, section):
        """[(var_name, offset, size, var_type_id)] of DATASEC ``section``."""
        sec = self.find(section, "datasec")
        return [] if sec is None else self.datasec_vars_by_id(sec)

    def datasec_vars_by_id(self, sec):
        """[(var_name, offset, size, var_type_id)] of the DATASEC type ``sec``."""
        out = []
        for info in self._tail(sec, BtfVarSecinfo, self.type(sec).vlen):
            var = self.type(info.type)
            if var.kind == BTF_KIND_VAR:
                out.append((self.name(info.type), info.offset, info.size, var.size_or_type))
        return out

    def extern_funcs(self):
        """Names of the FUNCs with extern linkage (kfuncs an object calls)."""
        return [self.name(tid) for tid in range(1, lib().btf__type_cnt(self.ptr))
                if self.type(tid).kind == BTF_KIND_FUNC
                and self.type(tid).vlen == BTF_FUNC_EXTERN]

    def is_number(self, tid):
        """True when type ``tid`` is an integer or enum (not a char array)."""
        return self.type(self.strip(tid)).kind in (BTF_KIND_INT, BTF_KIND_ENUM, BTF_KIND_ENUM64)

    def render(self, tid, data):
        """A var's value as bpftool shows metadata: char arrays as text, ints as numbers."""
        tid = self.strip(tid)
        t = self.type(tid)
        if t.kind == BTF_KIND_ARRAY:
            elem = self.strip(self._tail(tid, BtfArray, 1)[0].type)
            if self.type(elem).kind == BTF_KIND_INT and self.type(elem).size_or_type == 1:
                return data.split(b"\0", 1)[0].decode("utf-8", "replace")
        if t.kind == BTF_KIND_INT:
            enc = self._tail(tid, ctypes.c_uint32, 1)[0]
            signed = bool((enc >> 24) & BTF_INT_SIGNED)
            return str(int.from_bytes(data, "little", signed=signed))
        if t.kind in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            return str(int.from_bytes(data, "little", signed=True))
        return data.hex()


_vmlinux = None
_kernel_btfs = {}


def vmlinux_btf():
    """The running kernel's BTF (/sys/kernel/btf/vmlinux), parsed once."""
    global _vmlinux
    if _vmlinux is None:
        ptr = lib().btf__load_vmlinux_btf()
        if not ptr:
            _fail("cannot read the kernel's BTF (/sys/kernel/btf/vmlinux; "
                  "the kernel needs CONFIG_DEBUG_INFO_BTF=y)")
        _vmlinux = Btf(ptr)
    return _vmlinux


def vmlinux_btf_has(name, kind="func"):
    """True when the running kernel's BTF has a type ``name`` of ``kind``."""
    return vmlinux_btf().find(name, kind) is not None


# r0 = 0; exit: a program that does nothing
_EMPTY_PROGRAM = bytes([0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
_tracing = {}


def fexit_allowed(func):
    """True when the running kernel loads and attaches an fexit program on ``func`` (an
    empty one, detached at once): kernels without BTF, without the ftrace trampolines, or
    that refuse tracing programs (lockdown) say no.  Asked once per process."""
    if func not in _tracing:
        _tracing[func] = False
        try:
            tid = vmlinux_btf().find(func, "func")
        except BpfError:
            tid = None
        if tid is not None:
            opts = ProgLoadOpts(sz=ctypes.sizeof(ProgLoadOpts), expected_attach_type=BPF_TRACE_FEXIT,
                                attach_btf_id=tid)
            insns = ctypes.create_string_buffer(_EMPTY_PROGRAM, len(_EMPTY_PROGRAM))
            prog = lib().bpf_prog_load(BPF_PROG_TYPE_TRACING, b"ebpf_oom_probe", b"GPL", insns,
                                       len(_EMPTY_PROGRAM) // 8, ctypes.byref(opts))
            _take_messages()
            if prog >= 0:
                link = lib().bpf_link_create(prog, 0, BPF_TRACE_FEXIT, None)
                _tracing[func] = link >= 0
                if link >= 0:
                    os.close(link)
                os.close(prog)
    return _tracing[func]


def kernel_btf(btf_obj_id):
    """A kernel BTF object (vmlinux or a module's split BTF) by its id, cached."""
    if btf_obj_id not in _kernel_btfs:
        ptr = lib().btf__load_from_kernel_by_id(btf_obj_id)
        if not ptr:
            ptr = lib().btf__load_from_kernel_by_id_split(btf_obj_id, vmlinux_btf().ptr)
        if not ptr:
            _fail("cannot read BTF object %d" % btf_obj_id)
        _kernel_btfs[btf_obj_id] = Btf(ptr)
    return _kernel_btfs[btf_obj_id]


def btf_by_id(btf_obj_id):
    """A BTF object by id, owned by the caller (close it)."""
    ptr = lib().btf__load_from_kernel_by_id(btf_obj_id)
    if not ptr:
        _fail("cannot read BTF object %d" % btf_obj_id)
    return Btf(ptr, owned=True)


# ---------------------------------------------------------------- object

class Link:
    """An attached link; ``pin`` it or it goes away with ``close``."""

    def __init__(self, ptr, program):
        self.ptr = ptr
        self.program = program

    @property
    def fd(self):
        return lib().bpf_link__fd(self.ptr)

    def pin(self, path):
        ret = lib().bpf_link__pin(self.ptr, path.encode())
        if ret < 0:
            _fail("cannot pin link of program %s at %s" % (self.program, path), -ret)

    def read_iter(self):
        """Run an iterator program's link once: everything it wrote, as bytes."""
        return iter_read(self.fd, self.program)

    def close(self):
        """Drop this process's reference (a pinned link stays attached)."""
        if self.ptr:
            lib().bpf_link__destroy(self.ptr)
        self.ptr = None


class Program:
    def __init__(self, ptr):
        self.ptr = ptr
        self.name = _s(lib().bpf_program__name(ptr))
        self.section = _s(lib().bpf_program__section_name(ptr))
        self.autoload = bool(lib().bpf_program__autoload(ptr))

    @property
    def fd(self):
        return lib().bpf_program__fd(self.ptr)

    @property
    def type(self):
        return prog_type_str(lib().bpf_program__type(self.ptr))

    @property
    def expected_attach_type(self):
        return attach_type_str(lib().bpf_program__expected_attach_type(self.ptr))

    def attach(self):
        """Attach by section (fmod_ret/, fentry/, tp_btf/, raw_tp/, ...) -> Link."""
        _take_messages()
        ptr = lib().bpf_program__attach(self.ptr)
        if not ptr:
            err = _errno()
            _fail("cannot attach program %s (section %s)" % (self.name, self.section),
                  err, "\n".join(_take_messages()[-LIBBPF_TAIL_LINES:]))
        return Link(ptr, self.name)


class Map:
    def __init__(self, ptr):
        self.ptr = ptr
        self.name = _s(lib().bpf_map__name(ptr))
        self.type = lib().bpf_map__type(ptr)
        self.key_size = lib().bpf_map__key_size(ptr)
        self.value_size = lib().bpf_map__value_size(ptr)
        self.max_entries = lib().bpf_map__max_entries(ptr)
        self.flags = lib().bpf_map__map_flags(ptr)
        self.internal = bool(lib().bpf_map__is_internal(ptr))

    @property
    def fd(self):
        return lib().bpf_map__fd(self.ptr)

    @property
    def type_name(self):
        return map_type_str(self.type)

    def reuse_fd(self, fd):
        """Use the existing map ``fd`` (e.g. a pinned one) instead of creating one."""
        ret = lib().bpf_map__reuse_fd(self.ptr, fd)
        if ret < 0:
            _fail("cannot reuse map fd for %s" % self.name, -ret)
        # libbpf takes the pinned map's definition; keep ours in step.
        self.__init__(self.ptr)

    def initial_value(self):
        size = ctypes.c_size_t()
        ptr = lib().bpf_map__initial_value(self.ptr, ctypes.byref(size))
        return ctypes.string_at(ptr, size.value) if ptr else b""

    def set_initial_value(self, data):
        buf = ctypes.create_string_buffer(data, len(data))
        ret = lib().bpf_map__set_initial_value(self.ptr, buf, len(data))
        if ret < 0:
            _fail("cannot set the initial value of map %s" % self.name, -ret)


def weak_symbols(elf):
    """Names of the undefined weak symbols of an ELF64 little-endian object (its .symtab)."""
    shoff, shentsize, shnum = (int.from_bytes(elf[0x28:0x30], "little"),
                               int.from_bytes(elf[0x3a:0x3c], "little"),
                               int.from_bytes(elf[0x3c:0x3e], "little"))
    sections = [elf[shoff + i * shentsize:shoff + (i + 1) * shentsize] for i in range(shnum)]
    names = set()
    for header in sections:
        if int.from_bytes(header[4:8], "little") != 2:  # SHT_SYMTAB
            continue
        offset, size = int.from_bytes(header[24:32], "little"), int.from_bytes(header[32:40], "little")
        strtab = sections[int.from_bytes(header[40:44], "little")]
        stroff = int.from_bytes(strtab[24:32], "little")
        for at in range(offset, offset + size, 24):  # Elf64_Sym
            sym = elf[at:at + 24]
            if sym[4] >> 4 == 2 and int.from_bytes(sym[6:8], "little") == 0:  # STB_WEAK, SHN_UNDEF
                start = stroff + int.from_bytes(sym[0:4], "little")
                names.add(elf[start:elf.index(b"\0", start)].decode())
    return names


class Object:
    """A BPF ELF object opened with libbpf (nothing reaches the kernel before load())."""

    def __init__(self, path):
        with open(path, "rb") as handle:
            data = handle.read()
        self.path = path
        self.data = data
        self.sha256 = hashlib.sha256(data).hexdigest()
        self._data = ctypes.create_string_buffer(data, len(data))
        self._log = ctypes.create_string_buffer(KERNEL_LOG_SIZE)
        opts = ObjectOpenOpts(sz=ctypes.sizeof(ObjectOpenOpts), object_name=OBJECT_NAME.encode(),
                              kernel_log_buf=ctypes.cast(self._log, _P),
                              kernel_log_size=KERNEL_LOG_SIZE, kernel_log_level=0)
        _take_messages()
        self.ptr = lib().bpf_object__open_mem(self._data, len(data), ctypes.byref(opts))
        if not self.ptr:
            err = _errno()
            _fail("%s is not a BPF object libbpf can open" % path, err,
                  "\n".join(_take_messages()[-LIBBPF_TAIL_LINES:]))
        self.loaded = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Unload: programs and maps not pinned or linked go away."""
        if self.ptr:
            lib().bpf_object__close(self.ptr)
        self.ptr = None

    def select(self, names):
        """Load only the programs named (before load()); BpfError when one of them is
        not in the object."""
        present = dict((p.name, p) for p in self.all_programs())
        unknown = sorted(set(names) - set(present))
        if unknown:
            raise BpfError("the object %s has no program %s (it has: %s)"
                           % (self.path, ", ".join(unknown), ", ".join(sorted(present))))
        for name, prog in present.items():
            lib().bpf_program__set_autoload(prog.ptr, name in names)

    def all_programs(self):
        """Every program of the object, loaded or not."""
        out, ptr = [], None
        while True:
            ptr = lib().bpf_object__next_program(self.ptr, ptr)
            if not ptr:
                return out
            out.append(Program(ptr))

    def programs(self):
        """The programs that load (SEC("?...") ones switched off are left out)."""
        return [prog for prog in self.all_programs() if prog.autoload]

    def maps(self):
        out, ptr = [], None
        while True:
            ptr = lib().bpf_object__next_map(self.ptr, ptr)
            if not ptr:
                return out
            out.append(Map(ptr))

    def map(self, name):
        """A map by name (internal ones by section name, e.g. '.rodata'), or None."""
        ptr = lib().bpf_object__find_map_by_name(self.ptr, name.encode())
        return Map(ptr) if ptr else None

    def kernel_symbols(self):
        """[(name, btf_kind)] the kernel's BTF must have for this object to load and attach:
        targets of fentry/fexit/fmod_ret/lsm/tp_btf/iter sections and extern kfuncs."""
        need = []
        for prog in self.programs():
            kind, _sep, target = prog.section.partition("/")
            if not target:
                continue
            if kind.endswith(".s"):  # sleepable variants
                kind = kind[:-2]
            if kind in ("fentry", "fexit", "fmod_ret"):
                need.append((target, "func"))
            elif kind == "lsm":
                need.append(("bpf_lsm_" + target, "func"))
            elif kind == "tp_btf":
                need.append(("btf_trace_" + target, "typedef"))
            elif kind == "iter":
                need.append(("bpf_iter_" + target, "func"))
        # The object's BTF as clang wrote it: libbpf marks extern FUNCs global on open.
        # A weak one (__weak) may be missing: only a program that calls it needs it.
        raw = lib().btf__parse_elf(self.path.encode(), None)
        if raw:
            btf = Btf(raw, owned=True)
            try:
                weak = weak_symbols(self.data)
                need.extend((name, "func") for name in btf.extern_funcs() if name not in weak)
            finally:
                btf.close()
        return sorted(set(need))

    def _rodata(self):
        btf = lib().bpf_object__btf(self.ptr)
        rodata = self.map(".rodata")
        if not btf or rodata is None:
            return None, {}
        return rodata, {name: (off, size, tid) for name, off, size, tid
                        in Btf(btf).datasec_vars(".rodata")}

    def globals(self):
        """{name: size} of the ``const volatile`` variables settable before load."""
        return {name: size for name, (_off, size, _tid) in self._rodata()[1].items()}

    def get_global(self, name):
        """Current bytes of a .rodata variable (its compiled or set value)."""
        rodata, table = self._rodata()
        if name not in table:
            raise BpfError("the object has no const volatile global %r" % name)
        off, size, _tid = table[name]
        return rodata.initial_value()[off:off + size]

    def get_global_text(self, name):
        """A .rodata variable rendered like bpftool renders metadata (text or number)."""
        rodata, table = self._rodata()
        if name not in table:
            return None
        off, size, tid = table[name]
        value = rodata.initial_value()[off:off + size]
        return Btf(lib().bpf_object__btf(self.ptr)).render(tid, value)

    def set_global(self, name, value):
        """Set a ``const volatile`` global before load (int, str or bytes)."""
        if self.loaded:
            raise BpfError("global %s: the object is already loaded" % name)
        rodata, table = self._rodata()
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise BpfError("the object has no const volatile global %r (it has: %s)"
                           % (name, known))
        off, size, tid = table[name]
        try:
            if isinstance(value, str) and Btf(lib().bpf_object__btf(self.ptr)).is_number(tid):
                # Ansible templating hands numbers over as text: "1234" means 1234.
                value = int(value, 0)
            packed = pack(value, size, "global %s" % name)
        except ValueError as exc:
            raise BpfError(str(exc))
        data = bytearray(rodata.initial_value())
        data[off:off + size] = packed
        rodata.set_initial_value(bytes(data))

    def load(self):
        """Load every program and map into the kernel (raises BpfError with log tail)."""
        for m in self.maps():
            if lib().bpf_map__pin_path(m.ptr):
                # The caller pins (bpffs layout); libbpf's own pinning by name is off.
                lib().bpf_map__set_pin_path(m.ptr, None)
        _take_messages()
        ctypes.memset(self._log, 0, 1)
        ret = lib().bpf_object__load(self.ptr)
        if ret < 0:
            libbpf_lines = _take_messages()
            verifier = self._log.value.decode("utf-8", "replace").splitlines()
            tail = verifier[-LOG_TAIL_LINES:] + libbpf_lines[-LIBBPF_TAIL_LINES:]
            _fail("the kernel refused to load %s" % self.path, -ret, "\n".join(tail))
        self.loaded = True


# ---------------------------------------------------------------- fds and pins

def obj_get(path):
    """An fd for the object pinned at ``path`` (BpfError when missing)."""
    return _check_fd(lib().bpf_obj_get(path.encode()), "cannot open pin %s" % path)


def obj_pin(fd, path):
    _check(lib().bpf_obj_pin(fd, path.encode()), "cannot pin at %s" % path)


@contextlib.contextmanager
def pinned(path):
    """``with pinned(path) as fd:`` an fd on a pinned object, closed afterwards."""
    fd = obj_get(path)
    try:
        yield fd
    finally:
        os.close(fd)


def prog_fd_by_id(prog_id):
    return _check_fd(lib().bpf_prog_get_fd_by_id(prog_id), "no program with id %d" % prog_id)


def map_fd_by_id(map_id):
    return _check_fd(lib().bpf_map_get_fd_by_id(map_id), "no map with id %d" % map_id)


def link_fd_by_id(link_id):
    return _check_fd(lib().bpf_link_get_fd_by_id(link_id), "no link with id %d" % link_id)


def _info(fd, info, what):
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), what)
    return info


def prog_info(fd):
    """{id, name, tag, type, type_id, map_ids, btf_id, attach_btf_obj_id, attach_btf_id,
    load_time, run_cnt, verified_insns}."""
    info = _info(fd, BpfProgInfo(), "not a BPF program fd")
    ids = (ctypes.c_uint32 * max(info.nr_map_ids, 1))()
    if info.nr_map_ids:
        again = BpfProgInfo(nr_map_ids=info.nr_map_ids, map_ids=ctypes.addressof(ids))
        _info(fd, again, "not a BPF program fd")
    return {
        "id": info.id,
        "name": _s(info.name),
        "tag": bytes(info.tag).hex(),
        "type": prog_type_str(info.type),
        "type_id": info.type,
        "map_ids": sorted(ids[:info.nr_map_ids]),
        "btf_id": info.btf_id,
        "attach_btf_obj_id": info.attach_btf_obj_id,
        "attach_btf_id": info.attach_btf_id,
        "load_time": info.load_time,
        "run_cnt": info.run_cnt,
        "verified_insns": info.verified_insns,
    }


def map_info(fd):
    """{id, name, type, type_id, key_size, value_size, max_entries, flags, btf_id,
    btf_value_type_id}."""
    info = _info(fd, BpfMapInfo(), "not a BPF map fd")
    return {
        "id": info.id,
        "name": _s(info.name),
        "type": map_type_str(info.type),
        "type_id": info.type,
        "key_size": info.key_size,
        "value_size": info.value_size,
        "max_entries": info.max_entries,
        "flags": info.map_flags,
        "btf_id": info.btf_id,
        "btf_value_type_id": info.btf_value_type_id,
    }


def btf_type_name(btf_obj_id, type_id):
    """Name of ``type_id`` in kernel BTF object ``btf_obj_id``."""
    return kernel_btf(btf_obj_id).name(type_id)


def link_info(fd):
    """{id, type, prog_id, attach_type, target, target_obj_id, target_btf_id}.

    ``target`` is the tracepoint for raw_tp/tp_btf links (e.g. 'mark_victim') and
    the kernel function for tracing links (fentry/fexit/fmod_ret).
    """
    name = ctypes.create_string_buffer(256)
    info = BpfLinkInfo()
    info.raw_tracepoint.tp_name = ctypes.addressof(name)
    info.raw_tracepoint.tp_name_len = len(name)
    _info(fd, info, "not a BPF link fd")
    out = {"id": info.id, "type": link_type_str(info.type), "type_id": info.type,
           "prog_id": info.prog_id, "attach_type": None, "target": None,
           "target_obj_id": 0, "target_btf_id": 0}
    if info.type == BPF_LINK_TYPE_RAW_TRACEPOINT:
        out["target"] = _s(name.value)
        out["attach_type"] = _raw_tp_attach_type(info.prog_id)
    elif info.type == BPF_LINK_TYPE_TRACING:
        t = info.tracing
        out.update(attach_type=attach_type_str(t.attach_type), target_obj_id=t.target_obj_id,
                   target_btf_id=t.target_btf_id)
        if t.target_btf_id:
            out["target"] = btf_type_name(t.target_obj_id, t.target_btf_id)
    return out


def _raw_tp_attach_type(prog_id):
    """tp_btf programs are tracing programs attached as trace_raw_tp; raw_tp are not."""
    if not prog_id:
        return None
    fd = lib().bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return None
    try:
        ptype = _info(fd, BpfProgInfo(), "not a BPF program fd").type
    finally:
        os.close(fd)
    if ptype == BPF_PROG_TYPE_TRACING:
        return attach_type_str(BPF_TRACE_RAW_TP)
    return "raw_tp" if ptype == BPF_PROG_TYPE_RAW_TRACEPOINT else None


# ---------------------------------------------------------------- map ops

def _buf(data):
    return ctypes.create_string_buffer(bytes(data), len(data))


def map_lookup(fd, key, value_size):
    """Value bytes for ``key`` bytes, or None when absent."""
    value = ctypes.create_string_buffer(value_size)
    if lib().bpf_map_lookup_elem(fd, _buf(key), value) < 0:
        err = _errno()
        if err == 2:  # ENOENT
            return None
        _fail("map lookup failed", err)
    return value.raw


def map_update(fd, key, value, flags=BPF_ANY):
    _check(lib().bpf_map_update_elem(fd, _buf(key), _buf(value), flags), "map update failed")


def map_delete(fd, key):
    """Delete ``key``; True when it was there."""
    if lib().bpf_map_delete_elem(fd, _buf(key)) < 0:
        err = _errno()
        if err == 2:
            return False
        _fail("map delete failed", err)
    return True


def map_keys(fd, key_size):
    keys, prev = [], None
    nxt = ctypes.create_string_buffer(key_size)
    while True:
        ret = lib().bpf_map_get_next_key(fd, _buf(prev) if prev is not None else None, nxt)
        if ret < 0:
            err = _errno()
            if err == 2:
                return keys
            _fail("map iteration failed", err)
        prev = nxt.raw
        keys.append(prev)


def map_items(fd, key_size=None, value_size=None):
    """[(key_bytes, value_bytes)] of every element (sizes read from the map when omitted)."""
    if key_size is None or value_size is None:
        info = map_info(fd)
        key_size, value_size = info["key_size"], info["value_size"]
    out = []
    for key in map_keys(fd, key_size):
        value = map_lookup(fd, key, value_size)
        if value is not None:
            out.append((key, value))
    return out


def map_create(map_type, key_size, value_size, max_entries, name, flags=0):
    """A new map fd (``map_type`` an int such as BPF_MAP_TYPE_ARRAY)."""
    opts = MapCreateOpts(sz=ctypes.sizeof(MapCreateOpts), map_flags=flags)
    return _check_fd(lib().bpf_map_create(map_type, name.encode(), key_size, value_size,
                                          max_entries, ctypes.byref(opts)),
                     "cannot create map %s" % name)


def map_freeze(fd):
    """Make a map read-only for user space from now on."""
    _check(lib().bpf_map_freeze(fd), "cannot freeze map")


# membarrier(2): MEMBARRIER_CMD_GLOBAL waits for an RCU grace period (synchronize_rcu).
_NR_MEMBARRIER = {"x86_64": 324, "aarch64": 283}
MEMBARRIER_CMD_GLOBAL = 1


def wait_for_programs():
    """Wait until every tracing program running now has returned: such programs run
    inside an RCU read-side section, and MEMBARRIER_CMD_GLOBAL waits for a grace period.
    Where membarrier is not there (or nohz_full refuses it), a short sleep instead."""
    nr = _NR_MEMBARRIER.get(os.uname().machine)
    lib()
    if nr is None or _libc.syscall(nr, MEMBARRIER_CMD_GLOBAL, 0) != 0:
        time.sleep(0.05)


def map_type_supported(map_type):
    """True when the running kernel creates maps of ``map_type`` (libbpf's probe)."""
    return lib().libbpf_probe_bpf_map_type(map_type, None) == 1


# ---------------------------------------------------------------- iterators, ring buffers

def iter_read(link_fd, name=None):
    """Run the iterator of an iter link (``link_fd``, e.g. of a pin) once: everything it
    wrote, as bytes."""
    fd = _check_fd(lib().bpf_iter_create(link_fd), "cannot run the iterator %s"
                   % (name or "of link fd %d" % link_fd))
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


class RingBuffer:
    """libbpf's consumer of a BPF ring buffer map (``map_fd``, which the caller keeps
    open): ``poll(timeout_ms)`` waits for records and returns each one's bytes."""

    def __init__(self, map_fd):
        self._records = []
        self._callback = _SAMPLE_FN(self._sample)  # kept alive as long as the ring buffer
        _take_messages()
        self.ptr = lib().ring_buffer__new(map_fd, self._callback, None, None)
        if not self.ptr:
            _fail("cannot read the ring buffer of map fd %d" % map_fd, None,
                  "\n".join(_take_messages()[-LIBBPF_TAIL_LINES:]))

    def _sample(self, _ctx, data, size):
        self._records.append(ctypes.string_at(data, size))
        return 0

    def _take(self, ret, what):
        if ret < 0 and -ret != errno.EINTR:  # a signal woke the wait: not an error
            _fail("%s the ring buffer" % what, -ret)
        out, self._records = self._records, []
        return out

    def poll(self, timeout_ms):
        """The records that arrive within ``timeout_ms`` (at least one, or none at the end
        of the wait or when a signal came)."""
        return self._take(lib().ring_buffer__poll(self.ptr, timeout_ms), "cannot poll")

    def consume(self):
        """The records there now, without waiting."""
        return self._take(lib().ring_buffer__consume(self.ptr), "cannot consume")

    def close(self):
        if self.ptr:
            lib().ring_buffer__free(self.ptr)
        self.ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- metadata

def prog_metadata(prog_fd, prefix):
    """{name without ``prefix``: value} of the .rodata variables of a loaded program whose
    name starts with ``prefix`` (bpftool shows those of 'bpf_metadata_' as metadata)."""
    out = {}
    for map_id in prog_info(prog_fd)["map_ids"]:
        fd = lib().bpf_map_get_fd_by_id(map_id)
        if fd < 0:
            continue
        try:
            info = map_info(fd)
            if (info["type_id"] != BPF_MAP_TYPE_ARRAY or info["key_size"] != 4
                    or info["max_entries"] != 1 or not info["btf_value_type_id"]
                    or ".rodata" not in info["name"]):
                continue
            value = map_lookup(fd, b"\0\0\0\0", info["value_size"])
        finally:
            os.close(fd)
        btf = btf_by_id(info["btf_id"])
        try:
            sec = info["btf_value_type_id"]
            if btf.type(sec).kind != BTF_KIND_DATASEC:
                continue
            for name, off, size, tid in btf.datasec_vars_by_id(sec):
                if name.startswith(prefix):
                    out[name[len(prefix):]] = btf.render(tid, value[off:off + size])
        finally:
            btf.close()
    return out
