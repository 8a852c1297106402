# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compile a BPF C source into a CO-RE object, content-addressed.

The user's source is read once and compiled through a small wrapper unit that
defines the collection's metadata (`bpf_metadata_ebpf_oom_*`, read-only data
that bpftool and the loader read back from a loaded program, among them the
source's sha256) and then holds the very bytes that were hashed, after a
`#line` that names the user's file (so diagnostics name it). Clang reads the
wrapper from its stdin, never the source by its path: what is hashed is what
is compiled. The source and every header clang reads must be trusted
(files.read_trusted: owned by root, or by the user compiling, and writable by
no one else).

The wrapper is preprocessed once; the cache key is the sha256 of that
preprocessed text, the flags and the clang version, so the same input never
compiles twice. Objects are stored by their own content,
CACHE_DIR/objects/<object sha256>.o, and re-hashed whenever one is used;
CACHE_DIR/keys/<key> names the object of a key. CACHE_DIR/manifests/
remembers, per set of inputs known before preprocessing, the key and the
headers it read (their sha256), so an unchanged rerun does not even run the
preprocessor. Every cache file must be trusted too. The object is copied to
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
import subprocess
import tempfile

from . import common
from .errors import CompileError
from .files import read_file, read_trusted, sha256_file, trust_problem, write_atomic
from .names import POLICY_NAME_MAX, check_name

CLANG_NAMES = ("clang-19", "clang-16", "clang")
CFLAGS = ("-target", "bpf", "-g", "-O2", "-D__TARGET_ARCH_x86")
BTF_VMLINUX = common.BTF_VMLINUX
TOOL_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
LOG_TAIL_LINES = 40
CACHE_FILE_MODE = 0o644
SHA256_RE = re.compile(r"[0-9a-f]{64}")
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # fullmatch: "A\n" is no identifier
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
    """The bytes of the source: refused when missing, not a regular file, or not trusted
    (files.read_trusted: owned by root or the user compiling, writable by no one else)."""
    if '"' in path or "\n" in path or "\\" in path:
        raise CompileError("source path %r contains a quote, a backslash or a newline" % path)
    data = read_trusted(path, CompileError)
    return data


def define_flags(defines):
    """-D flags for a {NAME: value} dict (value None or True: defined without a value)."""
    flags = []
    for name in sorted(defines or {}):
        if not IDENT_RE.fullmatch(str(name)):
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


def wrapper_text(source_sha256, policy_name=None, name="<content>"):
    """The start of the translation unit that is compiled: the metadata, then a `#line`
    naming the source ``name``; the source's bytes follow it (wrapper())."""
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
    lines.append('#line 1 %s' % _c_string(name))
    return "\n".join(lines) + "\n"


def wrapper(source_sha256, policy_name, name, data):
    """The whole translation unit (bytes): the wrapper text and the source's bytes."""
    return wrapper_text(source_sha256, policy_name, name).encode("utf-8") + data + b"\n"


class _Store:
    """The cache directory; in check mode new entries go to a scratch directory instead.
    Every file read from it must be trusted; an object is used only when its content
    still has the sha256 it is stored under."""

    def __init__(self, root, scratch=None):
        self.root = root
        self.scratch = scratch

    def lookup(self, *rel):
        """The path of an entry, in the scratch directory first (check mode), or None."""
        for base in (self.scratch, self.root):
            path = os.path.join(base, *rel) if base else None
            if path and os.path.exists(path):
                return path
        return None

    def read(self, *rel):
        """The bytes of an entry (None when there is none); CompileError when untrusted."""
        path = self.lookup(*rel)
        return read_trusted(path, CompileError) if path else None

    def target(self, *rel):
        """Where a new entry is written (its parent directory created, 0755)."""
        path = os.path.join(self.scratch or self.root, *rel)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        return path

    def object(self, digest):
        """The bytes of the object stored under ``digest`` if its content still has that
        sha256, else None (it is compiled again)."""
        data = self.read("objects", digest + ".o") if SHA256_RE.fullmatch(digest or "") else None
        if data is None or hashlib.sha256(data).hexdigest() != digest:
            return None
        return data

    def keyed(self, key):
        """The sha256 of the object recorded for ``key``, or None."""
        data = self.read("keys", key)
        return data.decode("ascii", "replace").strip() if data else None

    def put(self, key, data):
        """Store an object under its sha256 and record it for ``key``; its sha256."""
        digest = hashlib.sha256(data).hexdigest()
        write_atomic(self.target("objects", digest + ".o"), data, CACHE_FILE_MODE)
        write_atomic(self.target("keys", key), digest + "\n", CACHE_FILE_MODE)
        return digest


