"""GRUB's menu and environment block as ebpf.oom.boot_kernel reads them (pure parsing; the
VM test tests/vm/test_hook_kernel_role.py boots what they choose)."""

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import grub

from support import GRUB_HEADER as HEADER, GRUB_HOOK as HOOK, GRUB_MENU as MENU, GRUB_STOCK as STOCK
from support import GRUB_UUID as UUID, grub_entry as entry


def test_entries_are_named_by_their_paths_of_ids_and_the_release_they_boot():
    entries = grub.parse_menu(MENU)
    assert [(e["path"], e["release"], e["recovery"], e["top"]) for e in entries] == [
        ("gnulinux-simple-" + UUID, HOOK, False, True),
        ("gnulinux-advanced-%s>gnulinux-%s-advanced-%s" % (UUID, HOOK, UUID), HOOK, False, False),
        ("gnulinux-advanced-%s>gnulinux-%s-recovery-%s" % (UUID, HOOK, UUID), HOOK, True, False),
        ("gnulinux-advanced-%s>gnulinux-%s-advanced-%s" % (UUID, STOCK, UUID), STOCK, False, False),
        ("gnulinux-advanced-%s>gnulinux-%s-recovery-%s" % (UUID, STOCK, UUID), STOCK, True, False),
        ("uefi-firmware", None, False, True)]
    assert grub.releases(entries) == [HOOK, STOCK]


def test_a_release_gets_its_own_entry_not_the_one_that_follows_the_newest_kernel():
    entries = grub.parse_menu(MENU)
    assert grub.entry_for(entries, HOOK)["path"].endswith(">gnulinux-%s-advanced-%s" % (HOOK, UUID))
    assert grub.entry_for(entries, STOCK)["path"].endswith(">gnulinux-%s-advanced-%s" % (STOCK, UUID))
    flat = grub.parse_menu(HEADER + entry(HOOK, indent="") + entry(STOCK, indent=""))  # GRUB_DISABLE_SUBMENU=y
    assert grub.entry_for(flat, STOCK)["path"] == "gnulinux-%s-advanced-%s" % (STOCK, UUID)


def test_a_release_without_an_entry_is_refused_naming_what_the_menu_has():
    with pytest.raises(grub.GrubError, match=r"no entry for kernel 6.12.0-other \(it has %s, %s\)"
                       % (HOOK, STOCK)):
        grub.entry_for(grub.parse_menu(MENU), "6.12.0-other")
    with pytest.raises(grub.GrubError, match=r"\(it has none\)"):
        grub.entry_for([], STOCK)


def test_only_a_saved_default_menu_takes_saved_and_one_shot_entries():
    assert grub.saved_default(MENU)
    assert not grub.saved_default(MENU.replace('set default="${saved_entry}"', 'set default="0"'))


def test_what_boots_next_and_by_default():
    entries = grub.parse_menu(MENU)
    stock = grub.entry_for(entries, STOCK)["path"]
    hook = grub.entry_for(entries, HOOK)["path"]
    env = grub.parse_env("# GRUB Environment Block\nsaved_entry=%s\nnext_entry=%s\n%s" % (stock, hook, "#" * 900))
    assert env == {"saved_entry": stock, "next_entry": hook}
    once, default = grub.boots(entries, env)
    assert (once["release"], default["release"]) == (HOOK, STOCK)
    # next_entry spent (GRUB cleared it): the default boots
    once, default = grub.boots(entries, dict(env, next_entry=""))
    assert once["release"] == default["release"] == STOCK
    # a saved entry GRUB cannot find, or none: the first entry (the newest kernel)
    assert grub.boots(entries, {"saved_entry": "gone"})[1]["release"] == HOOK
    assert grub.boots(entries, {})[1]["release"] == HOOK
    # titles and indexes select as they do in GRUB
    assert grub.resolve(entries, "Debian GNU/Linux")["path"] == "gnulinux-simple-" + UUID
    assert grub.resolve(entries, "1")["path"] == "uefi-firmware"
