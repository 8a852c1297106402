#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: host
short_description: Converge a host's whole ebpf.oom state in one run - engine, units, observer, policies
description:
  - The state module of the role C(ebpf.oom.bpf_oom), in the shape of C(linux-system-roles)'
    C(kernel_settings) or C(network_connections) - the role hands it the host's whole desired state,
    and one module run compares it with the host and changes only what differs.
  - "The parts, in this order (RV(parts) has one list per part of what each changed):
    C(kernel) - the backend that enforces the documents (as O(ebpf.oom.policy#module:backend)); a host that cannot
    run them fails here, before anything changes, or with O(on_unsupported=skip) gets only what the observer needs;
    every entry of O(policies) is checked and planned here too, so that a bad one changes nothing;
    C(engine) - the engine's archive and the host command C(ebpf-oom) in O(engine_dir);
    C(units) - the bpffs mount unit (only where nothing mounts bpffs), the boot restore, the metrics timer, the
    C(score_adj) agent's unit, reloaded, enabled and started as they should be;
    C(observer) - the OOM observer (C(ebpf.oom.observer)), loaded and verified, or removed;
    C(policies) - each entry applied as C(ebpf.oom.policy) applies it, then verified as C(ebpf.oom.verify) does;
    C(agent) - the C(score_adj) agent runs while a C(score_adj) policy is loaded (restarted when its unit or the
    engine changed);
    C(purge) - the collection's policies that are loaded or recorded but not listed are removed (with O(purge));
    then the agent is stopped, disabled and its unit removed where no C(score_adj) policy is left (stopping it puts
    back the values it wrote)."
  - A part that fails fails the task with a message that starts with its name; the parts before it are done
    (RV(parts)), and a policy whose update fails keeps the version that was attached.
  - The action plugin validates and lints each policy document on the controller (as for C(ebpf.oom.policy)),
    compiles the collection's generic program and the observer there, once, and sends them with the engine's
    archive and the host command in the task's arguments.
version_added: "0.2.0"
author:
  - ebpf.oom maintainers (@ebpf-oom)
options:
  state:
    description:
      - C(present) converges the host to the other options. C(absent) removes everything the collection put on the
        host - every policy (the C(score_adj) agent's values put back), the observer, the units (stopped and disabled
        first), the engine, the state and caches, the metrics file - and ignores the other options; a bpffs mount
        unit stays (stopping it would unmount what else is pinned).
    type: str
    choices: [present, absent]
    default: present
  enabled:
    description:
      - C(false) switches the host off as C(ebpf-oom off) does - every policy detached (a C(score_adj) policy's
        values put back), its copy kept, the boot restore holding it back - and applies none; C(true) switches a host
        this module switched off on again. A host switched off by hand (C(ebpf-oom off)) stays off whatever this says,
        with a warning, until C(ebpf-oom on).
    type: bool
    default: true
  policies:
    description:
      - The OOM policies this host runs, as the role's C(bpf_oom_policies) lists them; a present entry has exactly
        one of O(policies[].policy) and O(policies[].object).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - The policy's name (1 to 15 bytes of C([A-Za-z0-9_-])), its bpffs directory.
        type: str
        required: true
      state:
        description:
          - C(absent) removes the policy.
        type: str
        choices: [present, absent]
        default: present
      policy:
        description:
          - A policy document (or the path of a YAML or JSON file on the controller), whose C(name) is the entry's.
        type: dict
      object:
        description:
          - A compiled BPF object on the host (a C policy).
        type: path
      policy_name:
        description:
          - The policy name the object's programs report in the OOM report, which verify expects.
        type: str
      globals:
        description:
          - The object's C(const volatile) globals, set before load (as O(ebpf.oom.policy#module:globals)).
        type: dict
        default: {}
      maps:
        description:
          - The object's initial map contents (as O(ebpf.oom.policy#module:maps)).
        type: dict
        default: {}
      strict:
        description:
          - Fail the task on the document's lint findings (warnings otherwise).
        type: bool
        default: false
      mode:
        description:
          - C(enforce) or C(shadow), over the document's C(mode) (as O(ebpf.oom.policy#module:mode)).
        type: str
        choices: [enforce, shadow]
  purge:
    description:
      - Remove the collection's policies that are loaded or recorded for the boot restore but not listed (the OOM
        observer is never purged).
    type: bool
    default: true
  backend:
    description:
      - Which backend enforces the policy documents, as O(ebpf.oom.policy#module:backend); C(auto) takes the best the
        host has.
    type: str
    choices: [auto, evaluate_task, score_adj]
    default: auto
  on_unsupported:
    description:
      - On a host without the backend asked for, C(fail) fails the task before anything changes; C(skip) leaves the
        policies alone and installs only what the OOM observer needs (where the kernel has BTF and O(observer) is
        true).
    type: str
    choices: [fail, skip]
    default: fail
  observer:
    description:
      - Run the OOM observer, which counts every OOM kill for C(ebpf.oom.events_info) and the metrics; false removes
        it.
    type: bool
    default: true
  restore_at_boot:
    description:
      - Enable C(ebpf-oom-restore.service), which re-attaches every recorded policy early at boot.
    type: bool
    default: true
  engine_dir:
    description:
      - Where the engine's archive and the host command C(ebpf-oom) go.
    type: path
    default: /usr/lib/ebpf-oom
  metrics:
    description:
      - Write OOM kill metrics for node_exporter's textfile collector with a systemd timer
        (C(ebpf-oom-metrics.timer)); false removes the timer.
    type: bool
    default: false
  metrics_file:
    description:
      - The metrics file; its directory is created.
    type: path
    default: /var/lib/prometheus/node-exporter/ebpf_oom.prom
  metrics_interval:
    description:
      - How often the timer writes it (a systemd time span).
    type: str
    default: 1min
  metrics_cgroup_depth:
    description:
      - The kill counters' cgroup label is the victim's memory cgroup cut to this many levels.
    type: int
    default: 1
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ebpf.oom.attributes
attributes:
  check_mode:
    details: Nothing changes; RV(parts) and C(changed) say what would. A C(src) object an earlier task would build
      is reported as pending.
  diff_mode:
    details: Before and after of each file written (unit texts in full, the engine by sha256) and of each policy's
      record.
seealso:
  - module: ebpf.oom.policy
  - module: ebpf.oom.observer
  - module: ebpf.oom.verify
"""

EXAMPLES = r"""
- name: Converge the host (what the role ebpf.oom.bpf_oom does)
  ebpf.oom.host:
    policies:
      - name: database
        policy:
          name: database
          rules:
            - match: {cgroup: /system.slice/system-postgresql.slice, comm: postgres}
              action: prefer
              tier: 1000
          fallback: {action: prefer, tier: 1}
    metrics: true
  register: converged

- name: Only the observer, on hosts that cannot run policies
  ebpf.oom.host:
    policies: []
    on_unsupported: skip
"""

RETURN = r"""
backend:
  description: The backend that enforces the documents on this host (C(none) where it cannot run them).
  returned: always
  type: str
  sample: evaluate_task
supported:
  description: Whether the host runs the listed policies.
  returned: always
  type: bool
  sample: true
reasons:
  description: Why RV(backend) is C(none); empty otherwise.
  returned: always
  type: list
  elements: str
  sample: []
kernel_release:
  description: The running kernel.
  returned: always
  type: str
  sample: 6.12.48-ebpf-oom
observer:
  description: The OOM observer after this run.
  returned: always
  type: dict
  contains:
    running:
      description: Whether it runs.
      type: bool
    action:
      description: What its deployment did, as M(ebpf.oom.observer) reports it (C(created), C(unchanged) and so on).
      type: str
    variant:
      description: The build that runs, C(tp_btf) or the C(raw_tp) fallback.
      type: str
    object_sha256:
      description: The sha256 of its object.
      type: str
  sample: {"running": true, "action": "unchanged", "variant": "tp_btf", "object_sha256": "6f1c..."}
purged:
  description: The policies removed because they are not listed (with O(state=absent), every one).
  returned: always
  type: list
  elements: str
  sample: ["old_policy"]
verified:
  description: The policies (and the observer) verified after the apply (none in check mode).
  returned: always
  type: list
  elements: str
  sample: ["observer", "database"]
agent:
  description: Whether the C(score_adj) agent runs after this run.
  returned: always
  type: bool
  sample: false
parts:
  description: For each part, what it changed (or would change, in check mode); empty lists when nothing.
  returned: always
  type: dict
  contains:
    kernel:
      description: Nothing, the part only checks.
      type: list
      elements: str
    engine:
      description: The files written (or, with O(state=absent), removed).
      type: list
      elements: str
    units:
      description: The unit files written or removed, and the systemctl commands run.
      type: list
      elements: str
    observer:
      description: The observer loaded, replaced or removed.
      type: list
      elements: str
    policies:
      description: Each policy created, reloaded, updated or removed.
      type: list
      elements: str
    agent:
      description: The agent enabled, started, restarted, or taken off the host.
      type: list
      elements: str
    purge:
      description: The policies removed because they are not listed.
      type: list
      elements: str
  sample: {"kernel": [], "engine": [], "units": [], "observer": [], "policies": ["database: loaded"],
           "agent": [], "purge": []}
changes:
  description: The lines of RV(parts), each prefixed by its part, in the order they happened.
  returned: always
  type: list
  elements: str
  sample: ["purge: batch: removed", "agent: systemctl disable ebpf-oom-agent.service"]
policies:
  description: Per listed policy (the keys are the policies' names), what its apply did, C(action) (as
    RV(ebpf.oom.policy#module:action), C(removed) or C(absent) for an entry with C(state=absent)), the
    C(backend) of a document, and C(msg) why an entry was skipped (O(on_unsupported=skip)).
  returned: always
  type: dict
  sample: {"database": {"action": "unchanged", "backend": "evaluate_task"},
           "pid_first": {"action": "skipped", "msg": "kernel 6.1.0-28-amd64 lacks bpf_oom_evaluate_task
             in its BTF: it is not a kernel with the OOM policy hook"}}
lint:
  description: Lint findings per policy document, a list of findings under each name, only for the documents that have any
    (warnings unless the entry has C(strict)).
  returned: always
  type: dict
  sample: {"keep-all": ["fallback: protect: every task gets BPF_EVAL_NEXT in a global OOM in which no task matches
    a prefer or select rule: ..."]}
switched_off:
  description: The off marker's text while the host is switched off (by O(enabled=false) or by hand), else null.
  returned: always
  type: str
  sample: switched off at 2026-12-06T16:10:00Z by ebpf.oom.host (enabled false)
notices:
  description: What the run found worth a look without failing (also the task's warnings).
  returned: always
  type: list
  elements: str
  sample: []
part:
  description: The part that failed.
  returned: failure
  type: str
  sample: policies
"""

import base64
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ebpf.oom.plugins.module_utils import backends, language
from ansible_collections.ebpf.oom.plugins.module_utils.converge import Host, HostError
from ansible_collections.ebpf.oom.plugins.module_utils.errors import LoaderError
from ansible_collections.ebpf.oom.plugins.module_utils.files import sent_copy
from ansible_collections.ebpf.oom.plugins.module_utils.names import name_problem

ENTRY_SPEC = dict(
    name=dict(type="str", required=True),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    policy=dict(type="dict"),
    object=dict(type="path"),
    policy_name=dict(type="str"),
    globals=dict(type="dict", default={}),
    maps=dict(type="dict", default={}),
    strict=dict(type="bool", default=False),
    mode=dict(type="str", choices=list(language.MODES)),
)

ARGUMENT_SPEC = dict(
    state=dict(type="str", choices=["present", "absent"], default="present"),
    policies=dict(type="list", elements="dict", default=[], options=ENTRY_SPEC,
                  mutually_exclusive=[("policy", "object")]),
    enabled=dict(type="bool", default=True),
    purge=dict(type="bool", default=True),
    backend=dict(type="str", choices=list(backends.CHOICES), default=backends.AUTO),
    on_unsupported=dict(type="str", choices=["fail", "skip"], default="fail"),
    observer=dict(type="bool", default=True),
    restore_at_boot=dict(type="bool", default=True),
    engine_dir=dict(type="path", default="/usr/lib/ebpf-oom"),
    metrics=dict(type="bool", default=False),
    metrics_file=dict(type="path", default="/var/lib/prometheus/node-exporter/ebpf_oom.prom"),
    metrics_interval=dict(type="str", default="1min"),
    metrics_cgroup_depth=dict(type="int", default=1),
    # Internal, set by the action plugin: the generic program copied to the host and its
    # sha256, the engine's archive and the host command (base64), the observer's builds.
    _object=dict(type="path"),
    _object_sha256=dict(type="str"),
    _archive=dict(type="str"),
    _command=dict(type="str"),
    _observer_builds=dict(type="list", elements="dict"),
)


def entry_problems(entries):
    """What is wrong with the entries as given, before the host is looked at."""
    problems = []
    names = [e["name"] for e in entries]
    for e in entries:
        problem = name_problem(e["name"])
        if problem:
            problems.append("policies: %s" % problem)
        elif names.count(e["name"]) > 1:
            problems.append("policies: %s is listed %d times" % (e["name"], names.count(e["name"])))
        elif e["state"] == "present" and (e["policy"] is None) == (e["object"] is None):
            problems.append("policies: %s needs exactly one of policy and object" % e["name"])
    return sorted(set(problems))


def unpacked(module, p):
    """The parameters as converge.Host takes them: the archive and the command as bytes,
    the observer's builds as files."""
    p = dict(p)
    try:
        p["archive"] = base64.b64decode(p["_archive"] or "", validate=True)
        p["command"] = base64.b64decode(p["_command"] or "", validate=True)
        builds = []
        for build in p["_observer_builds"] or ():
            path = os.path.join(module.tmpdir, "observer-%s.bpf.o" % build["variant"])
            with open(path, "wb") as f:
                f.write(base64.b64decode(build["content"], validate=True))
            builds.append(path)
    except (KeyError, TypeError, ValueError) as e:
        module.fail_json(msg="the action plugin's arguments are damaged (%s): run the module through it" % e)
    if p["state"] == "present" and not (p["archive"] and p["command"]):
        module.fail_json(msg="the engine's archive and the host command come from the action plugin: "
                             "run the module through it (ebpf.oom.host)")
    p["observer_objects"] = builds
    return p


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    problems = entry_problems(p["policies"])
    if problems:
        module.fail_json(msg="; ".join(problems))
    want = unpacked(module, p)
    run = Host(want, check_mode=module.check_mode)
    try:
        with sent_copy(p["_object"], p["_object_sha256"], LoaderError) as want["object"]:
            result = run.converge()
    except HostError as e:
        module.fail_json(msg=str(e), part=e.part, log_tail=e.log_tail, **run.report(changed_only=True))
    except LoaderError as e:
        module.fail_json(msg=str(e), log_tail=e.log_tail, **run.report(changed_only=True))
    for notice in result["notices"]:
        module.warn(notice)
    diff = result.pop("diff")
    if module._diff and result["changed"]:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
