# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Load, replace, remove, verify and restore OOM policies (the engine's entry points).

API (as in the team contract; additions marked +):

apply(name, object_path, globals=None, maps=None, check_mode=False, persist=True) -> dict
    changed, action ('created' | 'replaced' | 'reloaded' | 'maps_updated' | 'unchanged'
    | +'persisted': only the STATE_DIR copy was written or removed), record,
    diff={'before': record or {}, 'after': record or {}},
    map_changes=[{'map', 'key', 'before', 'after'}] (hex strings; None = absent).
    ``globals``: {name: int | str} for the object's ``const volatile`` variables.
    + When the object declares META_POLICY and neither the source nor ``globals`` set
    it, the loader sets it to ``name``.
    ``maps``: {map: [(key, value), ...]} (or {key: value}); int (little-endian to the
    map's size), str or bytes (NUL padded).  The named maps then hold exactly these
    entries (hash: others deleted, array: others zeroed); maps not named are left alone.
    Raises LoaderError(message, log_tail) / UnsupportedKernel(missing), before any
    change when the input is wrong; a verifier rejection leaves the old policy as it was.
    Unchanged when object sha256 and globals equal the record, every recorded link and
    map pin is alive as recorded and the named maps hold their entries.  A reload or
    replace pins the new links in <dir>/staging, renames them over the old pins, then
    waits (bounded) until the kernel freed the old programs.  Maps are reused (data
    kept) when the object is the same.  Pins set by libbpf's own `pinning` are off.
remove(name, check_mode=False) -> dict(changed, diff); waits (bounded) until the
    kernel freed the policy's links, programs and maps.
verify(name=None, object_sha256=None, policy_name=None) -> dict(policies=[facts], problems=[str])
    facts: name, object_sha256, source_sha256, collection_version, policy_name,
    loaded_at, globals, programs [{name, section, attach_type, target, prog_id, tag,
    link_id, pin, attached, metadata (of the program the pinned link runs)}], maps.
list_policies() -> [record]
restore_all() -> (ok_names, {name: reason}); an object.o whose sha256 is not the
    record's is refused.
check_name(name) -> name (raises LoaderError)
+ policy_dir(name) -> the bpffs directory of a policy

Record (JSON, pinned as BPFFS_ROOT/<name>/record, copied to
STATE_DIR/policies/<name>/record.json with object.o when persisted): name,
object_sha256, source_sha256, collection_version, policy_name, loaded_at, globals,
maps ({map: [[key_hex, value_hex], ...]} managed entries), programs [{name, section,
prog_type, attach_type, target, prog_id, tag, link_id, pin}], + pinned_maps [{name,
type, map_id, pin}].

Policy names: 1..POLICY_NAME_MAX bytes of [A-Za-z0-9_-] (bpffs refuses dots).
Roots: bpffs.roots() (EBPF_OOM_BPFFS_ROOT / EBPF_OOM_STATE_DIR override common.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import json
import os
import re
import time

from . import bpffs, libbpf, renderer
from .common import (COLLECTION_VERSION, META_POLICY, META_PREFIX, META_SOURCE_SHA256,
                     POLICY_NAME_MAX)

NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
MANAGED_MAP_TYPES = (libbpf.BPF_MAP_TYPE_HASH, libbpf.BPF_MAP_TYPE_ARRAY,
                     libbpf.BPF_MAP_TYPE_LRU_HASH)
GONE_TIMEOUT = 5.0       # seconds remove() waits for the kernel to free what it unpinned
STATE_FILE_MODE = 0o600


class LoaderError(Exception):
    """A policy could not be applied, removed or read; ``log_tail`` has the kernel's say."""

    def __init__(self, message, log_tail=""):
        super(LoaderError, self).__init__(message)
        self.message = message
        self.log_tail = log_tail

    def __str__(self):
        return "%s\n%s" % (self.message, self.log_tail) if self.log_tail else self.message


class UnsupportedKernel(LoaderError):
    """The running kernel lacks BTF symbols the object needs (``missing``)."""

    def __init__(self, missing):
        self.missing = list(missing)
        super(UnsupportedKernel, self).__init__(
            "the running kernel lacks what the policy needs: %s (not in /sys/kernel/btf/vmlinux)"
            % ", ".join(self.missing))


# ---------------------------------------------------------------- pure logic

def check_name(name):
    """``name`` if it is a valid policy name, else LoaderError saying why."""
    if not isinstance(name, str) or not name:
        raise LoaderError("policy name must be a non-empty string")
    size = len(name.encode("utf-8"))
    if size > POLICY_NAME_MAX:
        raise LoaderError("policy name %r is %d bytes long; the kernel keeps at most %d"
                          % (name, size, POLICY_NAME_MAX))
    if not NAME_RE.match(name):
        raise LoaderError("policy name %r may only hold letters, digits, '_' and '-'" % name)
    return name


def normalize_globals(values):
    """{name: int | str} (bools become ints); LoaderError for other types."""
    out = {}
    for key, value in sorted((values or {}).items()):
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, str)):
            raise LoaderError("global %s: value must be an int or a str, not %s"
                              % (key, type(value).__name__))
        out[str(key)] = value
    return out


