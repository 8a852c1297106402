#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: kernel_info
short_description: Report what a host's kernel offers for BPF OOM policies
description:
  - Reads the kernel's BTF, C(/proc) and C(/sys) and reports which backends can enforce an OOM
    policy document on the host (RV(backends), the best first), which tools are there, and which
    policies are loaded now.
  - The hook backend C(evaluate_task) needs C(bpf_oom_evaluate_task) and C(bpf_set_policy_name) in
    the kernel's BTF (and the kfunc C(set_oom_policy_name) to name the policy in OOM reports);
    the victim is exactly the one the document names.
  - The C(score_adj) backend needs BTF with the C(sched_process_exec), C(task_rename),
    C(cgroup_attach_task), C(sched_process_fork), C(cgroup_mkdir) and C(cgroup_rmdir) tracepoints,
    task iterators and BPF ring buffers (stock kernels since about 5.8). It steers the kernel's own
    heuristic through C(oom_score_adj).
  - C(bpf_oom_ops), the upstream-track struct_ops successor, is reported only.
  - Never changes anything (it does not mount bpffs).
version_added: "0.1.0"
author:
  - ebpf.oom maintainers (@ebpf-oom)
options:
  policies:
    description:
      - Whether to list the loaded policies with their records (RV(policies)).
    type: bool
    default: true
  status:
    description:
      - Also return RV(status), this host's row of the fleet's table (C(playbooks/status.yml)); it reads the
        kernel log and the observer for the last kill.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ebpf.oom.attributes.info
"""

EXAMPLES = r"""
- name: What can this host do
  ebpf.oom.kernel_info:
  register: kinfo

- name: Only hosts with the hook get a policy
  ebpf.oom.policy:
    name: protect_db
    object: /var/lib/ebpf-oom/protect_db.bpf.o
  when: kinfo.backend == 'evaluate_task'

- name: Hosts that can run a policy document at all get it
  ebpf.oom.policy:
    policy: files/pg-batch-web.yml
  when: kinfo.backends | length > 0
"""

RETURN = r"""
kernel_release:
  description: C(uname -r).
  returned: always
  type: str
  sample: 6.12.57-ebpf-oom-hook
btf:
  description: Whether C(/sys/kernel/btf/vmlinux) exists.
  returned: always
  type: bool
  sample: true
hook:
  description: Presence of each hook symbol in the kernel's BTF.
  returned: always
  type: dict
  contains:
    bpf_oom_evaluate_task:
      description: The hook a policy's C(fmod_ret) program attaches to.
      type: bool
    bpf_set_policy_name:
      description: The function a policy's C(fentry) program attaches to, to name itself in the OOM report.
      type: bool
    set_oom_policy_name:
      description: The kfunc that sets the name.
      type: bool
  sample: {"bpf_oom_evaluate_task": true, "bpf_set_policy_name": true, "set_oom_policy_name": true}
policy_name_supported:
  description: Whether a policy can name itself in OOM reports (C(bpf_set_policy_name) and C(set_oom_policy_name)).
  returned: always
  type: bool
  sample: true
struct_ops:
  description: Presence of the upstream-track C(bpf_oom_ops) struct_ops (report only).
  returned: always
  type: dict
  contains:
    bpf_oom_ops:
      description: Whether the kernel's BTF has C(struct bpf_oom_ops).
      type: bool
  sample: {"bpf_oom_ops": false}
bpffs_mounted:
  description: Whether bpffs is mounted at C(/sys/fs/bpf).
  returned: always
  type: bool
  sample: true
jit:
  description: C(/proc/sys/net/core/bpf_jit_enable) (0 off, 1 on, 2 debug), null when absent.
  returned: always
  type: int
  sample: 1
jit_enabled:
  description: Whether the BPF JIT is on, null when unknown.
  returned: always
  type: bool
  sample: true
lockdown:
  description: The kernel lockdown mode (none, integrity, confidentiality), null without the lockdown LSM.
  returned: always
  type: str
  sample: none
