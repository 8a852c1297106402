# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compile a BPF C source into a CO-RE object, content-addressed.

The user's source is compiled through a small wrapper unit that defines the
collection's metadata (`bpf_metadata_ebpf_oom_*`, read-only data that bpftool
and the loader read back from a loaded program) and then #includes the source,
so diagnostics name the user's file.  The wrapper is preprocessed once; the
cache key is the sha256 of that preprocessed text, the flags and the clang
version, so the same input never compiles twice:
CACHE_DIR/objects/<key>.o.  CACHE_DIR/manifests/ remembers, per set of
inputs known before preprocessing, the key and the headers it read, so an
unchanged rerun does not even run the preprocessor.  The object is copied to
`dest` only when it differs.

vmlinux.h: `auto` generates one from the host's /sys/kernel/btf/vmlinux with
bpftool (CACHE_DIR/vmlinux/<BTF sha256>/vmlinux.h) and falls back to the collection's bundled
minimal header; `bundled` uses the bundled one; anything else is a path.

Standard library only; no file outside the cache and `dest` is ever written,
and in check mode nothing is written at all (new cache entries go to a
scratch directory that is removed).

Layer 2 (translation): imports only the leaf helpers.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile

from . import common
from .errors import CompileError
from .files import sha256_file, write_atomic
from .names import POLICY_NAME_MAX, check_name

CLANG_NAMES = ("clang-19", "clang-16", "clang")
CFLAGS = ("-target", "bpf", "-g", "-O2", "-D__TARGET_ARCH_x86")
BTF_VMLINUX = common.BTF_VMLINUX
TOOL_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
LOG_TAIL_LINES = 40
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_version_cache = {}


def tail(text, lines=LOG_TAIL_LINES):
    return "\n".join(text.strip().splitlines()[-lines:])


def _which(name):
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(TOOL_DIRS)
    return shutil.which(name, path=path)


def find_clang(explicit=None):
    """The clang to use: `explicit` (a path or a name), else the first of CLANG_NAMES."""
    candidates = [explicit] if explicit else CLANG_NAMES
    for name in candidates:
        found = _which(name)
        if found:
            return found
    if explicit:
        raise CompileError("clang %r not found or not executable" % explicit)
    raise CompileError("no clang found (tried %s); install clang or pass clang=PATH" % ", ".join(CLANG_NAMES))


def clang_version(clang):
    """(first line of `clang --version`, dotted version) of the given clang binary."""
    if clang not in _version_cache:
        out = subprocess.run([clang, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True, check=False).stdout
        line = (out.splitlines() or [""])[0].strip()
        m = re.search(r"version (\d+(?:\.\d+)*)", line)
        _version_cache[clang] = (line, m.group(1) if m else "")
    return _version_cache[clang]


def check_source(path):
    """Refuse a missing, unreadable, non-regular or world-writable source; return its bytes."""
    if '"' in path or "\n" in path:
        raise CompileError("source path %r contains a quote or a newline" % path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise CompileError("source %s: %s" % (path, e.strerror))
    if not stat.S_ISREG(st.st_mode):
        raise CompileError("source %s is not a regular file" % path)
    if st.st_mode & stat.S_IWOTH:
        raise CompileError("source %s is world-writable (mode %04o); refusing to compile it"
                           % (path, stat.S_IMODE(st.st_mode)))
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CompileError("source %s cannot be read: %s" % (path, e.strerror))


def define_flags(defines):
    """-D flags for a {NAME: value} dict (value None or True: defined without a value)."""
    flags = []
    for name in sorted(defines or {}):
        if not IDENT_RE.match(str(name)):
            raise CompileError("define %r is not a C identifier" % (name,))
        value = defines[name]
        if value is None or value is True:
            flags.append("-D%s" % name)
        else:
            if isinstance(value, bool):
                value = int(value)
            value = str(value)
            if "\n" in value:
                raise CompileError("define %s has a newline in its value" % name)
            flags.append("-D%s=%s" % (name, value))
    return flags


def _c_string(text):
    if any(c in text for c in '"\\\n'):
        raise CompileError("metadata value %r cannot contain quotes, backslashes or newlines" % text)
    return '"%s"' % text


def wrapper_text(source_sha256, policy_name=None, src=None, content=None):
    """The translation unit that is compiled: metadata first, then the user's code."""
    lines = [
        "/* ebpf.oom compiler wrapper */",
        '#line 1 "<ebpf.oom wrapper>"',
        "const volatile char %s[] = %s;" % (common.META_SOURCE_SHA256, _c_string(source_sha256)),
        "const volatile char %s[] = %s;" % (common.META_VERSION, _c_string(common.COLLECTION_VERSION)),
    ]
    if policy_name:
        lines += [
            "const volatile char %s[%d] = %s;" % (common.META_POLICY, POLICY_NAME_MAX + 1,
                                                  _c_string(policy_name)),
            "#define EBPF_OOM_POLICY_NAME %s" % _c_string(policy_name),
        ]
    if src is not None:
        lines.append('#include "%s"' % src)
    else:
        lines += ['#line 1 "<content>"', content]
    return "\n".join(lines) + "\n"


class _Store:
    """The cache directory; in check mode new entries go to a scratch directory instead."""

    def __init__(self, root, scratch=None):
        self.root = root
        self.scratch = scratch

    def lookup(self, *rel):
        path = os.path.join(self.root, *rel)
        return path if os.path.exists(path) else None

    def target(self, *rel):
        """Where a new entry is written (its parent directory created, 0755)."""
        path = os.path.join(self.scratch or self.root, *rel)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        return path


def _run(argv, stdin=None):
    return subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          cwd="/", check=False)


def bundled_dir(store, headers):
    """A directory holding the bundled headers ({file name: text}), keyed by their content."""
    if not headers:
        return None
    h = hashlib.sha256()
    for name in sorted(headers):
        if os.sep in name or name.startswith("."):
            raise CompileError("bad bundled header name %r" % name)
        h.update(name.encode() + b"\0" + headers[name].encode() + b"\0")
    rel = ("include", h.hexdigest())
    found = store.lookup(*rel)
    if found:
        return found
    final = store.target(*rel)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(final))
    for name, text in headers.items():
        write_atomic(os.path.join(tmp, name), text.encode())
    os.chmod(tmp, 0o755)
    try:
        os.rename(tmp, final)
    except OSError:  # a concurrent run stored the same headers
        shutil.rmtree(tmp)
    return final