def _pairs(entries, what):
    if isinstance(entries, dict):
        return list(entries.items())
    pairs = []
    for item in entries or []:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise LoaderError("%s: each entry must be a (key, value) pair, got %r" % (what, item))
        pairs.append((item[0], item[1]))
    return pairs


def map_spec(name, mtype, key_size, value_size, max_entries, entries):
    """Validate and pack the wanted entries of one map -> spec dict (entries: {k: v})."""
    if mtype not in MANAGED_MAP_TYPES:
        raise LoaderError("map %s is a %s map; only hash, lru_hash and array maps can be set"
                          % (name, libbpf.map_type_str(mtype)))
    packed = {}
    for key, value in _pairs(entries, "map %s" % name):
        try:
            k = libbpf.pack(key, key_size, "map %s key %r" % (name, key))
            v = libbpf.pack(value, value_size, "map %s value for key %r" % (name, key))
        except ValueError as exc:
            raise LoaderError(str(exc))
        if k in packed:
            raise LoaderError("map %s: key %r given twice" % (name, key))
        if mtype == libbpf.BPF_MAP_TYPE_ARRAY and int.from_bytes(k, "little") >= max_entries:
            raise LoaderError("map %s: key %r is out of range (array of %d entries)"
                              % (name, key, max_entries))
        packed[k] = v
    if len(packed) > max_entries:
        raise LoaderError("map %s: %d entries given, it holds at most %d"
                          % (name, len(packed), max_entries))
    return {"name": name, "type": mtype, "key_size": key_size, "value_size": value_size,
            "max_entries": max_entries, "entries": packed}


def desired_contents(spec):
    """{key: value} the map must hold: arrays have every index, zero unless given."""
    if spec["type"] != libbpf.BPF_MAP_TYPE_ARRAY:
        return dict(spec["entries"])
    zero = b"\0" * spec["value_size"]
    out = {}
    for index in range(spec["max_entries"]):
        key = index.to_bytes(spec["key_size"], "little")
        out[key] = spec["entries"].get(key, zero)
    return out


def plan_map(spec, current):
    """[(key, before, after)] turning ``current`` ({k: v}) into the spec; None = absent."""
    want = desired_contents(spec)
    changes = []
    for key in sorted(set(current) | set(want)):
        before, after = current.get(key), want.get(key)
        if before != after:
            changes.append((key, before, after))
    return changes


def _hex(value):
    return value.hex() if value is not None else None


def map_changes_out(name, changes):
    return [{"map": name, "key": _hex(k), "before": _hex(b), "after": _hex(a)}
            for k, b, a in changes]


def record_maps(spec):
    """The record's form of a spec's managed entries: [[key_hex, value_hex], ...]."""
    return [[k.hex(), v.hex()] for k, v in sorted(spec["entries"].items())]


