#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: events_info
short_description: Report the OOM kills of a host, with the policy that chose each victim
description:
  - Returns the host's OOM kills, oldest first, from two sources, merged into one event per kill.
  - The kernel log (C(/dev/kmsg)) holds the OOM report of each kill; on a kernel with the OOM
    policy hook the report names the policy (C(policy_name=)). The log is a ring buffer, old
    reports scroll away.
  - The OOM observer, a small BPF program on the C(oom/mark_victim) tracepoint that
    M(ebpf.oom.observer) deploys as C(observer) (C(/sys/fs/bpf/ebpf_oom/observer/); the role
    C(ebpf.oom.bpf_oom) does so on every host with BTF), counts every kill and keeps the
    last 64 victims in pinned maps, on any kernel with BTF, with or without the hook. It does not
    know the policy; the kernel log does.
  - A kernel without the hook names no policy in its report. A kill whose victim carried the
    C(oom_score_adj) the agent of a C(score_adj) policy wrote to that very process (its ledger
    says so) is reported as that policy's.
  - Each kill is paired with the verdicts of the policies that judged its OOM in shadow mode
    (O(ebpf.oom.policy#module:mode)), that is the task each would have killed, and whether that is
    the task the kernel killed (RV(events[].shadow)). RV(shadow_policies) counts them per policy.
  - Changes nothing, except the metrics file and its counting state when O(metrics_file) is given.
version_added: "0.1.0"
author:
  - ebpf.oom maintainers (@ebpf-oom)
options:
  since:
    description:
      - Only kills at or after this time. A duration before now (C(90s), C(15m), C(2h), C(7d)),
        Unix seconds, or an ISO 8601 time (UTC unless it has an offset, for example
        C(2026-01-31T12:00:00Z)).
    type: str
  policy:
    description:
      - Only kills chosen by one of these policies (the name the kernel printed; C(default) is
        the in-kernel heuristic on a hook kernel). Kills whose policy is unknown never match.
    type: list
    elements: str
    default: []
  sources:
    description:
      - Which sources to read.
    type: list
    elements: str
    choices: [kmsg, observer]
    default: [kmsg, observer]
  metrics_file:
    description:
      - Also write metrics of all known kills (regardless of O(since) and O(policy)) to this file
        in the node_exporter textfile-collector format, replacing it atomically (mode 0644) when
        its content differs. Its directory must exist.
      - So that the counters never go down while the kernel log scrolls away, what was counted
        is kept in C(/var/lib/ebpf-oom/metrics-state.json) (mode 0600); a kill counts once,
        with the policy and cgroup known when it was first seen. A reboot starts from zero.
      - Metrics are C(ebpf_oom_kills_total{policy,rule,cgroup}),
        C(ebpf_oom_last_kill_timestamp_seconds{policy,rule,cgroup}), C(ebpf_oom_observer_loaded),
        C(ebpf_oom_observer_kills_total), C(ebpf_oom_policy_loaded{policy}) (1 for a policy that is
        loaded and verifies, 0 for one recorded for the boot restore but not loaded) and
        C(ebpf_oom_rule_matches{policy,rule}) (how many live cgroups each cgroup rule of a loaded
        declarative policy matches now; 0 is a rule that matches nothing),
        C(ebpf_oom_shadow_kills_total{policy}) and C(ebpf_oom_shadow_disagreements_total{policy}) (the
        kills a policy judged in shadow mode since it was loaded, and of those the ones whose victim
        is not the task it would have killed; see RV(shadow_policies)).
      - Kill labels stay bounded, whatever cgroups the host makes. C(policy) is the policy that
        chose the victim; C(rule) the path of that policy's cgroup rule whose cgroup held the
        victim's memory cgroup (the deepest such rule; C(none) when no cgroup rule of the policy
        covers it, whatever else chose); C(cgroup) the victim's memory cgroup cut to
        O(metrics_cgroup_depth) levels. An unknown label value is C(unknown).
      - The role's metrics timer runs C(ebpf-oom events --metrics-file PATH) instead, which needs
        no Ansible on the host.
    type: path
  metrics_cgroup_depth:
    description:
      - How many levels of the victim's memory cgroup path label a kill in O(metrics_file)
        (C(1) gives C(/system.slice), C(/kubepods.slice); C(0) gives C(/)). Deeper paths name pods and jobs,
        one series each. A new depth starts the counters from zero.
    type: int
    default: 1
notes:
  - Reading C(/dev/kmsg) needs root (C(CAP_SYSLOG)) unless C(kernel.dmesg_restrict=0); without it
    the module warns and reports the observer's kills only.
  - A kill is in RV(events) while the kernel log still has its report or it is among the
    observer's last 64 victims; RV(observer.kills) counts every kill since the observer was loaded.
  - Kernels before 6.9 give the observer the victim's pid only; the kernel log adds the rest.
seealso:
  - module: ebpf.oom.policy
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ebpf.oom.attributes
attributes:
  check_mode:
    details: In check mode the metrics file is not written; C(changed) says whether it would be.
  diff_mode:
    details: The metrics file's old and new text.
"""

EXAMPLES = r"""
- name: The OOM kills of the last hour
  ebpf.oom.events_info:
    since: 1h
  register: oom

- name: Which processes did protect_db kill
  ansible.builtin.debug:
    msg: "{{ oom.events | selectattr('policy', 'equalto', 'protect_db')
             | map(attribute='comm') | list }}"

