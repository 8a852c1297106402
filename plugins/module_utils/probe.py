# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a host can do: the kernel facts behind ebpf.oom.kernel_info (which backends a
host can use: backends.usable), and the checks
ebpf.oom.policy adds before anything changes (the loader itself refuses an object
whose kernel symbols are missing, with UnsupportedKernel).

Reads only (BTF through the engine's libbpf binding, /proc, /sys); standard
library only.

Layer 6 (what the host offers): imports the backends, pins, the compiler (to find
clang), the layout, the kernel binding and the leaf helpers.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from . import backends, bpffs, common, compiler, events, libbpf, pins, scoreadj, shadow, state
from .errors import BpfError, CompileError
from .files import read_text

JIT_SYSCTL = "/proc/sys/net/core/bpf_jit_enable"
LOCKDOWN = "/sys/kernel/security/lockdown"
# The UEFI global variable SecureBoot: 4 bytes of attributes, then 1 when it is on.
SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFI_DIR = "/sys/firmware/efi"
BTF_VMLINUX = common.BTF_VMLINUX
HOOK_SYMBOLS = ((common.HOOK_FUNC, "func"), (common.NAME_FUNC, "func"), (common.NAME_KFUNC, "func"))


def btf_present():
    return os.path.exists(BTF_VMLINUX)


def _read(path):
    text = read_text(path)
    return text.strip() if text is not None else None


def lockdown_mode():
    """The selected lockdown mode ('none', 'integrity', 'confidentiality') or None."""
    text = _read(LOCKDOWN)
    if text is None:
        return None
    for word in text.split():
        if word.startswith("["):
            return word.strip("[]")
    return text


def secure_boot():
    """True or False on a UEFI host (the firmware's SecureBoot variable), None on BIOS or unknown."""
    try:
        with open(SECURE_BOOT_VAR, "rb") as handle:
            data = handle.read()
    except OSError:
        return False if os.path.isdir(EFI_DIR) else None
    return len(data) > 4 and data[4] == 1


def jit_enabled():
    """bpf_jit_enable as an int (0 off, 1 on, 2 debug), or None when unknown."""
    text = _read(JIT_SYSCTL)
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


def hook_program_problem(object_path):
    """Why the object is not an OOM policy (no fmod_ret/bpf_oom_evaluate_task program), or None."""
    try:
        with libbpf.Object(object_path) as obj:
            sections = [p.section for p in obj.programs()]
    except (BpfError, OSError) as e:
        return "object %s cannot be opened: %s" % (object_path, e)
    if common.HOOK_SECTION in sections:
        return None
    return ("object %s has no %s program (it has: %s); a policy needs SEC(\"%s\") "
            "(require_hook=always)" % (object_path, common.HOOK_SECTION, ", ".join(sections) or "none",
                                       common.HOOK_SECTION))


def unsupported_message(missing):
    """The failure message for a kernel that lacks the given BTF symbols."""
    msg = "kernel %s lacks %s" % (os.uname().release, ", ".join(missing))
    if not btf_present():
        return msg + ": it has no BTF (%s; CONFIG_DEBUG_INFO_BTF=n)" % BTF_VMLINUX
    if set(missing) & set(name for name, _kind in HOOK_SYMBOLS):
        return msg + " in its BTF: it is not a kernel with the OOM policy hook"
    return msg + " in its BTF"


def _clang():
    try:
        path = compiler.find_clang()
    except CompileError:
        return None
    return dict(path=path, version=compiler.clang_version(path)[1])


def _libbpf_version():
    try:
        return libbpf.libbpf_version()
    except BpfError:
        return None


def kernel_info(with_policies=True):
    """Everything kernel_info reports; see plugins/modules/kernel_info.py RETURN."""
    version = _libbpf_version()
    btf = btf_present() and version is not None
    has = dict((name, btf and libbpf.vmlinux_btf_has(name, kind))
               for name, kind in HOOK_SYMBOLS + ((common.STRUCT_OPS_SUCCESSOR, "struct"),))
    reasons = []
    if version is None:
        reasons.append("libbpf.so.1 cannot be loaded (install the libbpf1 package)")
    if not btf_present():
        reasons.append("no kernel BTF (%s missing: CONFIG_DEBUG_INFO_BTF=n)" % BTF_VMLINUX)
    elif btf and not has[common.HOOK_FUNC]:
        reasons.append("%s is not in the kernel's BTF: the kernel lacks the OOM policy hook" % common.HOOK_FUNC)
    jit = jit_enabled()
    usable = backends.usable()
    unusable = dict((name, backends.BACKENDS[name].missing())
                    for name in backends.ORDER if name not in usable)
    if btf and not usable:
        reasons.extend("backend %s: the kernel lacks %s" % (name, ", ".join(missing))
                       for name, missing in sorted(unusable.items())
                       if name != backends.EvaluateTask.name)
    info = dict(
        kernel_release=os.uname().release,
        btf=btf_present(),
        hook=dict((name, has[name]) for name, _kind in HOOK_SYMBOLS),
        policy_name_supported=has[common.NAME_FUNC] and has[common.NAME_KFUNC],
        struct_ops={common.STRUCT_OPS_SUCCESSOR: has[common.STRUCT_OPS_SUCCESSOR]},
        bpffs_mounted=bpffs.is_bpffs(bpffs.mount_point(bpffs.roots()[0])),
        jit=jit,
        jit_enabled=None if jit is None else jit > 0,
        lockdown=lockdown_mode(),
        secure_boot=secure_boot(),
        clang=_clang(),
        libbpf_version=version,
        backends=usable,
        backend=usable[0] if usable else "none",
        unusable=unusable,
        reasons=[] if usable else reasons,
    )
    if with_policies:
        info["policies"] = pins.list_policies() if version else []
    info.update(switched_off=state.switched_off(), agent=scoreadj.agent_running(),
                collection_version=common.COLLECTION_VERSION)
    return info


STATUS_COLUMNS = ("kernel", "backend", "policies", "observer", "agent", "off", "version", "last kill")


def _how(record):
    """A policy's backend (C: a C policy), and `shadow` when it judges OOMs and decides none."""
    how = record.get("backend") or "C"
    return how + " shadow" if shadow.mode_of(record.get("document")) == "shadow" else how


def status(info):
    """One row of the fleet's table (playbooks/status.yml, `ebpf-oom status`) from
    kernel_info(): {column: text}, the last kill read from the observer and the kernel log."""
    policies = [p for p in info.get("policies", []) if p["name"] != "observer"]
    found = events.collect()["events"]
    last = found[-1] if found else None
    return {
        "kernel": info["kernel_release"],
        "backend": info["backend"],
        "policies": ", ".join(
            "%s (%s, %s, %s, %s)" % (p["name"], _how(p), (p.get("object_sha256") or "?")[:12],
                                     p.get("collection_version") or "?", p.get("loaded_at") or "?")
            if "problem" not in p else "%s (%s)" % (p["name"], p["problem"]) for p in policies) or "-",
        "observer": "yes" if any(p["name"] == "observer" for p in info.get("policies", [])) else "no",
        "agent": "yes" if info["agent"] else "no",
        "off": info["switched_off"] or "no",
        "version": info["collection_version"],
        # to the second: the wall time of a kill is worked out from the boot clock at each read
        "last kill": "-" if last is None else "%s %s (%s) by %s" % (
            (last.get("time") or "?")[:19], last.get("pid"), last.get("comm"), last.get("policy") or "?"),
    }
