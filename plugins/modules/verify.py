#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: verify
short_description: Check that a host runs the BPF OOM policy a playbook says it runs
description:
  - For one policy (O(name)) or every recorded policy, checks against the kernel that the pins
    under C(/sys/fs/bpf/ebpf_oom/<name>/) are present, that each link is alive and attached to the
    recorded target with the recorded attach type, that the loaded programs are the recorded
    ones (ids, tags, embedded C(bpf_metadata_ebpf_oom_*) data), and optionally that they come
    from a given object and report a given policy name.
  - For a policy document, also what its backend needs. With C(evaluate_task), that its programs
    run in the mode its record says (RV(policies[].mode), C(enforce), or C(shadow) for a policy that
    judges OOMs and decides none). With C(score_adj), that the agent
    C(ebpf-oom agent) runs and that every live process a rule matches carries its band's
    C(oom_score_adj).
  - Fails listing every discrepancy (RV(problems)); succeeds with the facts it checked.
  - Never changes anything.
author:
  - ebpf.oom maintainers (@ebpf-oom)
version_added: "0.1.0"
options:
  name:
    description:
      - The policy to check; all recorded policies when omitted (then at least one must exist).
    type: str
  object:
    description:
      - Path of the object the policy must have been loaded from, on the host; its sha256 is
        compared with the record. Mutually exclusive with O(object_sha256).
    type: path
  object_sha256:
    description:
      - The sha256 the policy's object must have. Mutually exclusive with O(object).
    type: str
  policy_name:
    description:
      - The policy name the loaded programs must report (C(bpf_metadata_ebpf_oom_policy)).
    type: str
  strict:
    description:
      - A cgroup rule that matches no live cgroup fails the task rather than warning.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ebpf.oom.attributes.info
"""

EXAMPLES = r"""
- name: The host runs exactly this policy
  ebpf.oom.verify:
    name: select_pid
    object: /var/lib/ebpf-oom/select_pid.bpf.o
    policy_name: select_pid

- name: Every recorded policy is intact
  ebpf.oom.verify:
"""

RETURN = r"""
policies:
  description: The facts checked per policy (name, record, pins, links with their attach type and
    target, program ids and tags, metadata); for a declarative policy also its C(backend) and
    C(cgroups), each rule path with the id of the cgroup it matches now (empty when none); for a
    C(score_adj) policy C(score_adj) (C(agent), whether it runs, and C(mismatches), the matched
    processes that do not carry their band's value). A policy whose record cannot be read has its C(name) only.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The policy's name (C(observer) for the OOM observer).
      type: str
    object_sha256:
      description: The sha256 of the object its record names.
      type: str
    source_sha256:
      description: The sha256 of the C source its record names.
      type: str
    collection_version:
      description: The version of the collection that loaded it.
      type: str
    policy_name:
      description: The policy name its record names.
      type: str
    loaded_at:
      description: When it was loaded, ISO 8601 UTC.
      type: str
    globals:
      description: The globals set before load.
      type: dict
    programs:
      description: Each recorded program as the kernel runs it.
      type: list
      elements: dict
      contains:
        name:
          description: The program's name.
          type: str
        section:
          description: Its ELF section.
          type: str
        attach_type:
          description: The recorded attach type.
          type: str
        target:
          description: The recorded attach target.
          type: str
        prog_id:
          description: The recorded program id.
          type: int
        tag:
          description: The recorded program tag.
          type: str
        link_id:
          description: The recorded link id.
          type: int
        pin:
          description: Where its link is pinned.
          type: str
        attached:
          description: Whether the pinned link is alive, on the recorded target, running the recorded program.
          type: bool
        metadata:
          description: The C(bpf_metadata_) variables of the program the link runs, without that prefix
            (C(ebpf_oom_src_sha256), C(ebpf_oom_version), C(ebpf_oom_policy)); absent when the program cannot be read.
          type: dict
    maps:
      description: The pinned maps its record names, C({name, type, map_id, pin}).
      type: list
      elements: dict
    backend:
      description: A declarative policy's backend, C(evaluate_task) or C(score_adj).
      type: str
    cgroups:
      description: A declarative policy's cgroup rule paths, each with the ids of the cgroups it matches now.
      type: dict
    mode:
      description: An C(evaluate_task) policy's mode, C(enforce) (it decides OOMs) or C(shadow) (it judges
        them and decides none; see O(ebpf.oom.policy#module:mode)).
      type: str
    score_adj:
      description: A C(score_adj) policy's C(agent) (whether it runs) and C(mismatches) (C({pid, comm, rule,
        oom_score_adj, carries}) of each matched process whose value is not its band's).
      type: dict
  sample: [{"name": "batch", "object_sha256": "0ddcb9cc41fbdcfcf51feef2b760327dbdb50e27549868e8051f18eeb917086f",
            "source_sha256": "01170a60f30de66a133ca46e753669b315498ed4acea5523a1cd86a7dd6f1d3b",
            "collection_version": "0.2.0", "policy_name": "batch", "loaded_at": "2026-12-06T15:37:50+00:00",
            "globals": {"bpf_metadata_ebpf_oom_policy": "batch"},
            "programs": [{"name": "ebpf_oom_eval", "section": "fmod_ret/bpf_oom_evaluate_task",
                          "attach_type": "modify_return", "target": "bpf_oom_evaluate_task", "prog_id": 931,
                          "tag": "a1b2c3d4e5f60718", "link_id": 88, "pin": "/sys/fs/bpf/ebpf_oom/batch/link_ebpf_oom_eval",
                          "attached": true,
                          "metadata": {"ebpf_oom_src_sha256": "01170a60f30de66a133ca46e753669b315498ed4acea5523a1cd86a7dd6f1d3b",
                                       "ebpf_oom_version": "0.2.0", "ebpf_oom_policy": "batch"}}],
            "maps": [{"name": "oom_rules", "type": "array", "map_id": 1402, "pin": "/sys/fs/bpf/ebpf_oom/batch/map_oom_rules"}],
            "backend": "evaluate_task", "cgroups": {"/batch.slice": [3140]}, "mode": "enforce"}]