def _run(argv, stdin=None, cwd="/"):
    return subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          cwd=cwd, check=False)


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
        write_atomic(os.path.join(tmp, name), text.encode(), CACHE_FILE_MODE)
    fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fchmod(fd, 0o755)
    finally:
        os.close(fd)
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
    write_atomic(path, proc.stdout, CACHE_FILE_MODE)
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
    data = read_trusted(vmlinux, CompileError)  # copied: checked here, as clang would read it
    rel = ("vmlinux", hashlib.sha256(data).hexdigest(), "vmlinux.h")
    found = store.lookup(*rel)
    if found:
        return os.path.dirname(found)
    path = store.target(*rel)
    write_atomic(path, data, CACHE_FILE_MODE)
    return os.path.dirname(path)


def _install(data, dest, check_mode):
    """Write the object's bytes to dest when it differs; (changed, before sha256 or None)."""
    before = read_file(dest)  # never through a symbolic link
    before = hashlib.sha256(before).hexdigest() if before is not None else None
    if before == hashlib.sha256(data).hexdigest():
        return False, before
    if not check_mode:
        parent = os.path.dirname(os.path.abspath(dest))
        if not os.path.isdir(parent):
            raise CompileError("directory of dest %s does not exist" % dest)
        write_atomic(dest, data, CACHE_FILE_MODE)
    return True, before


def parse_depfile(text):
    """The prerequisites in a Makefile rule written by clang -MD (escaped spaces kept)."""
    body = text.split(": ", 1)[1] if ": " in text else ""
    body = body.replace("\\\n", " ")
    return [t.replace("\\ ", " ") for t in re.findall(r"(?:\\ |\S)+", body)]


def _manifest_name(version_line, argv, unit):
    """Names what is known before preprocessing: clang, flags, include dirs, the unit."""
    h = hashlib.sha256()
    for part in [version_line] + argv:
        h.update(part.encode("utf-8") + b"\0")
    h.update(unit)
    return h.hexdigest() + ".json"


