# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which kernel GRUB boots: its menu (grub.cfg) and its environment block (grubenv).

Layer 2 (parsing): imports nothing from the engine.

The menu is what grub-mkconfig writes: `menuentry` blocks, maybe inside a `submenu`,
each with an id (`$menuentry_id_option 'ID'`) and a `linux /boot/vmlinuz-RELEASE` line.
An entry is named here by its GRUB path of ids (`SUBMENU_ID>ENTRY_ID` inside a submenu),
which is what `saved_entry` and `next_entry` take and what survives a kernel update
(titles are translated and indexes move). GRUB boots `next_entry` once when the menu was
made with GRUB_DEFAULT=saved (it clears the variable as it boots), else `saved_entry`;
an entry it cannot find means the first one.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import shlex

GRUB_CFG = "/boot/grub/grub.cfg"
GRUBENV = "/boot/grub/grubenv"

_KERNEL_IMAGE = re.compile(r"vmlinuz-(\S+)$")
# What grub-mkconfig's 00_header writes when GRUB_DEFAULT=saved.
_SAVED_DEFAULT = 'set default="${saved_entry}"'
_NEXT_ENTRY = 'set default="${next_entry}"'


class GrubError(Exception):
    """The menu or the environment block cannot be used as asked."""


def _words(line):
    try:
        return shlex.split(line, comments=False)
    except ValueError:
        return line.split()


def _block_id(words):
    for index, word in enumerate(words[:-1]):
        if word in ("$menuentry_id_option", "--id"):
            return words[index + 1]
    return None


def parse_menu(text):
    """The menu's entries in order: [{path, title, release, recovery, top}], release None when
    the entry boots no /boot/vmlinuz-RELEASE (memtest, firmware settings)."""
    entries, stack = [], []  # stack: ("submenu"|"entry"|"other", id, title)
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = _words(line)
        if words[0] in ("menuentry", "submenu") and line.endswith("{"):
            kind = "entry" if words[0] == "menuentry" else "submenu"
            title = words[1] if len(words) > 1 else ""
            ident = _block_id(words) or title
            stack.append((kind, ident, title))
            if kind == "entry":
                parents = [i for k, i, _t in stack[:-1] if k == "submenu"]
                entries.append(dict(path=">".join(parents + [ident]), title=title, release=None,
                                    recovery="recovery" in ident or "(recovery mode)" in title,
                                    top=not parents))
            continue
        if line.endswith("{"):
            stack.append(("other", None, None))
            continue
        if line == "}":
            if stack:
                stack.pop()
            continue
        in_entry = any(kind == "entry" for kind, _i, _t in stack)
        if in_entry and words[0] == "linux" and len(words) > 1 and entries[-1]["release"] is None:
            found = _KERNEL_IMAGE.search(words[1])
            if found:
                entries[-1]["release"] = found.group(1)
    return entries


def saved_default(text):
    """Whether the menu was made with GRUB_DEFAULT=saved (one-shot entries need it too)."""
    return _SAVED_DEFAULT in text and _NEXT_ENTRY in text


def parse_env(data):
    """grubenv's variables as a dict (the block is `name=value` lines padded with '#')."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    found = {}
    for line in text.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        found[name] = value
    return found


def releases(entries):
    """The kernel releases the menu boots, each once, in the menu's order."""
    found = []
    for entry in entries:
        if entry["release"] and not entry["recovery"] and entry["release"] not in found:
            found.append(entry["release"])
    return found


def entry_for(entries, release):
    """The entry that boots release: its own (not recovery) entry, by the id that names it."""
    mine = [e for e in entries if e["release"] == release and not e["recovery"]]
    if not mine:
        raise GrubError("GRUB's menu has no entry for kernel %s (it has %s): is the package "
                        "installed and update-grub run?" % (release, ", ".join(releases(entries)) or "none"))
    # The generic first entry (gnulinux-simple-...) follows whatever kernel is newest; an
    # entry whose id names the release stays with it.
    named = [e for e in mine if release in e["path"]]
    return (named or mine)[0]


def resolve(entries, value):
    """The entry a saved_entry/next_entry/default value selects, as GRUB finds it: a path of
    ids or titles, or an index; None selects the first entry."""
    if value not in (None, ""):
        for entry in entries:
            if value in (entry["path"], entry["title"]):
                return entry
        tops = [e for e in entries if e["top"]]
        if value.isdigit() and int(value) < len(tops):
            return tops[int(value)]
    return entries[0] if entries else None


def boots(entries, env):
    """(next boot's entry, the default entry) under a saved-default menu."""
    default = resolve(entries, env.get("saved_entry"))
    once = env.get("next_entry")
    return (resolve(entries, once) if once else default), default