def spec_from_record(spec_like, entries_hex):
    """A spec with the record's hex entries (for verify and idempotence)."""
    spec = dict(spec_like)
    spec["entries"] = {bytes.fromhex(k): bytes.fromhex(v) for k, v in entries_hex}
    return spec


def links_match(record_program, info):
    """Discrepancies between a recorded program and the live link_info of its pin."""
    problems = []
    name = record_program["name"]
    if info["id"] != record_program["link_id"]:
        problems.append("program %s: pin holds link %d, recorded link %d"
                        % (name, info["id"], record_program["link_id"]))
    if not info["prog_id"]:
        problems.append("program %s: link %d is detached (no program)" % (name, info["id"]))
    elif info["prog_id"] != record_program["prog_id"]:
        problems.append("program %s: link runs program id %d, recorded %d"
                        % (name, info["prog_id"], record_program["prog_id"]))
    for field in ("attach_type", "target"):
        if info[field] != record_program[field]:
            problems.append("program %s: %s is %s, expected %s"
                            % (name, field, info[field], record_program[field]))
    return problems


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


# ---------------------------------------------------------------- kernel side

def policy_dir(name):
    return bpffs.Layout(bpffs.roots()[0], check_name(name)).dir


def _open(object_path):
    try:
        return libbpf.Object(object_path)
    except (IOError, OSError) as exc:
        raise LoaderError("cannot read the object %s: %s" % (object_path, exc.strerror or exc))
    except libbpf.BpfError as exc:
        raise LoaderError(exc.message, exc.log_tail)


def _prepare(obj, name, globals_, maps):
    """Check kernel support, set globals, validate maps: all before touching the kernel."""
    missing = [sym for sym, kind in obj.kernel_symbols()
               if not libbpf.vmlinux_btf_has(sym, kind)]
    if missing:
        raise UnsupportedKernel(missing)
    try:
        for key, value in globals_.items():
            obj.set_global(key, value)
        table = obj.globals()
        if META_POLICY in table and META_POLICY not in globals_ \
                and not obj.get_global(META_POLICY).strip(b"\0"):
            obj.set_global(META_POLICY, name)
    except libbpf.BpfError as exc:
        raise LoaderError(exc.message)
    specs = {}
    for map_name, entries in sorted((maps or {}).items()):
        m = obj.map(map_name)
        if m is None or m.internal:
            known = ", ".join(sorted(x.name for x in obj.maps() if not x.internal)) or "none"
            raise LoaderError("the object has no map %r (it has: %s)" % (map_name, known))
        specs[map_name] = map_spec(map_name, m.type, m.key_size, m.value_size,
                                   m.max_entries, entries)
    return specs


def _read_map(fd, spec):
    return dict(libbpf.map_items(fd, spec["key_size"], spec["value_size"]))


def _write_map(fd, changes):
    for key, _before, after in changes:
        if after is None:
            libbpf.map_delete(fd, key)
        else:
            libbpf.map_update(fd, key, after)


def _live_link(layout, prog):
    """(link_info or None, problems) of one recorded program's link pin."""
    pin = layout.link(prog["name"])
    if not os.path.lexists(pin):
        return None, ["program %s: link pin %s is missing" % (prog["name"], pin)]
    try:
        with libbpf.pinned(pin) as fd:
            info = libbpf.link_info(fd)
    except libbpf.BpfError as exc:
        return None, ["program %s: %s is not a live link: %s" % (prog["name"], pin, exc)]
    return info, links_match(prog, info)


def _map_pin_problems(record):
    """Problems with the recorded map pins (missing, or holding another map)."""
    problems = []
    for pmap in record.get("pinned_maps", []):
        try:
            with libbpf.pinned(pmap["pin"]) as fd:
                if libbpf.map_info(fd)["id"] != pmap["map_id"]:
                    problems.append("map %s: pin holds another map" % pmap["name"])
        except libbpf.BpfError as exc:
            problems.append("map %s: %s" % (pmap["name"], exc))
    return problems


def _link_problems(layout, record):
    """Problems with every recorded link (empty when all are alive as recorded)."""
    return [problem for prog in record.get("programs", [])
            for problem in _live_link(layout, prog)[1]]


