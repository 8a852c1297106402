# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Load, replace and remove OOM policies: the one writer of the policies' pins.

Layer 4 (loader): imports pins, state, maps, the layout, the kernel binding and the
leaf helpers.  Checking a policy is verify.py, the boot restore restore.py, the
observer's deployment deploy.py (all above this file).

apply(name, object_path, globals=None, maps=None, check_mode=False, persist=True,
      document=None, programs=None, after_attach=None, backend=None) -> dict
    changed, action ('created' | 'replaced' | 'reloaded' | 'maps_updated' | 'unchanged'
    | 'persisted': only the STATE_DIR copy was written or removed), record,
    diff={'before': record or {}, 'after': record or {}},
    map_changes=[{'map', 'key', 'before', 'after'}] (hex strings; None = absent).
    ``globals``: {name: int | str} for the object's ``const volatile`` variables.
    When the object declares META_POLICY and neither the source nor ``globals`` set
    it, the loader sets it to ``name``.
    ``maps``: {map: [(key, value), ...]} (or {key: value}); int (little-endian to the
    map's size), str or bytes (NUL padded).  The named maps then hold exactly these
    entries (hash: others deleted, array: others zeroed); maps not named are left alone.
    ``document``: the declarative policy the globals and maps were rendered from, kept
    in the record so that the boot restore renders it again on the booting host.
    ``programs``: the names of the object's programs to load and attach (default: all).
    ``after_attach(map_fd)``: called once the programs are attached (and on every apply
    that keeps them), with map_fd(name) -> the fd of one of the policy's maps, to fill
    what the programs then keep current (cgrouprules.sync); not in check mode.
    ``backend``: how the policy is enforced, kept in the record (backends.py).
    ``derived``: maps that after_attach fills from the named ones (the live ids of cgroup
    rules' paths): in an object that hands over (below) they are new with the rules.
    ``under_lock(root, obj)``: a check run with the bpffs lock held before anything
    changes; backends.one_decider refuses a second policy that decides OOMs this way.
    Raises LoaderError(message, log_tail) / UnsupportedKernel(missing), before any
    change when the input is wrong; a verifier rejection leaves the old policy as it was.
    Unchanged when object sha256 and globals equal the record, every recorded link and
    map pin is alive as recorded, the policy's directory holds nothing else and the
    named maps hold their entries.  An apply killed at any step (SIGKILL, power loss)
    leaves staging/, pins under names the record does not know, or a directory without
    a record: the next apply loads again and removes them (waiting until what they kept
    attached is gone), list_policies() lists such a directory, remove() removes it.  A reload or
    replace pins the new links in <dir>/staging, renames them over the old pins, then
    waits (bounded) until the kernel freed the old programs.  Maps are reused (data
    kept) when the object is the same.  An object with the hand-over map
    (abi.DECIDER_MAP: the generic one) never has its named or derived maps written while
    its programs run: a change of their entries loads the object again (action
    'reloaded') with new ones, written whole, attached beside the running programs,
    which keep deciding until the new ones' token is written into the map both share
    (one write; each OOM is decided by the programs whose token was there when it
    started: generic.h); the loader then waits for an OOM the old ones still decide
    before it unpins them.  Pins set by libbpf's own `pinning` are off.
remove(name, check_mode=False) -> dict(changed, diff); waits (bounded) until the
    kernel freed the policy's links, programs and maps.
policy_dir(name) -> the bpffs directory of a policy

Record (JSON, pinned as BPFFS_ROOT/<name>/record, copied to
STATE_DIR/policies/<name>/record.json with object.o when persisted): name,
object_sha256, source_sha256, collection_version, policy_name, loaded_at, globals,
maps ({map: [[key_hex, value_hex], ...]} managed entries), programs [{name, section,
prog_type, attach_type, target, prog_id, tag, link_id, pin}], pinned_maps [{name,
type, map_id, pin}], and document when there is one.

Policy names: names.check_name.  Roots: bpffs.roots() (EBPF_OOM_BPFFS_ROOT /
EBPF_OOM_STATE_DIR override common.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import datetime
import hashlib
import os
import time

from . import abi, bpffs, libbpf, pins, state
from .common import COLLECTION_VERSION, META_POLICY, META_SOURCE_SHA256
from .errors import BpfError, BpffsError, LoaderError, UnsupportedKernel
from .files import read_trusted
from .maps import fresh_contents, map_changes_out, map_spec, plan_map, record_maps, sync_map
from .names import check_name

GONE_TIMEOUT = 5.0       # seconds remove() waits for the kernel to free what it unpinned
HANDOVER_TIMEOUT = 10.0  # seconds a hand-over waits for an OOM the old programs decide


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


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def policy_dir(name):
    return bpffs.Layout(bpffs.roots()[0], check_name(name, LoaderError)).dir


class Plan(object):
    """One apply(): the policy's layout, the opened object, the globals and map specs
    asked for, whether to keep a copy for the boot restore (and the document to keep
    with it), and the record of what runs now (``old``, None when nothing does)."""

    def __init__(self, layout, obj, globals_, specs, persist, document, old, after_attach=None,
                 backend=None, derived=()):
        self.layout = layout
        self.obj = obj
        self.globals = globals_
        self.specs = specs
        self.persist = persist
        self.document = document
        self.old = old
        self.after_attach = after_attach
        self.backend = backend
        self.derived = tuple(derived)

    @property
    def same_object(self):
        """The object running now is this one: its pinned maps are reused, data kept."""
        return self.old is not None and self.old.get("object_sha256") == self.obj.sha256

    @property
    def same_program(self):
        """Same object, globals and programs: the programs running now are the ones asked for
        (another selection of the same object, another backend's, is loaded and swapped in)."""
        return self.same_object and self.old.get("globals") == self.globals and \
            sorted(p.get("name") for p in self.old.get("programs", [])) == \
            sorted(p.name for p in self.obj.programs())

    @property
    def hands_over(self):
        """The object's programs hand the decision over through the decider map (generic.h)."""
        return self.obj.map(abi.DECIDER_MAP) is not None and \
            abi.TOKEN_GLOBAL in self.obj.globals()

    def shares(self, map_name):
        """Whether the new programs use the running ones' pinned map ``map_name``: the
        decider map always; for the same object every map (data kept) except, where the
        programs hand over, the ones that hold the rules, which are new and written whole
        before the new programs decide."""
        if map_name == abi.DECIDER_MAP:
            return True
        if not self.same_object:
            return False
        return not (self.hands_over and (map_name in self.specs or map_name in self.derived))

    @property
    def action(self):
        if self.old is None:
            return "created"
        return "reloaded" if self.same_object else "replaced"

    def with_maps(self, record):
        """``record`` with the managed entries asked for (and the document and backend)
        added."""
        record["maps"] = dict(self.old.get("maps", {})) if self.same_object else {}
        record["maps"].update((n, record_maps(s)) for n, s in self.specs.items())
        if self.document is not None:
            record["document"] = self.document
        if self.backend is not None:
            record["backend"] = self.backend
        return record

    def new_record(self):
        """The record of the new programs, still without programs and map pins."""
        return self.with_maps({
            "name": self.layout.name,
            "object_sha256": self.obj.sha256,
            "source_sha256": self.obj.get_global_text(META_SOURCE_SHA256) or "",
            "collection_version": COLLECTION_VERSION,
            "policy_name": self.obj.get_global_text(META_POLICY),
            "loaded_at": None,
            "globals": self.globals,
            "programs": [],
            "pinned_maps": [],
        })


# ---------------------------------------------------------------- before any change

def open_object(object_path, error=LoaderError):
    """The object, opened by libbpf, if it is trusted (files.read_trusted: owned by root,
    writable by no one else) and libbpf read the very bytes that were checked; else
    ``error`` (LoaderError or a subclass) saying why.  Everything that loads an object
    into the kernel opens it here (the loader, explain)."""
    checked = hashlib.sha256(read_trusted(
        object_path, lambda problem: error("refusing to load the object: %s" % problem))).hexdigest()
    try:
        obj = libbpf.Object(object_path)
    except (IOError, OSError) as exc:
        raise error("cannot read the object %s: %s" % (object_path, exc.strerror or exc))
    except BpfError as exc:
        raise error(exc.message, exc.log_tail)
    if obj.sha256 != checked:
        obj.close()
        raise error("the object %s changed while it was read; nothing was loaded" % object_path)
    return obj


def _prepare(obj, name, globals_, wanted, programs):
    """Choose the programs, check kernel support, set globals, validate maps: all before
    touching the kernel. Returns the map specs ({map: spec})."""
    if programs is not None:
        obj.select(programs)
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
    except BpfError as exc:
        raise LoaderError(exc.message)
    specs = {}
    for map_name, entries in sorted((wanted or {}).items()):
        m = obj.map(map_name)
        if m is None or m.internal:
            known = ", ".join(sorted(x.name for x in obj.maps() if not x.internal)) or "none"
            raise LoaderError("the object has no map %r (it has: %s)" % (map_name, known))
        specs[map_name] = map_spec(map_name, m.type, m.key_size, m.value_size,
                                   m.max_entries, entries)
    return specs


def _root(check_mode):
    """The bpffs root, mounted and created unless in check mode (None: nothing there)."""
    if check_mode:  # a root not made yet holds nothing either
        root = bpffs.mounted_root()
        return root if root and os.path.isdir(root) else None
    root = bpffs.roots()[0]
    try:
        bpffs.ensure_mounted(root)
        bpffs.make_dir(root)
    except (BpffsError, OSError) as exc:
        raise LoaderError(str(exc))
    return root


# ---------------------------------------------------------------- entry points

def apply(name, object_path, globals=None, maps=None, check_mode=False, persist=True,
          document=None, programs=None, after_attach=None, backend=None, under_lock=None,
          derived=()):
    """Make policy ``name`` run ``object_path`` with ``globals`` and ``maps`` (see above).
    ``under_lock(root, obj)``: a check run with the bpffs lock held, before anything
    changes (backends.one_decider); it raises to refuse."""
    check_name(name, LoaderError)
    globals_ = normalize_globals(globals)
    obj = open_object(object_path)
    try:
        specs = _prepare(obj, name, globals_, maps, programs)
        root = _root(check_mode)
        if root is None:  # check mode without bpffs: no policy runs yet
            layout = bpffs.Layout(bpffs.roots()[0], name)
            return _apply(Plan(layout, obj, globals_, specs, persist, document, None,
                               backend=backend), True)
        with bpffs.locked(root):
            if under_lock is not None:
                under_lock(root, obj)
            layout = bpffs.Layout(root, name)
            plan = Plan(layout, obj, globals_, specs, persist, document, pins.read_record(layout),
                        after_attach, backend, derived)
            return _apply(plan, check_mode)
    except (BpfError, BpffsError, OSError) as exc:
        raise LoaderError("policy %s: %s" % (name, getattr(exc, "message", exc)),
                          getattr(exc, "log_tail", ""))
    finally:
        obj.close()


def remove(name, check_mode=False):
    """Unpin everything of policy ``name`` (links, maps, record) and its STATE_DIR copy."""
    check_name(name, LoaderError)
    root = bpffs.mounted_root()
    layout = bpffs.Layout(root or bpffs.roots()[0], name)
    if root is None or not os.path.isdir(root):  # nothing was ever loaded here
        return _unpersist(name, check_mode)
    with bpffs.locked(root):  # also when only the copy is left: a boot restore may be reading it
        if not layout.exists():
            return _unpersist(name, check_mode)
        old = pins.read_record(layout) or {}
        if not check_mode:
            pinned = _pinned_ids(layout, layout.entries())  # the record's, and any leftovers
            try:
                bpffs.remove_tree(layout.dir)
            except OSError as exc:
                raise LoaderError("policy %s: cannot remove %s: %s" % (name, layout.dir, exc))
            state.unpersist(name, False)
            _wait_gone(_ids(old) | pinned)
    return {"changed": True, "diff": {"before": old, "after": {}}}


def _unpersist(name, check_mode):
    """remove() of a policy that is not loaded: its STATE_DIR copy, if any."""
    kept = state.saved(name)
    if kept:
        state.unpersist(name, check_mode)
    return {"changed": kept, "diff": {"before": {}, "after": {}}}


# ---------------------------------------------------------------- apply's steps

def _apply(plan, check_mode):
    old = plan.old
    if plan.same_program and not pins.link_problems(plan.layout, old) \
            and not pins.map_pin_problems(old) and not _leftovers(plan.layout, old):
        changes = _pinned_map_changes(plan.layout, plan.specs, write=False)
        if not (changes and plan.hands_over):  # else new rule maps, handed over
            return _apply_same(plan, check_mode, changes)
    record = plan.new_record()
    if check_mode:
        record["programs"] = _planned_programs(plan.layout, plan.obj)
        if plan.same_object:
            changes = _pinned_map_changes(plan.layout, plan.specs, write=False)
        else:
            changes = [c for n, s in plan.specs.items()
                       for c in map_changes_out(n, plan_map(s, fresh_contents(s)))]
    else:
        # What an apply that was killed left (staging/, pins the record does not name,
        # or a directory without a record): gone once the new pins are in place.
        stale = _pinned_ids(plan.layout, plan.layout.entries() if old is None
                            else _leftovers(plan.layout, old))
        if old is None:
            bpffs.remove_tree(plan.layout.dir)
        changes = _swap(plan, record, stale)
        state.store(plan.layout.name, plan.obj.data, record, plan.persist, False)
    return {"changed": True, "action": plan.action, "record": record,
            "diff": {"before": old or {}, "after": record}, "map_changes": changes}


def _apply_same(plan, check_mode, changes):
    """Same object and globals, links alive: maybe map entries (``changes``: to make, in an
    object that does not hand over), maybe the state copy."""
    old = plan.old
    record = plan.with_maps(dict(old))
    action = "unchanged"
    if changes or record != old:
        # Entries to write, or contents already right but recorded differently.
        action = "maps_updated"
        if not check_mode:
            if changes:
                changes = _pinned_map_changes(plan.layout, plan.specs, write=True)
            _rewrite_record(plan.layout, record)
    else:
        record = old
    if plan.after_attach and not check_mode:
        with _pinned_maps(plan.layout) as map_fd:
            plan.after_attach(map_fd)
    stored = state.store(plan.layout.name, plan.obj.data, record, plan.persist, check_mode)
    if stored and action == "unchanged":
        action = "persisted"
    return {"changed": action != "unchanged", "action": action, "record": record,
            "diff": {"before": old, "after": record}, "map_changes": changes}


def _planned_programs(layout, obj):
    return [{"name": p.name, "section": p.section, "prog_type": p.type,
             "attach_type": None, "target": None, "prog_id": None, "tag": None,
             "link_id": None, "pin": layout.link(p.name)} for p in obj.programs()]


def _pinned_map_changes(layout, specs, write):
    """The changes that give the pinned maps their specs' contents, made when ``write``
    (a map not pinned yet counts as empty)."""
    changes = []
    for map_name, spec in specs.items():
        pin = layout.map(map_name)
        if not write and not os.path.lexists(pin):
            changes.extend(map_changes_out(map_name, plan_map(spec, {})))
            continue
        with libbpf.pinned(pin) as fd:
            changes.extend(sync_map(fd, map_name, spec, write))
    return changes


def _rewrite_record(layout, record):
    bpffs.remove_tree(layout.staging)
    bpffs.make_dir(layout.staging)
    staged = os.path.join(layout.staging, bpffs.RECORD)
    bpffs.write_record(staged, record)
    os.rename(staged, layout.record)
    os.rmdir(layout.staging)


# ---------------------------------------------------------------- the swap

def _swap(plan, record, stale):
    """Load, attach and pin into staging, then rename over the live pins; fills in the
    record's programs and map pins and returns the map changes made. ``stale``: the
    (kind, id) of what a killed apply left, waited for like the old programs."""
    layout = plan.layout
    bpffs.remove_tree(layout.staging)
    own = [m for m in plan.obj.maps() if not m.internal]
    # The same object: the changes to the running programs' entries, which are reported.
    reported = _pinned_map_changes(layout, plan.specs, write=False) if plan.same_object else None
    _reuse_pinned_maps(layout, [m for m in own if plan.shares(m.name)])
    token = _name_instance(plan, record)
    _load(plan)
    changes = [c for n, s in plan.specs.items() for c in sync_map(plan.obj.map(n).fd, n, s)]
    links = []
    previous = None
    try:
        bpffs.make_dir(layout.dir)
        bpffs.make_dir(layout.staging)
        _attach_and_pin(layout, plan.obj, record, links)
        _pin_maps(layout, own, record)
        if plan.after_attach:
            plan.after_attach(lambda map_name: plan.obj.map(map_name).fd)
        previous = _hand_over(plan, token)
        record["loaded_at"] = _now()
        bpffs.write_record(os.path.join(layout.staging, bpffs.RECORD), record)
        _promote_staging(layout)
        # Unpinned links are released by a kernel work item: wait until the old
        # programs are gone, so only the new policy runs once apply returns.
        _wait_gone(((_ids(plan.old) if plan.old else set()) | stale) - _ids(record))
    except BaseException:
        if previous is not None:  # the old programs decide again
            _write_decider(plan, abi.EBPF_OOM_DECIDER_NEXT, previous)
        bpffs.remove_tree(layout.staging if plan.old else layout.dir)
        raise
    finally:
        for link in links:
            link.close()
    return changes if reported is None else reported


# ---------------------------------------------------------------- the hand-over (generic.h)

def _name_instance(plan, record):
    """Give the programs about to load a token of their own (kept in the record), or
    None when the object does not hand over."""
    if not plan.hands_over:
        return None
    token = (int.from_bytes(os.urandom(8), "little") >> 1) | 1
    plan.obj.set_global(abi.TOKEN_GLOBAL, token)
    record["token"] = token
    return token


def _read_decider(plan, key):
    fd = plan.obj.map(abi.DECIDER_MAP).fd
    return int.from_bytes(libbpf.map_lookup(fd, key.to_bytes(4, "little"), 8), "little")


def _write_decider(plan, key, token):
    fd = plan.obj.map(abi.DECIDER_MAP).fd
    libbpf.map_update(fd, key.to_bytes(4, "little"), token.to_bytes(8, "little"))


def _hand_over(plan, token):
    """The new programs decide the OOMs that start from now on: one write. Then wait
    (bounded) while an OOM that started before is still decided by the old ones, whose
    programs must stay attached until it ends. Returns the token replaced (0: none), or
    None when the object does not hand over."""
    if token is None:
        return None
    previous = _read_decider(plan, abi.EBPF_OOM_DECIDER_NEXT)
    _write_decider(plan, abi.EBPF_OOM_DECIDER_NEXT, token)
    libbpf.wait_for_programs()  # a name program that read the old token has latched it
    deadline = time.monotonic() + HANDOVER_TIMEOUT
    while previous and _read_decider(plan, abi.EBPF_OOM_DECIDER_SCAN) == previous \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    return previous


@contextlib.contextmanager
def _pinned_maps(layout):
    """map_fd(name) -> fd of the policy's pinned map; every fd opened is closed at exit."""
    opened = {}

    def map_fd(map_name):
        if map_name not in opened:
            opened[map_name] = libbpf.obj_get(layout.map(map_name))
        return opened[map_name]
    try:
        yield map_fd
    finally:
        for fd in opened.values():
            os.close(fd)


def _reuse_pinned_maps(layout, own):
    for m in own:
        pin = layout.map(m.name)
        if os.path.lexists(pin):
            with libbpf.pinned(pin) as fd:
                m.reuse_fd(fd)


def _load(plan):
    try:
        plan.obj.load()
    except BpfError as exc:
        raise LoaderError("the kernel refused to load policy %s from %s: %s"
                          % (plan.layout.name, plan.obj.path,
                             os.strerror(exc.errno) if exc.errno else exc.message), exc.log_tail)


def _attach_and_pin(layout, obj, record, links):
    """Attach every program, pin its link in staging and record it (``links`` collects
    the links, for the caller to close even when one fails)."""
    for prog in obj.programs():
        try:
            link = prog.attach()
        except BpfError as exc:
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


def _pin_maps(layout, own, record):
    for m in own:
        libbpf.obj_pin(m.fd, layout.map(m.name, staging=True))
        record["pinned_maps"].append({"name": m.name, "type": m.type_name,
                                      "map_id": libbpf.map_info(m.fd)["id"],
                                      "pin": layout.map(m.name)})


def _promote_staging(layout):
    """Rename the staged pins over the live ones, then drop live pins not staged."""
    # Links and maps first, the record last: a crash in between leaves a record
    # that does not match the links, which the next apply repairs.
    fresh = sorted(os.listdir(layout.staging), key=lambda n: n == bpffs.RECORD)
    for entry in fresh:
        os.rename(os.path.join(layout.staging, entry), os.path.join(layout.dir, entry))
    os.rmdir(layout.staging)
    for entry in layout.entries():
        if entry not in fresh:
            path = os.path.join(layout.dir, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                bpffs.remove_tree(path)
            else:
                os.unlink(path)


# ---------------------------------------------------------------- what a killed apply left

def _leftovers(layout, record):
    """Entries of the policy's directory that its record does not name: staging/ or pins
    that an apply killed before it finished left there (they can keep programs
    attached). A crash between the renames leaves pins under recorded names, which the
    link and map checks catch."""
    named = set([bpffs.RECORD] + [bpffs.LINK_PREFIX + p.get("name", "") for p in record.get("programs", [])]
                + [bpffs.MAP_PREFIX + m.get("name", "") for m in record.get("pinned_maps", [])])
    return [entry for entry in layout.entries() if entry not in named]


def _pinned_ids(layout, entries):
    """{(kind, id)} of the links, their programs and the maps pinned at ``entries`` of the
    policy's directory (staging/ included)."""
    ids = set()
    for entry in entries:
        path = os.path.join(layout.dir, entry)
        if entry == bpffs.STAGING:
            ids |= _pinned_ids(bpffs.Layout(layout.dir, bpffs.STAGING), os.listdir(path)) \
                if os.path.isdir(path) else set()
            continue
        try:
            with libbpf.pinned(path) as fd:
                if entry.startswith(bpffs.LINK_PREFIX):
                    info = libbpf.link_info(fd)
                    ids |= {("link", info["id"]), ("prog", info["prog_id"])}
                else:
                    ids.add(("map", libbpf.map_info(fd)["id"]))
        except (BpfError, OSError):
            continue  # not a pin of a link or a map: nothing to wait for
    return ids


# ---------------------------------------------------------------- waiting for the kernel

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
