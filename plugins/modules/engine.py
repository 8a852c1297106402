#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: engine
short_description: Install the collection's engine on a host, as one archive, for its host command
description:
  - The engine (the collection's C(plugins/module_utils), Python standard library only) is what
    the host command C(ebpf-oom) runs without Ansible - the boot restore, the metrics timer, the
    off switch, the C(score_adj) agent, C(ebpf-oom explain) - so that the host has no second
    loader to drift from the modules'.
  - The action plugin builds it on the controller as one zip file holding the package
    C(ebpf_oom_engine) (sorted entries and fixed timestamps, so that the same sources give the same bytes on
    any controller) and sends it with the task; the module writes it to O(path), root-owned, mode
    0644, atomically, when its sha256 differs from the file there. The host command puts it on
    C(sys.path) (Python's zipimport).
  - The role C(ebpf.oom.bpf_oom) runs it; a playbook rarely needs to.
version_added: "0.1.0"
author:
  - ebpf.oom maintainers (@ebpf-oom)
options:
  path:
    description:
      - Where the archive goes; its directory must exist, except in check mode (where an earlier task
        would make it).
    type: path
    default: /usr/lib/ebpf-oom/ebpf_oom_engine.zip
  state:
    description:
      - C(present) installs the archive (or keeps it); C(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  archive:
    description:
      - The archive, base64, as the action plugin sends it; set by the action plugin, not by users.
    type: str
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ebpf.oom.attributes
attributes:
  check_mode:
    details: Nothing is written; C(changed) says whether it would be.
  diff_mode:
    details: The archive's sha256 before and after.
"""

EXAMPLES = r"""
- name: Install the engine for the host command
  ebpf.oom.engine:
    path: /usr/lib/ebpf-oom/ebpf_oom_engine.zip
"""

RETURN = r"""
path:
  description: The archive on the host.
  returned: always
  type: str
  sample: /usr/lib/ebpf-oom/ebpf_oom_engine.zip
sha256:
  description: The sha256 of the archive now on the host (with O(state=absent), null).
  returned: always
  type: str
  sample: 8a1d6f0c2f3e5b7a9c4d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b
"""

import base64
import hashlib
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ebpf.oom.plugins.module_utils.units import held, put

ARGUMENT_SPEC = dict(
    path=dict(type="path", default="/usr/lib/ebpf-oom/ebpf_oom_engine.zip"),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    archive=dict(type="str"),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           required_if=[("state", "present", ("archive",))])
    p = module.params
    path = p["path"]
    before = held(path)
    if p["state"] == "absent":
        after_sha = wanted = None
        if before and not module.check_mode:
            os.unlink(path)
    else:
        try:
            data = base64.b64decode(p["archive"], validate=True)
        except (TypeError, ValueError) as e:
            module.fail_json(msg="archive is not base64: %s" % e)
        after_sha = hashlib.sha256(data).hexdigest()
        # In check mode the directory may be one that an earlier task would make.
        if not os.path.isdir(os.path.dirname(path)) and not module.check_mode:
            module.fail_json(msg="path: the directory %s does not exist" % os.path.dirname(path))
        wanted = (after_sha, 0o644, 0)
        put(path, data, 0o644, module.check_mode)  # written (root's, 0644) when not as wanted
    result = dict(changed=before != wanted, path=path, sha256=after_sha)
    if module._diff:
        result["diff"] = dict(before="sha256: %s\n" % (before[0] if before else None),
                              after="sha256: %s\n" % after_sha)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
