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
    memory. The keys are those of each entry of RV(ranking).
  returned: always
  type: dict
  contains: &candidate
    pid:
      description: The process id (in the host's pid namespace).
      type: int
    comm:
      description: The process's name (C(comm), at most 15 characters).
      type: str
    uid:
      description: The process's real user id.
      type: int
    cgroup:
      description: The path of its cgroup (v2) from the hierarchy's root; C(?) when the cgroup went away
        during the scan.
      type: str
    rss_kb:
      description: Its resident memory, KiB.
      type: int
    points:
      description: The badness points the OOM compares, in pages (C(oom_badness()) - resident pages,
        swap and page tables, plus C(oom_score_adj) x totalpages / 1000); with the C(score_adj) backend
        those its band's C(oom_score_adj) gives it.
      type: int
    oom_score_adj:
      description: The C(oom_score_adj) the OOM would see (with the C(score_adj) backend, its band's for a
        document previewed).
      type: int
    rule:
      description: The first rule that matches the process, C(index) (from 0, in the document's
        C(rules)) and C(text) (the rule as JSON); null when none does (the fallback decides).
      type: dict
      contains:
        index:
          description: The rule's position in the document's C(rules), from 0.
          type: int
        text:
          description: The rule, as JSON with sorted keys.
          type: str
    action:
      description: What the policy does with the process, C(select), C(prefer), C(protect), C(abort) or
        C(kernel) (no rule decides, the kernel's heuristic judges it); when the policy does not act in this
        OOM (RV(policy_acts) false), C(kernel).
      type: str
    tier:
      description: The tier of a C(prefer) decision (1-1000, the lowest dies first; C(select) is 0);
        not meaningful for the other actions.
      type: int
    by:
      description: What orders the processes of one tier, C(badness) (the kernel's points) or C(rss).
      type: str
  sample: {"pid": 5150, "comm": "batch-job", "uid": 1000, "cgroup": "/batch.slice/job.scope",
           "rss_kb": 524288, "points": 131210, "oom_score_adj": 0,
           "rule": {"index": 1, "text": "{\"action\": \"prefer\", \"match\": {\"cgroup\": \"/batch.slice\"}, \"tier\": 1}"},
           "action": "prefer", "tier": 1, "by": "badness"}
ranking:
  description: The first O(top) processes in the order successive OOMs would kill them, the first
    being RV(victim); empty when nobody would die now (an C(abort) rule matches a candidate, or an
    earlier victim is still exiting).
  returned: always
  type: list
  elements: dict
  contains: *candidate
  sample:
    - {"pid": 5150, "comm": "batch-job", "uid": 1000, "cgroup": "/batch.slice/job.scope", "rss_kb": 524288,
       "points": 131210, "oom_score_adj": 0,
       "rule": {"index": 1, "text": "{\"action\": \"prefer\", \"match\": {\"cgroup\": \"/batch.slice\"}, \"tier\": 1}"},
       "action": "prefer", "tier": 1, "by": "badness"}
    - {"pid": 3312, "comm": "gunicorn", "uid": 33, "cgroup": "/web.slice/app.service", "rss_kb": 262144,
       "points": 65620, "oom_score_adj": 0,
       "rule": {"index": 2, "text": "{\"action\": \"prefer\", \"match\": {\"cgroup\": \"/web.slice\"}, \"tier\": 2}"},
       "action": "prefer", "tier": 2, "by": "badness"}
kernel_victim:
  description: What the kernel's own heuristic (the most C(oom_badness()) points) would kill
    without the policy; null when no candidate can be killed. The keys of RV(victim); C(action) is
    always C(kernel), C(points) and C(oom_score_adj) are the process's own, and C(rule) the rule that
    would match it.
  returned: always
  type: dict
  contains: *candidate
  sample: {"pid": 4242, "comm": "postgres", "uid": 109,
           "cgroup": "/system.slice/system-postgresql.slice/postgresql@15-main.service", "rss_kb": 2097152,
           "points": 524800, "oom_score_adj": 0,
           "rule": {"index": 0, "text": "{\"action\": \"prefer\", \"match\": {\"cgroup\": \
             \"/system.slice/system-postgresql.slice\", \"comm\": \"postgres\"}, \"tier\": 1000}"},
           "action": "kernel", "tier": 1000, "by": "badness"}
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
  contains:
    candidates:
      description: The processes the OOM considers (for a memory-cgroup OOM, those in its subtree).
      type: int
    protected:
      description: Candidates a C(protect) rule (or fallback) keeps from being chosen.
      type: int
    unkillable:
      description: Candidates the kernel never kills (C(oom_score_adj) -1000, already reaped, in vfork).
      type: int
    unranked:
      description: Candidates no rule ranks, left to the kernel's heuristic after every tier.
      type: int
  sample: {"candidates": 41, "protected": 2, "unkillable": 3, "unranked": 33}
oom:
  description: The OOM imagined (kind, memory cgroup, the totalpages its points use).
  returned: always
  type: dict
  contains:
    kind:
      description: C(global) or C(memcg).
      type: str
    memcg:
      description: The memory cgroup that reaches its limit; null for a global OOM.
      type: str
    totalpages:
      description: The pages C(oom_score_adj) is a fraction of, in thousandths; RAM + swap for a global OOM,
        the memory cgroup's limit (C(memory.max) + C(memory.swap.max) of it or its nearest limited ancestor,
        at most RAM + swap) for a memcg OOM.
      type: int
  sample: {"kind": "memcg", "memcg": "/system.slice/postgresql.service", "totalpages": 524288}
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