def _read_record(layout):
    try:
        return bpffs.read_record(layout.record)
    except bpffs.BpffsError:
        return None


def _base_record(name, obj, globals_):
    policy = obj.get_global_text(META_POLICY)
    return {
        "name": name,
        "object_sha256": obj.sha256,
        "source_sha256": obj.get_global_text(META_SOURCE_SHA256) or "",
        "collection_version": COLLECTION_VERSION,
        "policy_name": policy if policy is not None else None,
        "loaded_at": None,
        "globals": globals_,
        "maps": {},
        "programs": [],
        "pinned_maps": [],
    }


def _planned_programs(layout, obj):
    return [{"name": p.name, "section": p.section, "prog_type": p.type,
             "attach_type": None, "target": None, "prog_id": None, "tag": None,
             "link_id": None, "pin": layout.link(p.name)} for p in obj.programs()]


def _remove_entry(path):
    if os.path.isdir(path) and not os.path.islink(path):
        bpffs.remove_tree(path)
    else:
        os.unlink(path)


def _swap(layout, obj, old, specs, record, reuse):
    """Load, attach and pin into staging, then rename over the live pins."""
    bpffs.remove_tree(layout.staging)
    own = [m for m in obj.maps() if not m.internal]
    if reuse:
        for m in own:
            pin = layout.map(m.name)
            if os.path.lexists(pin):
                with libbpf.pinned(pin) as fd:
                    m.reuse_fd(fd)
    try:
        obj.load()
    except libbpf.BpfError as exc:
        raise LoaderError("the kernel refused to load policy %s from %s: %s"
                          % (layout.name, obj.path, os.strerror(exc.errno) if exc.errno
                             else exc.message), exc.log_tail)
    changes = []
    for map_name, spec in specs.items():
        fd = obj.map(map_name).fd
        planned = plan_map(spec, _read_map(fd, spec))
        _write_map(fd, planned)
        changes.extend(map_changes_out(map_name, planned))
    links = []
    try:
        bpffs.make_dir(layout.dir)
        bpffs.make_dir(layout.staging)
        for prog in obj.programs():
            try:
                link = prog.attach()
            except libbpf.BpfError as exc:
                raise LoaderError("policy %s: %s" % (layout.name, exc.message), exc.log_tail)
            links.append(link)
            link.pin(layout.link(prog.name, staging=True))
            info = libbpf.link_info(link.fd)
            pinfo = libbpf.prog_info(prog.fd)
            record["programs"].append({
                "name": prog.name, "section": prog.section, "prog_type": pinfo["type"],
                "attach_type": info["attach_type"], "target": info["target"],
                "prog_id": pinfo["id"], "tag": pinfo["tag"], "link_id": info["id"],
                "pin": layout.link(prog.name)})
        for m in own:
            libbpf.obj_pin(m.fd, layout.map(m.name, staging=True))
            record["pinned_maps"].append({"name": m.name, "type": m.type_name,
                                          "map_id": libbpf.map_info(m.fd)["id"],
                                          "pin": layout.map(m.name)})
        record["loaded_at"] = _now()
        bpffs.write_record(os.path.join(layout.staging, bpffs.RECORD), record)
        # Links and maps first, the record last: a crash in between leaves a record
        # that does not match the links, which the next apply repairs.
        fresh = sorted(os.listdir(layout.staging), key=lambda n: n == bpffs.RECORD)
        for entry in fresh:
            os.rename(os.path.join(layout.staging, entry), os.path.join(layout.dir, entry))
        os.rmdir(layout.staging)
        for entry in layout.entries():
            if entry not in fresh:
                _remove_entry(os.path.join(layout.dir, entry))
        if old:
            # Unpinned links are released by a kernel work item: wait until the old
            # programs are gone, so only the new policy runs once apply returns.
            _wait_gone(_ids(old) - _ids(record))
    except BaseException:
        bpffs.remove_tree(layout.staging if old else layout.dir)
        raise
    finally:
        for link in links:
            link.close()
    return changes