def host_vmlinux_dir(store):
    """A directory with a vmlinux.h generated from this host's BTF, or None without BTF/bpftool."""
    bpftool = _which("bpftool")
    if not os.path.exists(BTF_VMLINUX) or not bpftool:
        return None
    rel = ("vmlinux", sha256_file(BTF_VMLINUX), "vmlinux.h")
    found = store.lookup(*rel)
    if found:
        return os.path.dirname(found)
    proc = _run([bpftool, "btf", "dump", "file", BTF_VMLINUX, "format", "c"])
    if proc.returncode != 0:
        raise CompileError("bpftool could not dump %s" % BTF_VMLINUX,
                           tail(proc.stderr.decode("utf-8", "replace")))
    path = store.target(*rel)
    write_atomic(path, proc.stdout)
    return os.path.dirname(path)


def vmlinux_dir(store, vmlinux, bundled):
    """The include directory that provides "vmlinux.h" for the given mode or path."""
    if vmlinux == "auto":
        found = host_vmlinux_dir(store)
        if found:
            return found
        vmlinux = "bundled"
    if vmlinux == "bundled":
        if not bundled or not os.path.exists(os.path.join(bundled, "vmlinux.h")):
            raise CompileError("the collection's bundled vmlinux.h is not available here; "
                               "run the module through Ansible (its action plugin sends it) "
                               "or pass vmlinux=PATH")
        return bundled
    if not os.path.isfile(vmlinux):
        raise CompileError("vmlinux header %s does not exist" % vmlinux)
    if os.path.basename(vmlinux) == "vmlinux.h":
        return os.path.dirname(os.path.abspath(vmlinux))
    rel = ("vmlinux", sha256_file(vmlinux), "vmlinux.h")
    found = store.lookup(*rel)
    if found:
        return os.path.dirname(found)
    path = store.target(*rel)
    with open(vmlinux, "rb") as f:
        write_atomic(path, f.read())
    return os.path.dirname(path)


def _install(obj_path, dest, check_mode):
    """Copy the object to dest when it differs; (changed, before sha256 or None)."""
    before = sha256_file(dest) if os.path.isfile(dest) else None
    after = sha256_file(obj_path)
    if before == after:
        return False, before
    if not check_mode:
        parent = os.path.dirname(os.path.abspath(dest))
        if not os.path.isdir(parent):
            raise CompileError("directory of dest %s does not exist" % dest)
        with open(obj_path, "rb") as f:
            write_atomic(dest, f.read())
    return True, before


def parse_depfile(text):
    """The prerequisites in a Makefile rule written by clang -MD (escaped spaces kept)."""
    body = text.split(": ", 1)[1] if ": " in text else ""
    body = body.replace("\\\n", " ")
    return [t.replace("\\ ", " ") for t in re.findall(r"(?:\\ |\S)+", body)]


def _manifest_name(version_line, argv, wrapper):
    """Names what is known before preprocessing: clang, flags, include dirs, wrapper."""
    h = hashlib.sha256()
    for part in [version_line] + argv + [wrapper]:
        h.update(part.encode("utf-8") + b"\0")
    return h.hexdigest() + ".json"