- name: Kills of two policies since a given time
  ebpf.oom.events_info:
    policy: [protect_db, kill_batch]
    since: "2026-01-31T12:00:00Z"

- name: Write node_exporter textfile metrics
  ebpf.oom.events_info:
    metrics_file: /var/lib/prometheus/node-exporter/ebpf_oom.prom
"""

RETURN = r"""
events:
  description: The OOM kills, oldest first, after the O(since) and O(policy) filters. A key is
    null when no source knew it.
  returned: always
  type: list
  elements: dict
  contains:
    time:
      description: When the victim was marked, ISO 8601 UTC.
      type: str
      sample: "2026-01-31T12:03:04.512310Z"
    timestamp:
      description: The same as Unix seconds.
      type: float
      sample: 1769860984.51231
    monotonic:
      description: Seconds since boot (CLOCK_MONOTONIC), as the kernel log stamps it.
      type: float
      sample: 490.936768
    pid:
      description: The victim's pid.
      type: int
      sample: 6684
    comm:
      description: The victim's command name (at most 15 characters).
      type: str
      sample: python3
    uid:
      description: The victim's user id.
      type: int
      sample: 0
    memcg:
      description: The victim's memory cgroup, as the kernel prints cgroup paths.
      type: str
      sample: /system.slice/app.service
    memcg_id:
      description: The victim's memory cgroup id (from the observer).
      type: int
      sample: 4242
    oom_memcg:
      description: The memory cgroup that hit its limit; null for a global OOM.
      type: str
      sample: /system.slice/app.service
    constraint:
      description: C(global), C(memcg), C(cpuset) or C(mempolicy).
      type: str
      sample: memcg
    policy:
      description: The policy that chose the victim, as the hook kernel printed it
        (C(policy_name=)); C(default) is the in-kernel heuristic; null on kernels without the
        hook or when the report is gone.
      type: str
      sample: protect_db
    invoker:
      description: The command whose allocation invoked the OOM killer.
      type: str
      sample: python3
    rss_kb:
      description: The victim's resident memory (anonymous + file + shmem), KiB.
      type: int
      sample: 71912
    anon_rss_kb:
      description: Anonymous resident memory, KiB.
      type: int
      sample: 65280
    file_rss_kb:
      description: File-backed resident memory, KiB.
      type: int
      sample: 6632
    shmem_rss_kb:
      description: Shared-memory resident memory, KiB.
      type: int
      sample: 0
    total_vm_kb:
      description: The victim's virtual memory size, KiB (kernel log only).
      type: int
      sample: 75160
    pgtables_kb:
      description: The victim's page tables, KiB (kernel log only).
      type: int
      sample: 188
    oom_score_adj:
      description: The victim's oom_score_adj.
      type: int
      sample: 0
    sources:
      description: Where the event comes from, C(kmsg) and/or C(observer).
      type: list
      elements: str
      sample: [kmsg, observer]
    kmsg_seq:
      description: Sequence number of the kernel log record of the kill.
      type: int
      sample: 418
    observer_seq:
      description: The kill's number in the observer's count.
      type: int
      sample: 3
    shadow:
      description:
        - One entry per policy that judged this kill's OOM in shadow mode (empty when none did); the
          entry belongs to the first task the kernel marked in that OOM.
      type: list
      elements: dict
      contains:
        policy:
          description: The shadow policy (its name on the host).
          type: str
        would_kill:
          description: The task it would have killed at that moment (C(pid), C(comm), C(cgroup) (its
            cgroup v2 path, null once gone), C(rule) (C(rules[N]) or C(fallback)), C(tier)); null when it
            would have killed none (every candidate protected or unkillable, or an abort).
          type: dict
        would_abort:
          description: Its abort rule matched a candidate of this memory cgroup OOM (it would have killed none).
          type: bool
        agrees:
          description: The kernel killed the task it would have killed.
          type: bool
      sample: [{"policy": "batch-next", "would_kill": {"pid": 5150, "comm": "batch-job",
                "cgroup": "/batch.slice/job-7.scope", "rule": "rules[1]", "tier": 1},
                "would_abort": false, "agrees": false}]
