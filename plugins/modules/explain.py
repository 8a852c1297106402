#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: explain
short_description: Say which process an OOM would kill on a host now, and why, killing nothing
description:
  - Ranks the host's processes the way an OOM would, under a loaded declarative policy
    (O(name)) or a policy document not applied yet (O(policy)), and returns the victim, the order
    in which successive OOMs would kill, and what the kernel's own heuristic would kill without
    the policy.
  - The collection's generic program classifies every candidate with the same code and rule
    maps as the policy's victim-selection program, from a BPF task iterator (C(iter/task)) and
    points computed as the kernel's C(oom_badness()) does. It needs kernel BTF and task
    iterators, not the OOM hook, so a document can be previewed on a stock kernel.
  - Nothing on the host changes but the imagined OOM, written into the policy's map
    C(oom_imagined) that only its task iterator reads. With O(name) the loaded policy's own
    iterator, pinned with it, runs over its own maps, and nothing is loaded (a policy loaded by
    an older collection version is read by a private load of the program); with O(policy) the
    document is rendered into a private, unpinned copy of the maps.
  - It cannot predict processes that start, grow or shrink before the OOM, nor the kernel's
    cpuset and memory-policy eligibility checks. C policies (their own BPF program) are refused,
    as only the shared classification can be replayed.
author:
  - ebpf.oom maintainers (@ebpf-oom)
version_added: "0.1.0"
options:
  name:
    description:
      - A loaded declarative policy to explain. Exactly one of O(name) and O(policy).
    type: str
  policy:
    description:
      - A policy document (inline, or the path of a YAML or JSON file on the controller),
        validated on the controller like M(ebpf.oom.policy)'s. Exactly one of O(name) and O(policy).
    type: raw
  oom:
    description:
      - "The OOM to imagine: C(global) (the whole machine), or C({memcg: PATH}) (the memory cgroup
        at PATH reaches its limit; only tasks in its subtree are candidates)."
    type: raw
    default: global
  backend:
    description:
      - With O(policy), the backend the preview assumes (as O(ebpf.oom.policy#module:backend) of
        M(ebpf.oom.policy)). C(auto) takes the best this host has, as M(ebpf.oom.policy) would.
      - Under C(evaluate_task) the document's rules rank the processes. Under C(score_adj) the
        kernel's own heuristic chooses, by its badness with the C(oom_score_adj) each rule's band
        gives its processes (the others keep theirs); RV(ranking) is that order.
      - With O(name), the backend the policy was applied with, whatever this says.
    type: str
    choices: [auto, evaluate_task, score_adj]
    default: auto
  top:
    description:
      - How many entries of RV(ranking) to return.
    type: int
    default: 5
  object:
    description:
      - The generic program's object on the host; by default the action plugin compiles the
        collection's C(bpf/generic.bpf.c) on the controller (once, cached) and sends it.
    type: path
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ebpf.oom.attributes.info
  - ebpf.oom.sent_object
"""

EXAMPLES = r"""
- name: What would a global OOM kill on this database host now?
  ebpf.oom.explain:
    name: database
  register: oom_now

- name: Preview a document before rolling it out, for the database's memory cgroup
  ebpf.oom.explain:
    policy: files/database.yml
    oom:
      memcg: /system.slice/postgresql.service
    top: 3
"""

RETURN = r"""
policy:
  description: The name of the policy explained (of the loaded policy, or of the document).
  returned: always
  type: str
  sample: database
victim:
  description: The process the imagined OOM would kill now (null when none would die), with the
    rule that decided (its index and text; null for the fallback), its action, tier, points and
    memory.
  returned: always
  type: dict
  sample: {"pid": 5150, "comm": "batch-job", "uid": 1000, "cgroup": "/batch.slice/job.scope",
           "rss_kb": 524288, "points": 131210, "oom_score_adj": 0,
           "rule": {"index": 1, "text": "{\"action\": \"prefer\", \"match\": {\"cgroup\": \"/batch.slice\"}, \"tier\": 1}"},
           "action": "prefer", "tier": 1, "by": "badness"}
ranking:
  description: The first O(top) processes in the order successive OOMs would kill them.
  returned: always
  type: list
  elements: dict
kernel_victim:
  description: What the kernel's own heuristic (the most C(oom_badness()) points) would kill
    without the policy.
  returned: always
  type: dict
no_victim:
  description: True when the policy leaves no victim (every candidate protected or unkillable);
    a warning says what the kernel does then.
  returned: always
  type: bool
backend:
  description: The backend the ranking assumes (the loaded policy's, or O(backend)'s choice for a
    document); C(score_adj) ranks by the kernel's badness with the C(oom_score_adj) values of the
    policy's bands, and RV(victim)'s C(oom_score_adj) and C(points) are the ones the OOM will see.
    Null for a policy recorded before backends had names.
  returned: always
  type: str
  sample: score_adj
policy_acts:
  description: Whether the policy acts in this kind of OOM (its C(scope)); when it does not, the
    kernel's own heuristic decides and RV(victim) is RV(kernel_victim).
  returned: always
  type: bool
counts:
  description: Candidates of the imagined OOM, and how many are protected, unkillable
    (C(oom_score_adj) -1000, reaped, in vfork) or left to the kernel's heuristic.
  returned: always
  type: dict
  sample: {"candidates": 41, "protected": 2, "unkillable": 3, "unranked": 33}
oom:
  description: The OOM imagined (kind, memory cgroup, the totalpages its points use).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ebpf.oom.plugins.module_utils import backends, explain
from ansible_collections.ebpf.oom.plugins.module_utils.errors import LoaderError, RenderError
from ansible_collections.ebpf.oom.plugins.module_utils.files import sent_copy

ARGUMENT_SPEC = dict(
    name=dict(type="str"),
    policy=dict(type="raw"),
    oom=dict(type="raw", default="global"),
    top=dict(type="int", default=5),
    backend=dict(type="str", choices=list(backends.CHOICES), default=backends.AUTO),
    object=dict(type="path"),
    object_sha256=dict(type="str"),
)
SPEC_KWARGS = dict(mutually_exclusive=[("name", "policy")], required_one_of=[("name", "policy")])


def memcg_of(oom):
    """None for a global OOM, else the memory cgroup's path; ValueError for anything else."""
    if oom in (None, "global"):
        return None
    if isinstance(oom, dict) and set(oom) == {"memcg"} and isinstance(oom["memcg"], str):
        return oom["memcg"]
    raise ValueError("oom must be 'global' or {memcg: /path}, not %r" % (oom,))


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True, **SPEC_KWARGS)
    p = module.params
    if p["policy"] is not None and not isinstance(p["policy"], dict):
        module.fail_json(msg="policy must be a document here; the action plugin reads policy files "
                             "on the controller")
    if not p["object"]:
        module.fail_json(msg="object is needed (the action plugin sends the generic program)")
    try:
        backend = backends.choose(p["backend"]).name if p["policy"] is not None else None
        with sent_copy(p["object"], p["object_sha256"], LoaderError) as object_path:
            result = explain.explain(object_path, oom=memcg_of(p["oom"]), name=p["name"],
                                     document=p["policy"], top=p["top"], backend=backend)
    except (ValueError, RenderError) as e:
        module.fail_json(msg=str(e))
    except LoaderError as e:
        module.fail_json(msg=str(e), log_tail=e.log_tail)
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