def manifest_key(path):
    """The key recorded in a manifest, if every header it lists is unchanged and no
    directory they were found in (or searched) changed; else None."""
    try:
        with open(path) as f:
            manifest = json.load(f)
        for directory, mtime in manifest["dirs"].items():
            if os.stat(directory).st_mtime_ns != mtime:
                return None
        for dep, digest in manifest["deps"].items():
            if sha256_file(dep) != digest:
                return None
        return manifest["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _manifest(key, deps, search_dirs):
    dirs = sorted(set(search_dirs) | set(os.path.dirname(d) for d in deps))
    return json.dumps({"key": key, "deps": dict((d, sha256_file(d)) for d in deps),
                       "dirs": dict((d, os.stat(d).st_mtime_ns) for d in dirs)}, sort_keys=True)


def _preprocess(argv, version_line, wrapper, what):
    """(key, preprocessed text, headers read) of the wrapper unit."""
    fd, depfile = tempfile.mkstemp(prefix="ebpf-oom-deps-")
    os.close(fd)
    try:
        pre = _run(argv + ["-E", "-x", "c", "-", "-o", "-", "-MD", "-MF", depfile],
                   stdin=wrapper.encode("utf-8"))
        if pre.returncode != 0:
            raise CompileError("preprocessing %s failed" % what, tail(pre.stderr.decode("utf-8", "replace")))
        with open(depfile) as f:
            deps = parse_depfile(f.read())
    finally:
        if os.path.exists(depfile):  # clang removes it when preprocessing fails
            os.unlink(depfile)
    h = hashlib.sha256()
    for part in [version_line] + argv[1:]:
        if not part.startswith("-I"):  # include paths show in the text's line markers
            h.update(part.encode("utf-8") + b"\0")
    h.update(pre.stdout)
    return h.hexdigest(), pre.stdout, [os.path.abspath(d) for d in deps]


def compile_object(src=None, content=None, dest=None, defines=None, include_dirs=None,
                   policy_name=None, vmlinux="auto", clang=None, bundled_headers=None,
                   check_mode=False, cache_dir=None):
    """Compile `src` (a path) or `content` (C text); see the module docstring.

    Returns a dict: changed, object (dest, or the cache path without dest),
    object_sha256, source_sha256, key, cached, clang, clang_version, vmlinux,
    warnings, diff.  Raises CompileError; every input check runs before
    anything is written.

    The key is the sha256 of the clang version, the flags and the preprocessed
    wrapper.  A manifest per (clang, flags, include dirs, wrapper) remembers the
    key with the headers it read (their sha256) and the directories they were
    found in (their mtimes), so an unchanged rerun does not even preprocess.
    """
    if (src is None) == (content is None):
        raise CompileError("give exactly one of src and content")
    if policy_name is not None:
        check_name(policy_name, CompileError)
    if src is not None:
        src = os.path.abspath(src)
        data = check_source(src)
    else:
        data = content.encode("utf-8")
    for d in include_dirs or ():
        if not os.path.isdir(d):
            raise CompileError("include directory %s does not exist" % d)
    if dest is not None and os.path.isdir(dest):
        raise CompileError("dest %s is a directory; name the object file" % dest)
    flags = list(CFLAGS) + define_flags(defines)
    clang = find_clang(clang)
    version_line, version = clang_version(clang)
    source_sha256 = hashlib.sha256(data).hexdigest()
    wrapper = wrapper_text(source_sha256, policy_name, src=src,
                           content=None if src is not None else content)
    what = src or "<content>"

    scratch = tempfile.mkdtemp(prefix="ebpf-oom-compile-") if check_mode else None
    try:
        store = _Store(cache_dir or common.CACHE_DIR, scratch)
        bundled = bundled_dir(store, bundled_headers)
        vdir = vmlinux_dir(store, vmlinux, bundled)
        incs = [os.path.abspath(d) for d in include_dirs or ()] + [vdir]
        if bundled and bundled != vdir:
            incs.append(bundled)
        argv = [clang] + flags + ["-I%s" % d for d in incs]
        mname = _manifest_name(version_line, argv[1:], wrapper)
        found = store.lookup("manifests", mname)
        key = manifest_key(found) if found else None
        obj = store.lookup("objects", key + ".o") if key else None
        warnings = ""
        cached = obj is not None
        if obj is None:
            key, pre, deps = _preprocess(argv, version_line, wrapper, what)
            obj = store.lookup("objects", key + ".o")
            cached = obj is not None
            if obj is None:
                obj = store.target("objects", key + ".o")
                tmp = obj + ".tmp-%d" % os.getpid()
                cc = _run([clang] + flags + ["-x", "cpp-output", "-c", "-", "-o", tmp], stdin=pre)
                warnings = tail(cc.stderr.decode("utf-8", "replace"))
                if cc.returncode != 0:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                    raise CompileError("compiling %s failed" % what, warnings)
                os.chmod(tmp, 0o644)
                os.rename(tmp, obj)
            search = incs + ([os.path.dirname(src)] if src else [])
            write_atomic(store.target("manifests", mname), _manifest(key, deps, search).encode())
        object_sha256 = sha256_file(obj)
        changed, before = False, None
        if dest is not None:
            changed, before = _install(obj, dest, check_mode)
        return dict(
            changed=changed,
            object=dest if dest is not None else os.path.join(store.root, "objects", key + ".o"),
            object_sha256=object_sha256,
            source_sha256=source_sha256,
            key=key,
            cached=cached,
            clang=clang,
            clang_version=version,
            vmlinux=os.path.join(vdir, "vmlinux.h"),
            warnings=warnings,
            diff=dict(before={"sha256": before}, after={"sha256": object_sha256}),
        )
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