def _update_in_place(layout, specs):
    changes = []
    for map_name, spec in specs.items():
        with libbpf.pinned(layout.map(map_name)) as fd:
            planned = plan_map(spec, _read_map(fd, spec))
            _write_map(fd, planned)
        changes.extend(map_changes_out(map_name, planned))
    return changes


def _pending_map_changes(layout, specs):
    """Planned changes against the pinned maps (read-only)."""
    changes = []
    for map_name, spec in specs.items():
        pin = layout.map(map_name)
        current = {}
        if os.path.lexists(pin):
            with libbpf.pinned(pin) as fd:
                current = _read_map(fd, spec)
        changes.extend(map_changes_out(map_name, plan_map(spec, current)))
    return changes


def _rewrite_record(layout, record):
    bpffs.remove_tree(layout.staging)
    bpffs.make_dir(layout.staging)
    staged = os.path.join(layout.staging, bpffs.RECORD)
    bpffs.write_record(staged, record)
    os.rename(staged, layout.record)
    os.rmdir(layout.staging)


# ---------------------------------------------------------------- STATE_DIR copy

def _state_paths(name):
    base = os.path.join(bpffs.roots()[1], "policies", name)
    return base, os.path.join(base, "object.o"), os.path.join(base, "record.json")


def _write_file(path, data):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, STATE_FILE_MODE)
    try:
        os.fchmod(fd, STATE_FILE_MODE)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _read_file(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def _persist(name, data, record, check_mode):
    """Keep object.o + record.json for the boot restore; True when something changed."""
    base, obj_path, rec_path = _state_paths(name)
    rec = json.dumps(record, sort_keys=True, indent=1).encode("ascii") + b"\n"
    if _read_file(obj_path) == data and _read_file(rec_path) == rec:
        return False
    if not check_mode:
        for path in (os.path.dirname(os.path.dirname(base)), os.path.dirname(base), base):
            bpffs.make_dir(path)
        _write_file(obj_path, data)
        _write_file(rec_path, rec)
    return True


def _unpersist(name, check_mode):
    base = _state_paths(name)[0]
    if not os.path.lexists(base):
        return False
    if not check_mode:
        for entry in os.listdir(base):
            os.unlink(os.path.join(base, entry))
        os.rmdir(base)
    return True


def _store(name, data, record, persist, check_mode):
    if persist:
        return _persist(name, data, record, check_mode)
    return _unpersist(name, check_mode)


# ---------------------------------------------------------------- entry points

def _root(check_mode):
    """The bpffs root, mounted and created unless in check mode (None: nothing there)."""
    root = bpffs.roots()[0]
    if check_mode:
        return root if bpffs.is_bpffs(bpffs.mount_point(root)) else None
    try:
        bpffs.ensure_mounted(root)
        bpffs.make_dir(root)
    except (bpffs.BpffsError, OSError) as exc:
        raise LoaderError(str(exc))
    return root


def apply(name, object_path, globals=None, maps=None, check_mode=False, persist=True,
          document=None):
    """Make policy ``name`` run ``object_path`` with ``globals`` and ``maps`` (see module doc).

    ``document``: the declarative policy the globals and maps were rendered from; it is
    kept in the record so that restore_all() renders it again on the booting host,
    whose cgroup ids differ from the ones before the reboot.
    """
    check_name(name)
    globals_ = normalize_globals(globals)
    obj = _open(object_path)
    try:
        specs = _prepare(obj, name, globals_, maps)
        root = _root(check_mode)
        if root is None:
            return _apply_locked(bpffs.Layout(bpffs.roots()[0], name), obj, globals_, specs,
                                 check_mode, persist, document, exists=False)
        with bpffs.locked(root):
            return _apply_locked(bpffs.Layout(root, name), obj, globals_, specs,
                                 check_mode, persist, document, exists=True)
    except (libbpf.BpfError, bpffs.BpffsError, OSError) as exc:
        raise LoaderError("policy %s: %s" % (name, getattr(exc, "message", exc)),
                          getattr(exc, "log_tail", ""))
    finally:
        obj.close()


def _apply_locked(layout, obj, globals_, specs, check_mode, persist, document, exists):
    old = _read_record(layout) if exists else None
    same = (old is not None and old.get("object_sha256") == obj.sha256
            and old.get("globals") == globals_)
    if same and not _link_problems(layout, old) and not _map_pin_problems(old):
        return _apply_same(layout, obj, old, specs, check_mode, persist, document)

    if old is None:
        action = "created"
    elif old.get("object_sha256") != obj.sha256:
        action = "replaced"
    else:
        action = "reloaded"
    reuse = old is not None and old.get("object_sha256") == obj.sha256
    record = _base_record(layout.name, obj, globals_)
    if document is not None:
        record["document"] = document
    record["maps"] = dict(old.get("maps", {})) if reuse else {}
    record["maps"].update((n, record_maps(s)) for n, s in specs.items())
    if check_mode:
        record["programs"] = _planned_programs(layout, obj)
        changes = _pending_map_changes(layout, specs) if (reuse and exists) else \
            [c for n, s in specs.items() for c in map_changes_out(n, plan_map(s, _empty(s)))]
    else:
        if old is None:
            # Leftovers without a readable record (e.g. a crash during the first apply).
            bpffs.remove_tree(layout.dir)
        changes = _swap(layout, obj, old, specs, record, reuse)
        _store(layout.name, obj.data, record, persist, False)
    return {"changed": True, "action": action, "record": record,
            "diff": {"before": old or {}, "after": record}, "map_changes": changes}


def _empty(spec):
    if spec["type"] != libbpf.BPF_MAP_TYPE_ARRAY:
        return {}
    return {i.to_bytes(spec["key_size"], "little"): b"\0" * spec["value_size"]
            for i in range(spec["max_entries"])}


def _apply_same(layout, obj, old, specs, check_mode, persist, document):
    """Same object and globals, links alive: maybe map entries, maybe the state copy."""
    changes = _pending_map_changes(layout, specs)
    record = dict(old)
    record["maps"] = dict(old.get("maps", {}))
    record["maps"].update((n, record_maps(s)) for n, s in specs.items())
    if document is not None:
        record["document"] = document
    action = "unchanged"
    if changes or record != old:
        # Entries to write, or contents already right but recorded differently.
        action = "maps_updated"
        if not check_mode:
            if changes:
                changes = _update_in_place(layout, specs)
            _rewrite_record(layout, record)
    else:
        record = old
    stored = _store(layout.name, obj.data, record, persist, check_mode)
    if stored and action == "unchanged":
        action = "persisted"
    changed = action != "unchanged"
    return {"changed": changed, "action": action, "record": record,
            "diff": {"before": old, "after": record}, "map_changes": changes}


def _ids(record):
    """{(kind, id)} of a record's links, programs and pinned maps."""
    return set([("link", p.get("link_id")) for p in record.get("programs", [])]
               + [("prog", p.get("prog_id")) for p in record.get("programs", [])]
               + [("map", m.get("map_id")) for m in record.get("pinned_maps", [])])


def _alive(kind, obj_id):
    getter = {"link": libbpf.lib().bpf_link_get_fd_by_id,
              "prog": libbpf.lib().bpf_prog_get_fd_by_id,
              "map": libbpf.lib().bpf_map_get_fd_by_id}[kind]
    fd = getter(obj_id)
    if fd < 0:
        return False
    os.close(fd)
    return True


def _wait_gone(ids, timeout=GONE_TIMEOUT):
    """Wait (bounded) until the kernel no longer has these (kind, id) objects."""
    deadline = time.monotonic() + timeout
    pending = [(kind, obj_id) for kind, obj_id in ids if obj_id]
    while pending and time.monotonic() < deadline:
        pending = [item for item in pending if _alive(*item)]
        if pending:
            time.sleep(0.005)


def remove(name, check_mode=False):
    """Unpin everything of policy ``name`` (links, maps, record) and its STATE_DIR copy."""
    check_name(name)
    root = _root(check_mode=True)
    layout = bpffs.Layout(root or bpffs.roots()[0], name)
    state_there = os.path.lexists(_state_paths(name)[0])
    if root is None or not layout.exists():
        if state_there:
            _unpersist(name, check_mode)
        return {"changed": state_there, "diff": {"before": {}, "after": {}}}
    with bpffs.locked(root):
        old = _read_record(layout) or {}
        if not check_mode:
            try:
                bpffs.remove_tree(layout.dir)
            except OSError as exc:
                raise LoaderError("policy %s: cannot remove %s: %s" % (name, layout.dir, exc))
            _unpersist(name, False)
            _wait_gone(_ids(old))
    return {"changed": True, "diff": {"before": old, "after": {}}}


def _policy_names(root):
    if root is None or not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)))