secure_boot:
  description:
    - Whether UEFI Secure Boot is on (the firmware's C(SecureBoot) variable); false on a UEFI host without it,
      null on a BIOS host (or when the variable cannot be read). The role C(ebpf.oom.hook_kernel) refuses an unsigned kernel where it is true.
  returned: always
  type: bool
  sample: null
clang:
  description: The clang the compile module would use (path, version), null when none.
  returned: always
  type: dict
  contains:
    path:
      description: Its path.
      type: str
    version:
      description: Its version (from C(clang --version)).
      type: str
  sample: {"path": "/usr/bin/clang-16", "version": "16.0.6"}
libbpf_version:
  description: Version of the system's libbpf (C(libbpf.so.1)), null when it cannot be loaded.
  returned: always
  type: str
  sample: "1.1"
backends:
  description: The backends that can enforce a policy document on this host, the best first
    (C(evaluate_task), C(score_adj)); empty when none can.
  returned: always
  type: list
  elements: str
  sample: ["score_adj"]
backend:
  description: The best of RV(backends) (what O(ebpf.oom.policy#module:backend=auto) takes), else C(none).
  returned: always
  type: str
  sample: score_adj
unusable:
  description: Each backend this host cannot use, with what it lacks (kernel BTF symbols, map types).
  returned: always
  type: dict
  sample: {"evaluate_task": ["bpf_oom_evaluate_task", "bpf_set_policy_name"]}
reasons:
  description: Why RV(backend) is C(none); empty otherwise.
  returned: always
  type: list
  elements: str
  sample: ["bpf_oom_evaluate_task is not in the kernel's BTF: the kernel lacks the OOM policy hook"]
switched_off:
  description: The off marker's text while the host is switched off (C(ebpf-oom off), or the role's
    C(bpf_oom_enabled=false)), else null.
  returned: always
  type: str
  sample: switched off at 2026-12-06T16:10:00Z
agent:
  description: Whether the C(score_adj) agent runs.
  returned: always
  type: bool
  sample: false
collection_version:
  description: The version of the collection that ran this module.
  returned: always
  type: str
  sample: 0.2.0
status:
  description: This host's row of the fleet's table, one text per column (C(kernel), C(backend), C(policies),
    C(observer), C(agent), C(off), C(version), C(last kill)); a policy as name (backend, object sha256, collection
    version, loaded at).
  returned: when O(status=true)
  type: dict
  sample: {"kernel": "6.12.48", "backend": "evaluate_task", "policies": "database (evaluate_task, 4cb54fa470b9,
    0.2.0, 2026-12-06T15:37:50+00:00)", "observer": "yes", "agent": "no", "off": "no", "version": "0.2.0",
    "last kill": "-"}
policies:
  description: The records of the loaded policies and of the observer (name, object_sha256, source_sha256,
    collection_version, policy_name, loaded_at, globals, maps, programs, pinned_maps), as
    RV(ebpf.oom.policy#module:record) describes them; the record of a policy document also has the C(document)
    and the C(backend) that enforces it (C(evaluate_task) or C(score_adj)). A bpffs directory without a
    readable record (an apply killed before it pinned one) is listed as C({name, problem}).
  returned: when O(policies=true)
  type: list
  elements: dict
  contains:
    name:
      description: The policy's name (its bpffs directory); C(observer) for the OOM observer.
      type: str
    object_sha256:
      description: The sha256 of the object loaded.
      type: str
    source_sha256:
      description: The sha256 of its C source, embedded in the object (empty when not).
      type: str
    collection_version:
      description: The version of the collection that loaded it.
      type: str
    policy_name:
      description: The name the OOM report gives the policy (C(policy_name=)); null for the observer.
      type: str
    loaded_at:
      description: When it was loaded, ISO 8601 UTC.
      type: str
    globals:
      description: The C(const volatile) globals set before load.
      type: dict
    maps:
      description: The managed map entries, per map a list of C([key_hex, value_hex]) pairs.
      type: dict
    programs:
      description: Each program with its link, C({name, section, prog_type, attach_type, target, prog_id, tag,
        link_id, pin}).
      type: list
      elements: dict
    pinned_maps:
      description: The pinned maps, C({name, type, map_id, pin}).
      type: list
      elements: dict
    document:
      description: The policy document (absent for C policies and the observer).
      type: dict
    backend:
      description: The backend that enforces a document, C(evaluate_task) or C(score_adj) (absent for C policies
        and the observer).
      type: str
    problem:
      description: Only for a directory without a readable record, what is wrong and what to do.
      type: str
  sample: [{"name": "pid_first", "object_sha256": "c63f94cec56b62281578ad9359fbfc44f1e40d3a43299ed98c2bc4f6e1fc16e9",
            "source_sha256": "a2e4d9732b168f67f6ea5663476cb7a7328b1d07a4028c3aca7c792bac396106",
            "collection_version": "0.2.0", "policy_name": "pid_first", "loaded_at": "2026-12-06T15:37:50+00:00",
            "globals": {"target_pid": 4242}, "maps": {},
            "programs": [{"name": "select_target", "section": "fmod_ret/bpf_oom_evaluate_task",
                          "prog_type": "tracing", "attach_type": "modify_return", "target": "bpf_oom_evaluate_task",
                          "prog_id": 812, "tag": "4f1d5c8e2a7b9c03", "link_id": 57,
                          "pin": "/sys/fs/bpf/ebpf_oom/pid_first/link_select_target"}],
            "pinned_maps": []}]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ebpf.oom.plugins.module_utils import probe


def main():
    module = AnsibleModule(argument_spec=dict(policies=dict(type="bool", default=True),
                                              status=dict(type="bool", default=False)),
                           supports_check_mode=True)
    info = probe.kernel_info(with_policies=module.params["policies"] or module.params["status"])
    if module.params["status"]:
        info["status"] = probe.status(info)
    module.exit_json(changed=False, **info)


if __name__ == "__main__":
    main()
