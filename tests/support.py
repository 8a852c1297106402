"""Helpers shared by tests of several directories (imported as `support`: tests/ is on
sys.path through tests/conftest.py; a `conftest` import would find whichever directory's
conftest.py pytest loaded last)."""

import os
import sys


def live_log(line):
    """A line for the run's live log (tests/run prints it as it is written), when there is
    one: what a long test does, visible while it runs, whichever worker runs it."""
    path = os.environ.get("EBPF_OOM_LIVE_LOG")
    if path:
        with open(path, "a") as handle:
            handle.write(line.rstrip("\n") + "\n")


def venv_tool(name):
    """An Ansible command beside this interpreter (the test venv), else the one on PATH (as
    where the host tests run with a system python3)."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.access(beside, os.X_OK) else name


def argument_spec(module):
    """The argument_spec ebpf.oom.<module>'s main() hands to AnsibleModule (stopped right there)."""
    import importlib
    from unittest import mock

    from ansible.module_utils import basic

    class Stop(Exception):
        pass

    def capture(_self, argument_spec, **_kwargs):
        raise Stop(argument_spec)

    main = importlib.import_module("ansible_collections.ebpf.oom.plugins.modules." + module).main
    with mock.patch.object(basic.AnsibleModule, "__init__", capture):
        try:
            main()
        except Stop as stop:
            return stop.args[0]
    raise AssertionError("ebpf.oom.%s's main() never made its AnsibleModule" % module)


# A GRUB menu as grub-mkconfig writes it on a Debian host with GRUB_DEFAULT=saved: the
# entry that follows the newest kernel, a submenu with each kernel and its recovery entry.
GRUB_UUID = "5e1f0c3a-0000-4000-8000-00000000abcd"
GRUB_HOOK, GRUB_STOCK = "6.12.118-ebpf-oom-hook", "6.1.0-41-amd64"


def grub_entry(release, kind="advanced", indent="\t"):
    """One kernel's menu entry (kind: advanced or recovery)."""
    title = "Debian GNU/Linux, with Linux %s%s" % (release, " (recovery mode)" if kind == "recovery" else "")
    lines = ["menuentry '%s' --class debian --class gnu-linux --class gnu --class os "
             "$menuentry_id_option 'gnulinux-%s-%s-%s' {" % (title, release, kind, GRUB_UUID),
             "\tload_video", "\tinsmod ext2",
             "\tif [ x$feature_platform_search_hint = xy ]; then",
             "\t  search --no-floppy --fs-uuid --set=root %s" % GRUB_UUID, "\tfi",
             "\tlinux\t/boot/vmlinuz-%s root=/dev/vda ro console=ttyS0 panic=10" % release, "}"]
    return "".join(indent + line + "\n" for line in lines)


GRUB_HEADER = """if [ -s $prefix/grubenv ]; then
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="${saved_entry}"
fi
function savedefault {
  if [ -z "${boot_once}" ]; then
    saved_entry="${chosen}"
    save_env saved_entry
  fi
}
"""
_GRUB_SIMPLE = ("menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-%s' {\n"
                "\tlinux\t/boot/vmlinuz-%s root=/dev/vda ro\n}\n" % (GRUB_UUID, GRUB_HOOK))
_GRUB_SUBMENU = ("submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-%s' {\n"
                 % GRUB_UUID + grub_entry(GRUB_HOOK) + grub_entry(GRUB_HOOK, "recovery")
                 + grub_entry(GRUB_STOCK) + grub_entry(GRUB_STOCK, "recovery") + "}\n")
GRUB_MENU = GRUB_HEADER + "### BEGIN /etc/grub.d/10_linux ###\n" + _GRUB_SIMPLE + _GRUB_SUBMENU + (
    "menuentry 'UEFI Firmware Settings' $menuentry_id_option 'uefi-firmware' {\n\tfwsetup\n}\n")