def list_policies():
    """The records of every loaded policy (unreadable ones skipped)."""
    root = _root(check_mode=True)
    out = []
    for name in _policy_names(root):
        record = _read_record(bpffs.Layout(root, name))
        if record is not None:
            out.append(record)
    return out


META_SOURCE_KEY = META_SOURCE_SHA256[len(META_PREFIX):]
META_POLICY_KEY = META_POLICY[len(META_PREFIX):]


def _verify_program(layout, record, prog):
    """(fact, problems) of one recorded program: its link, and the program that link runs."""
    fact = {key: prog.get(key) for key in ("name", "section", "attach_type", "target",
                                           "prog_id", "tag", "link_id", "pin")}
    info, problems = _live_link(layout, prog)
    fact["attached"] = not problems
    if info is None or not info["prog_id"]:
        return fact, problems
    try:
        fd = libbpf.prog_fd_by_id(info["prog_id"])
    except libbpf.BpfError:
        return fact, problems + ["program %s: program id %d is gone"
                                 % (prog["name"], info["prog_id"])]
    try:
        running, meta = libbpf.prog_info(fd), libbpf.prog_metadata(fd)
    finally:
        os.close(fd)
    fact["metadata"] = meta
    if running["tag"] != prog["tag"]:
        problems.append("program %s: tag %s, recorded %s"
                        % (prog["name"], running["tag"], prog["tag"]))
    if record.get("source_sha256") and meta.get(META_SOURCE_KEY) != record["source_sha256"]:
        problems.append("program %s: embedded source sha256 %s, recorded %s"
                        % (prog["name"], meta.get(META_SOURCE_KEY), record["source_sha256"]))
    if record.get("policy_name") is not None and \
            meta.get(META_POLICY_KEY) != record["policy_name"]:
        problems.append("program %s: reports policy name %r, recorded %r"
                        % (prog["name"], meta.get(META_POLICY_KEY), record["policy_name"]))
    return fact, problems


