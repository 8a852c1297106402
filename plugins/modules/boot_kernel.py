#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: boot_kernel
short_description: Choose the kernel GRUB boots, by default or for the next boot only
description:
  - Finds the GRUB menu entry of a kernel release in the host's C(grub.cfg) (the entry whose id names
    the release, not its recovery entry) and writes its path of ids to GRUB's environment block with
    C(grub-editenv), C(saved_entry) for O(boot=default), as C(grub-set-default) does, or
    C(next_entry) for O(boot=once), as C(grub-reboot) does. GRUB boots a C(next_entry) once and
    clears it as it boots, so a kernel that does not come up is left behind by the next reset.
  - Needs a menu made with C(GRUB_DEFAULT=saved); it fails, changing nothing, on any other menu
    (the role C(ebpf.oom.hook_kernel) sets it in C(/etc/default/grub.d/)).
  - Changes nothing when the variable already names the entry.
version_added: "0.3.0"
author:
  - ebpf.oom maintainers (@ebpf-oom)
options:
  release:
    description:
      - The kernel release whose entry to choose, as C(uname -r) prints it (the C(vmlinuz-RELEASE) the
        entry boots).
    type: str
    required: true
  boot:
    description:
      - C(default) makes it the entry GRUB boots from now on; C(once) boots it at the next boot only.
    type: str
    choices: [default, once]
    default: default
  grub_cfg:
    description:
      - The GRUB menu.
    type: path
    default: /boot/grub/grub.cfg
  grubenv:
    description:
      - GRUB's environment block (made by C(grub-editenv) when missing).
    type: path
    default: /boot/grub/grubenv
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ebpf.oom.attributes
notes:
  - The role C(ebpf.oom.hook_kernel) uses it to trial-boot the hook kernel once and to make it (or the
    distribution's kernel again) the default.
"""

EXAMPLES = r"""
- name: Try the hook kernel at the next boot only
  ebpf.oom.boot_kernel:
    release: 6.12.57-ebpf-oom-hook
    boot: once

- name: Keep booting the kernel that runs now
  ebpf.oom.boot_kernel:
    release: "{{ ansible_facts.kernel }}"
"""

RETURN = r"""
entry:
  description: The chosen entry, C({path, title, release}); C(path) is what was written.
  returned: success
  type: dict
  sample: {"path": "gnulinux-6.12.57-ebpf-oom-hook-advanced-0f4e2c1d", "release": "6.12.57-ebpf-oom-hook",
           "title": "Debian GNU/Linux, with Linux 6.12.57-ebpf-oom-hook"}
default:
  description: The kernel release GRUB boots by default after this run (its C(saved_entry), or the first entry).
  returned: success
  type: str
  sample: 6.1.0-41-amd64
next_boot:
  description: The kernel release GRUB boots at the next boot after this run (C(next_entry) when set, else the default).
  returned: success
  type: str
  sample: 6.12.57-ebpf-oom-hook
running:
  description: The kernel release running now.
  returned: always
  type: str
  sample: 6.1.0-41-amd64
releases:
  description: The kernel releases the menu boots, in its order (the newest first, as grub-mkconfig sorts them).
  returned: success
  type: list
  elements: str
  sample: ["6.12.57-ebpf-oom-hook", "6.1.0-41-amd64"]
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ebpf.oom.plugins.module_utils import grub
from ansible_collections.ebpf.oom.plugins.module_utils.files import read_text

ARGUMENT_SPEC = dict(
    release=dict(type="str", required=True),
    boot=dict(type="str", choices=["default", "once"], default="default"),
    grub_cfg=dict(type="path", default=grub.GRUB_CFG),
    grubenv=dict(type="path", default=grub.GRUBENV),
)
VARIABLE = dict(default="saved_entry", once="next_entry")


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    running = os.uname().release
    menu = read_text(p["grub_cfg"])
    if menu is None:
        module.fail_json(msg="no GRUB menu at %s: this host does not boot through GRUB, or update-grub "
                             "has not run" % p["grub_cfg"], running=running)
    if not grub.saved_default(menu):
        module.fail_json(msg="%s was not made with GRUB_DEFAULT=saved, so GRUB ignores saved and one-shot "
                             "entries: set GRUB_DEFAULT=saved in /etc/default/grub (or a file in "
                             "/etc/default/grub.d/) and run update-grub" % p["grub_cfg"], running=running)
    entries = grub.parse_menu(menu)
    try:
        entry = grub.entry_for(entries, p["release"])
    except grub.GrubError as e:
        module.fail_json(msg=str(e), running=running)
    env = grub.parse_env(read_text(p["grubenv"]) or "")
    variable = VARIABLE[p["boot"]]
    before = env.get(variable, "")
    changed = before != entry["path"]
    if changed and not module.check_mode:
        module.run_command(["grub-editenv", p["grubenv"], "set", "%s=%s" % (variable, entry["path"])],
                           check_rc=True)
    env[variable] = entry["path"]
    next_boot, default = grub.boots(entries, env)
    result = dict(changed=changed, running=running,
                  entry=dict((k, entry[k]) for k in ("path", "title", "release")),
                  default=default["release"], next_boot=next_boot["release"],
                  releases=grub.releases(entries))
    if module._diff:
        result["diff"] = dict(before_header=p["grubenv"], after_header=p["grubenv"],
                              before="%s=%s\n" % (variable, before),
                              after="%s=%s\n" % (variable, entry["path"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