problems:
  description: Every discrepancy found (the task fails when there is any).
  returned: always
  type: list
  elements: str
  sample: ["select_pid: link link_on_mark_victim is not pinned"]
notices:
  description: What verify found worth a look without failing (cgroup rules that match no live
    cgroup, unless O(strict)), also shown as the task's warnings; an empty list when nothing.
  returned: always
  type: list
  elements: str
  sample: ["policy batch: cgroup rule /batch.slice matches no cgroup: none lives at that path now"]
object_sha256:
  description: The sha256 that the policies were compared with, when one was given.
  returned: when O(object) or O(object_sha256) is given
  type: str
  sample: c0af8b60a5095e342f6716ed59b863f8b91d9cc02086140ceaad6d8ad2e56a6b
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ebpf.oom.plugins.module_utils import backends
from ansible_collections.ebpf.oom.plugins.module_utils.errors import LoaderError
from ansible_collections.ebpf.oom.plugins.module_utils.files import sha256_file


ARGUMENT_SPEC = dict(
    name=dict(type="str"),
    object=dict(type="path"),
    object_sha256=dict(type="str"),
    policy_name=dict(type="str"),
    strict=dict(type="bool", default=False),
)
SPEC_KWARGS = dict(mutually_exclusive=[("object", "object_sha256")])


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True, **SPEC_KWARGS)
    p = module.params
    sha = p["object_sha256"]
    if p["object"] is not None:
        if not os.path.isfile(p["object"]):
            module.fail_json(msg="object %s does not exist" % p["object"])
        sha = sha256_file(p["object"])
    try:
        result = backends.verify_policies(name=p["name"], object_sha256=sha.lower() if sha else None,
                                          policy_name=p["policy_name"], strict=p["strict"])
    except LoaderError as e:
        module.fail_json(msg=str(e), log_tail=e.log_tail)
    if p["name"] is None and not result["policies"] and not result["problems"]:
        result["problems"].append("no policy is loaded")
    if sha:
        result["object_sha256"] = sha.lower()
    # Ansible's own `warnings` key is not a module's to set: they are notices here, and warned.
    result["notices"] = result.pop("warnings")
    for warning in result["notices"]:
        module.warn(warning)
    if result["problems"]:
        module.fail_json(msg="verify found %d problem(s): %s" % (len(result["problems"]), "; ".join(result["problems"])),
                         **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