def _verify_map(record, pmap):
    """Problems of one pinned map: its pin, its id, and the managed entries' contents."""
    if not os.path.lexists(pmap["pin"]):
        return ["map %s: pin %s is missing" % (pmap["name"], pmap["pin"])]
    problems = []
    try:
        with libbpf.pinned(pmap["pin"]) as fd:
            info = libbpf.map_info(fd)
            if info["id"] != pmap["map_id"]:
                problems.append("map %s: pin holds map %d, recorded %d"
                                % (pmap["name"], info["id"], pmap["map_id"]))
            entries = record.get("maps", {}).get(pmap["name"])
            if entries is not None:
                spec = spec_from_record({"type": info["type_id"], "key_size": info["key_size"],
                                         "value_size": info["value_size"],
                                         "max_entries": info["max_entries"]}, entries)
                for key, before, after in plan_map(spec, _read_map(fd, spec)):
                    problems.append("map %s: key %s holds %s, expected %s"
                                    % (pmap["name"], key.hex(), _hex(before), _hex(after)))
    except libbpf.BpfError as exc:
        problems.append("map %s: %s" % (pmap["name"], exc))
    return problems


def _verify_one(layout, object_sha256, policy_name):
    try:
        record = bpffs.read_record(layout.record)
    except bpffs.BpffsError as exc:
        return {"name": layout.name}, ["policy %s: %s" % (layout.name, exc)]
    if record is None:
        return {"name": layout.name}, ["policy %s: record pin %s is missing"
                                       % (layout.name, layout.record)]
    facts = {key: record.get(key) for key in ("name", "object_sha256", "source_sha256",
                                              "collection_version", "policy_name",
                                              "loaded_at", "globals")}
    facts["programs"], facts["maps"], problems = [], record.get("pinned_maps", []), []
    for prog in record.get("programs", []):
        fact, found = _verify_program(layout, record, prog)
        facts["programs"].append(fact)
        problems.extend(found)
    for pmap in record.get("pinned_maps", []):
        problems.extend(_verify_map(record, pmap))
    if object_sha256 and record.get("object_sha256") != object_sha256:
        problems.append("policy %s runs object sha256 %s, expected %s"
                        % (layout.name, record.get("object_sha256"), object_sha256))
    running = set(p["metadata"].get(META_POLICY_KEY) for p in facts["programs"]
                  if "metadata" in p)
    # No program readable (a pin is gone: listed above): the name the record holds.
    running = running or {record.get("policy_name")}
    if policy_name is not None and running != {policy_name}:
        problems.append("policy %s reports policy name %s, expected %r"
                        % (layout.name, ", ".join(repr(n) for n in sorted(running, key=str)),
                           policy_name))
    known = set([bpffs.RECORD] + [os.path.basename(p["pin"]) for p in record.get("programs", [])]
                + [os.path.basename(m["pin"]) for m in record.get("pinned_maps", [])])
    for entry in layout.entries():
        if entry not in known:
            problems.append("policy %s: unexpected entry %s"
                            % (layout.name, os.path.join(layout.dir, entry)))
    return facts, problems