def manifest_key(store, name):
    """(key, object sha256) recorded in the manifest ``name``, if every header it lists
    is unchanged and still trusted and no directory they were found in (or searched)
    changed; else (None, None)."""
    try:
        data = store.read("manifests", name)
        manifest = json.loads(data.decode("utf-8")) if data else None
        if manifest is None:
            return None, None
        for directory, mtime in manifest["dirs"].items():
            if os.stat(directory).st_mtime_ns != mtime:
                return None, None
        for dep, digest in manifest["deps"].items():
            if hashlib.sha256(read_trusted(dep, CompileError)).hexdigest() != digest:
                return None, None
        return manifest["key"], manifest["object_sha256"]
    except (CompileError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, None


def _manifest(key, digest, deps, search_dirs):
    """The manifest of a compile: its key, its object, the headers clang read (each
    checked and hashed here) and the directories they were found in or searched."""
    dirs = sorted(set(search_dirs) | set(os.path.dirname(d) for d in deps))
    headers = dict((d, hashlib.sha256(read_trusted(d, CompileError)).hexdigest()) for d in deps)
    return json.dumps({"key": key, "object_sha256": digest, "deps": headers,
                       "dirs": dict((d, os.stat(d).st_mtime_ns) for d in dirs)}, sort_keys=True)


def _preprocess(argv, version_line, unit, what, cwd):
    """(key, preprocessed text, headers read) of the unit; CompileError when a header
    clang read is not trusted."""
    fd, depfile = tempfile.mkstemp(prefix="ebpf-oom-deps-")
    os.close(fd)
    try:
        pre = _run(argv + ["-E", "-x", "c", "-", "-o", "-", "-MD", "-MF", depfile], stdin=unit, cwd=cwd)
        if pre.returncode != 0:
            raise CompileError("preprocessing %s failed" % what, tail(pre.stderr.decode("utf-8", "replace")))
        with open(depfile) as f:
            deps = [os.path.normpath(os.path.join(cwd, d)) for d in parse_depfile(f.read())]
    finally:
        if os.path.exists(depfile):  # clang removes it when preprocessing fails
            os.unlink(depfile)
    for dep in deps:
        try:
            problem = trust_problem(os.stat(dep), dep)
        except OSError as exc:
            problem = "%s: %s" % (dep, exc.strerror)
        if problem:
            raise CompileError("%s includes a header that is not trusted: %s" % (what, problem))
    h = hashlib.sha256()
    for part in [version_line] + argv[1:]:
        if not part.startswith("-I"):  # include paths show in the text's line markers
            h.update(part.encode("utf-8") + b"\0")
    h.update(pre.stdout)
    return h.hexdigest(), pre.stdout, deps


def _compile(clang, flags, pre, what):
    """(object bytes, warnings) compiled from the preprocessed text, in a private
    temporary directory."""
    tmp = tempfile.mkdtemp(prefix="ebpf-oom-cc-")
    try:
        out = os.path.join(tmp, "object.o")
        cc = _run([clang] + flags + ["-x", "cpp-output", "-c", "-", "-o", out], stdin=pre)
        warnings = tail(cc.stderr.decode("utf-8", "replace"))
        if cc.returncode != 0:
            raise CompileError("compiling %s failed" % what, warnings)
        with open(out, "rb") as f:
            return f.read(), warnings
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    what = src or "<content>"
    unit = wrapper(source_sha256, policy_name, what, data)
    # clang reads the unit from stdin: its quoted includes are found from its working
    # directory first, as they would be from the source's directory.
    cwd = os.path.dirname(src) if src is not None else "/"

    scratch = tempfile.mkdtemp(prefix="ebpf-oom-compile-") if check_mode else None
    try:
        store = _Store(cache_dir or common.CACHE_DIR, scratch)
        bundled = bundled_dir(store, bundled_headers)
        vdir = vmlinux_dir(store, vmlinux, bundled)
        incs = [os.path.abspath(d) for d in include_dirs or ()] + [vdir]
        if bundled and bundled != vdir:
            incs.append(bundled)
        argv = [clang] + flags + ["-I%s" % d for d in incs]
        mname = _manifest_name(version_line, argv[1:] + ["cwd=" + cwd], unit)
        key, digest = manifest_key(store, mname)
        obj = store.object(digest)
        warnings = ""
        cached = obj is not None
        if obj is None:
            key, pre, deps = _preprocess(argv, version_line, unit, what, cwd)
            digest = store.keyed(key)
            obj = store.object(digest)
            cached = obj is not None
            if obj is None:
                obj, warnings = _compile(clang, flags, pre, what)
                digest = store.put(key, obj)
            search = incs + ([cwd] if src is not None else [])
            write_atomic(store.target("manifests", mname), _manifest(key, digest, deps, search),
                         CACHE_FILE_MODE)
        changed, before = False, None
        if dest is not None:
            changed, before = _install(obj, dest, check_mode)
        return dict(
            changed=changed,
            object=dest if dest is not None else os.path.join(store.root, "objects", digest + ".o"),
            object_sha256=digest,
            source_sha256=source_sha256,
            key=key,
            cached=cached,
            clang=clang,
            clang_version=version,
            vmlinux=os.path.join(vdir, "vmlinux.h"),
            warnings=warnings,
            diff=dict(before={"sha256": before}, after={"sha256": digest}),
        )
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