observer:
  description: The OOM observer's state.
  returned: always
  type: dict
  contains:
    loaded:
      description: Whether the observer's maps are pinned.
      type: bool
      sample: true
    kills:
      description: Every kill since the observer was loaded; null when it is not loaded.
      type: int
      sample: 3
shadow_policies:
  description: Each loaded policy that judged OOMs in shadow mode since it was loaded (also one switched
    to enforce since), with its mode now, the OOMs it judged, the ones that ended in a kill, and of those
    the ones whose victim was not the task it would have killed. Not filtered by O(since) or O(policy).
  returned: always
  type: list
  elements: dict
  sample: [{"policy": "batch-next", "mode": "shadow", "judged": 4, "kills": 4, "disagreements": 1}]
metrics_file:
  description: The metrics file written (or that would be written in check mode).
  returned: when O(metrics_file) is set
  type: str
  sample: /var/lib/prometheus/node-exporter/ebpf_oom.prom
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ebpf.oom.plugins.module_utils import events, metrics

ARGUMENT_SPEC = dict(
    since=dict(type="str"),
    policy=dict(type="list", elements="str", default=[]),
    sources=dict(type="list", elements="str", choices=["kmsg", "observer"], default=["kmsg", "observer"]),
    metrics_file=dict(type="path"),
    metrics_cgroup_depth=dict(type="int", default=metrics.CGROUP_DEPTH),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    if p["metrics_cgroup_depth"] < 0:
        module.fail_json(msg="metrics_cgroup_depth must be 0 or more, not %d" % p["metrics_cgroup_depth"])
    try:
        found = events.collect(since=p["since"], policies=p["policy"], sources=p["sources"])
    except ValueError as e:
        module.fail_json(msg=str(e))
    for warning in found["warnings"]:
        module.warn(warning)
    result = dict(changed=False, events=found["events"], observer=found["observer"],
                  shadow_policies=found["shadow_policies"])
    if p["metrics_file"]:
        try:
            changed, before, text = metrics.update_metrics(p["metrics_file"], found, check_mode=module.check_mode,
                                                           cgroup_depth=p["metrics_cgroup_depth"])
        except OSError as e:
            module.fail_json(msg="cannot write the metrics file %s: %s" % (p["metrics_file"], e))
        result.update(changed=changed, metrics_file=p["metrics_file"])
        if module._diff:
            result["diff"] = dict(before=before or "", after=text,
                                  before_header=p["metrics_file"], after_header=p["metrics_file"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