def verify(name=None, object_sha256=None, policy_name=None):
    """Check the named policy (or every one) against its record and the expectations."""
    if name is not None:
        check_name(name)
    root = _root(check_mode=True)
    names = [name] if name is not None else _policy_names(root)
    policies, problems = [], []
    for each in names:
        layout = bpffs.Layout(root or bpffs.roots()[0], each)
        if root is None or not layout.exists():
            problems.append("policy %s is not loaded (no %s)" % (each, layout.dir))
            continue
        facts, found = _verify_one(layout, object_sha256, policy_name)
        policies.append(facts)
        problems.extend(found)
    return {"policies": policies, "problems": problems}


def restore_all():
    """Re-apply every policy kept in STATE_DIR (boot); -> (ok_names, {name: reason})."""
    base = os.path.join(bpffs.roots()[1], "policies")
    ok, failed = [], {}
    names = sorted(os.listdir(base)) if os.path.isdir(base) else []
    for name in names:
        _dir, obj_path, rec_path = _state_paths(name)
        try:
            check_name(name)
            data = _read_file(rec_path)
            if data is None:
                raise LoaderError("%s is missing" % rec_path)
            record = json.loads(data.decode("ascii"))
            if _sha256_file(obj_path) != record.get("object_sha256"):
                raise LoaderError("%s does not match the recorded object sha256 %s"
                                  % (obj_path, record.get("object_sha256")))
            document = record.get("document")
            if document is None:
                globals_, maps = record.get("globals"), _record_entries(record.get("maps", {}))
            else:
                # Cgroup ids are inode numbers: render the document on this boot's cgroups.
                rendered = renderer.render(document)
                globals_, maps = rendered.globals, rendered.maps
            apply(name, obj_path, globals=globals_, maps=maps, persist=True, document=document)
            ok.append(name)
        except (LoaderError, renderer.RenderError, ValueError, OSError) as exc:
            failed[name] = str(exc)
    return ok, failed


def _sha256_file(path):
    data = _read_file(path)
    return hashlib.sha256(data).hexdigest() if data is not None else None


def _record_entries(maps):
    return {name: [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in entries]
            for name, entries in maps.items()}
