#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: policy
short_description: Load, attach and pin a BPF OOM policy, or remove it
description:
  - Loads a compiled BPF object (see M(ebpf.oom.compile)), sets its C(const volatile) globals
    before load, attaches every program by its section (the C(fmod_ret/bpf_oom_evaluate_task)
    hook, the C(fentry/bpf_set_policy_name) name program, or any other section libbpf attaches,
    such as C(tp_btf/)), fills its maps and pins links and maps under
    C(/sys/fs/bpf/ebpf_oom/<name>/) with a record of what is loaded. bpffs is mounted when missing.
  - Idempotent. Nothing changes when the object's sha256, O(globals) and O(maps) equal the record
    and the links are alive; changed globals or a changed object reload the policy, changed map
    entries are written in place.
  - Replacing a policy is atomic; the new links are pinned beside the old ones and renamed over
    them. A new object that the verifier rejects leaves the old policy attached, and the failure
    message ends with the verifier log.
  - Before anything changes, refuses a kernel that lacks what the object needs (see
    O(require_hook)), naming the missing kernel symbols; O(on_unsupported=skip) skips such hosts.
  - O(state=absent) detaches and unpins everything of the policy; removing an unknown policy is
    not a change.
version_added: "0.1.0"
author:
  - ebpf.oom maintainers (@ebpf-oom)
options:
  name:
    description:
      - The policy's name, also its bpffs directory; 1 to 15 bytes of letters, digits, C(_) and C(-).
      - Required unless O(policy) is given (then it defaults to the document's name).
    type: str
  object:
    description:
      - Path of the compiled BPF object on the host. With O(state=present), O(object) or O(policy)
        is required.
      - With O(policy), the generic program to run; by default the action plugin compiles the
        collection's C(bpf/generic.bpf.c) on the controller (once, cached) and sends it.
    type: path
  policy:
    description:
      - A declarative policy document (see C(schemas/README.md)), inline or the path of a YAML or
        JSON file on the controller, as an alternative to writing BPF C.
      - "Validated against C(schemas/policy.schema.json) on the controller before any host is
        contacted; errors name the field and the reason (C(rules[2].action: 'abort' is only allowed
        with scope memcg))."
      - Rendered on each host into the generic program's map entries and its policy-name global. A
        cgroup rule names a path, and matches whatever cgroup lives there, made before or after the
        policy was applied, or made again (a restarted service, a kubelet that started later); the
        program follows cgroups as the kernel makes and removes them. RV(cgroups) shows what each
        path matches now.
      - A change of rules, scope or fallback loads the program again with the new rules in maps of
        their own (RV(action=reloaded)); the old program decides every OOM until the new one is
        complete and hands over in one write, so no OOM is judged by half of each document.
        RV(map_changes) lists the entries that changed. A C policy's changed O(maps) are written in
        place (RV(action=maps_updated)).
      - Only one policy per host judges OOM victims (has a program on C(bpf_oom_evaluate_task));
        applying a second one under another name fails, naming the first.
      - In check mode with diff, a document's diff also says which process a global OOM would kill
        now and under the document (M(ebpf.oom.explain)), e.g. C(a global OOM now kills 4242
        postgres (kernel), would kill 5150 batch-job (rule 1)); when no prediction can be made
        there, a warning says why, and the diff has no such line.
      - O(name) defaults to the document's C(name). Mutually exclusive with O(globals) and O(maps).
    type: raw
  mode:
    description:
      - C(enforce) (the default of a document) makes the policy decide the OOMs of its scope.
      - C(shadow) makes it judge every candidate of every such OOM and decide none (the kernel's own
        heuristic, or the one policy that enforces on the host, decides), and the policy records the task
        it would have killed. M(ebpf.oom.events_info) pairs each kill with that verdict (RV(ebpf.oom.events_info#module:events[].shadow))
        and counts the disagreements. A shadow policy does not count as the host's one deciding policy.
      - The hook backend only (C(evaluate_task)); C(score_adj) refuses it, as the victim its values
        would have produced is settled inside the kernel's scan, which that backend does not see (made
        up after the kill, it would be a guess).
      - A switch between the two modes is one write to the loaded programs (RV(action=maps_updated));
        nothing is loaded again, and the next OOM is judged in the new mode. The record's document says
        which mode is live, and M(ebpf.oom.verify) checks the programs run in it.
      - Over the document's C(mode) when given. Only with O(policy).
    type: str
    choices: [enforce, shadow]
  strict:
    description:
      - Fail, rather than warn, when the document's lint finds a problem (a global-scope policy that
        can leave a global OOM without a victim; the project's hook kernel then ignores the policy for
        that OOM and lets its own heuristic choose, a kernel without that safety net panics). Only
        with O(policy).
    type: bool
    default: false
  state:
    description:
      - C(present) loads (or keeps) the policy, C(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  globals:
    description:
      - Values for the object's C(const volatile) globals (for example C(target_pid)), set before
        load. Integers are packed to the variable's size, strings are NUL-padded.
    type: dict
    default: {}
  maps:
    description:
      - Map contents, a dict of map name to a dict of C(key) to C(value). The named maps hold
        exactly these entries afterwards (hash maps lose other keys, array maps zero other slots).
      - Keys and values are integers (YAML integers or decimal strings; packed little-endian to
        the map's key or value size) or hex strings of raw bytes in memory order, either
        C(0x)-prefixed (C(0x0a000000)) or byte pairs separated by spaces or colons (C(0a 00 00 00)).
    type: dict
    default: {}
  require_hook:
    description:
      - Before anything changes, the kernel's BTF must have every symbol the object needs, namely the
        attach target of each program (C(bpf_oom_evaluate_task) for the
        C(fmod_ret/bpf_oom_evaluate_task) hook, C(bpf_set_policy_name) for the name program,
        the C(mark_victim) tracepoint for a C(tp_btf/mark_victim) observer) and each kfunc
        it calls (C(set_oom_policy_name)). So with C(auto) the hook is required exactly when the
        object has a hook program, and an observer without one loads on any kernel with BTF.
      - C(always) also refuses an object without an C(fmod_ret/bpf_oom_evaluate_task) program.
    type: str
    choices: [auto, always]
    default: auto
  backend:
    description:
      - How a O(policy) document is enforced.
      - C(evaluate_task) (a kernel with the hook C(bpf_oom_evaluate_task)) asks the policy about
        every candidate of every OOM; the victim is exactly the one the document names.
      - C(score_adj) (stock kernels with BTF) writes C(/proc/PID/oom_score_adj) of every process a
        rule matches (C(protect) -1000, C(select) +1000, C(prefer) tiers spread over the range,
        the lowest tier highest; a process no rule matches keeps its value), for the processes
        there now and, through the agent C(ebpf-oom agent), for the ones that start later; the
        kernel's own heuristic then chooses. Values written over are put back when the policy is
        removed. C(abort) and a C(protect) fallback cannot be expressed and are refused; C(by=rss)
        is accepted with a warning. The README says exactly when its choice differs from the hook's.
      - C(auto) takes the best backend the host has (RV(ebpf.oom.kernel_info#module:backend)).
      - Only with O(policy).
    type: str
    choices: [auto, evaluate_task, score_adj]
    default: auto
  on_unsupported:
    description:
      - What to do on a kernel that lacks a symbol the object needs (see O(require_hook)), or that
        has no backend for a O(policy) document (with O(backend=auto), also one whose best backend
        cannot express the document). C(fail) fails the task, C(skip) skips it (mixed fleets).
    type: str
    choices: [fail, skip]
    default: fail
  persist:
    description:
      - Also store the object and its record under C(/var/lib/ebpf-oom/policies/<name>/), so the
        boot service restores the policy after a reboot.
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ebpf.oom.attributes
  - ebpf.oom.sent_object
"""

EXAMPLES = r"""
- name: Kill the given pid first on OOM
  ebpf.oom.policy:
    name: select_pid
    object: /var/lib/ebpf-oom/select_pid.bpf.o
    globals:
      target_pid: "{{ victim_pid }}"

- name: A policy with a protected-cgroups map, on the hosts that can run it
  ebpf.oom.policy:
    name: protect_db
    object: /var/lib/ebpf-oom/protect_db.bpf.o
    require_hook: always
    on_unsupported: skip
    maps:
      protected:
        1234: 1
        "0x2a000000": "01 00 00 00"

- name: A declarative policy - protect postgres, kill /batch first, then /web
  ebpf.oom.policy:
    policy:
      name: pg-batch-web
      rules:
        - match: {cgroup: /system.slice/system-postgresql.slice, comm: postgres}
          action: protect
        - match: {cgroup: /batch}
          action: prefer
          tier: 1
        - match: {cgroup: /web}
          action: prefer
          tier: 2
    strict: true

- name: The same document from a file on the controller
  ebpf.oom.policy:
    policy: files/pg-batch-web.yml

- name: Remove it
  ebpf.oom.policy:
    name: protect_db
    state: absent
"""

RETURN = r"""
action:
  description: What happened, one of C(created), C(replaced), C(reloaded), C(maps_updated),
    C(unchanged), C(removed), C(absent) (nothing to remove), C(skipped), or C(pending) (check mode,
    the object is not built yet).
  returned: always
  type: str
  sample: created
record:
  description: The policy's record after the change, as pinned in C(/sys/fs/bpf/ebpf_oom/<name>/record) and
    kept for the boot restore (in check mode, before the load, without ids and with C(loaded_at) null).
  returned: when O(state=present) and not skipped
  type: dict
  contains:
    name:
      description: The policy's name (its bpffs directory).
      type: str
    object_sha256:
      description: The sha256 of the object loaded.
      type: str
    source_sha256:
      description: The sha256 of the C source the object was compiled from (embedded by M(ebpf.oom.compile)),
        empty when the object does not carry it.
      type: str
    collection_version:
      description: The version of the collection that loaded it.
      type: str
    policy_name:
      description: The policy name embedded in the object (what the OOM report's C(policy_name=) says),
        null when it has none.
      type: str
    loaded_at:
      description: When the programs were loaded, ISO 8601 UTC.
      type: str
    globals:
      description: The C(const volatile) globals set before load (O(globals), or those a document renders to).
      type: dict
    maps:
      description: The managed map entries, per map a list of C([key_hex, value_hex]) pairs.
      type: dict
    programs:
      description: Each program, as attached.
      type: list
      elements: dict
      contains:
        name:
          description: The program's name (its C function).
          type: str
        section:
          description: Its ELF section, which says how it attaches.
          type: str
        prog_type:
          description: The kernel's program type (C(tracing) for C(fmod_ret), C(fentry) and C(tp_btf)).
          type: str
        attach_type:
          description: The link's attach type (C(modify_return), C(trace_fentry), C(trace_raw_tp), ...).
          type: str
        target:
          description: The kernel function or tracepoint it is attached to.
          type: str
        prog_id:
          description: The kernel's id of the program.
          type: int
        tag:
          description: The program's tag (a hash of its instructions), as C(bpftool prog show) prints it.
          type: str
        link_id:
          description: The kernel's id of its link.
          type: int
        pin:
          description: Where the link is pinned.
          type: str
    pinned_maps:
      description: The object's own maps (not C(.rodata) and the like), C({name, type, map_id, pin}).
      type: list
      elements: dict
    document:
      description: With O(policy), the document, which the boot restore renders again.
      type: dict
    backend:
      description: With O(policy), the backend that enforces it.
      type: str
    token:
      description: For the generic program, the number of this load, which the hand-over to a new
        load checks.
      type: int
  sample: {"name": "pid_first", "object_sha256": "c63f94cec56b62281578ad9359fbfc44f1e40d3a43299ed98c2bc4f6e1fc16e9",
           "source_sha256": "a2e4d9732b168f67f6ea5663476cb7a7328b1d07a4028c3aca7c792bac396106",
           "collection_version": "0.2.0", "policy_name": "pid_first", "loaded_at": "2026-12-06T15:37:50+00:00",
           "globals": {"target_pid": 4242}, "maps": {},
           "programs": [{"name": "select_target", "section": "fmod_ret/bpf_oom_evaluate_task", "prog_type": "tracing",
                         "attach_type": "modify_return", "target": "bpf_oom_evaluate_task", "prog_id": 812,
                         "tag": "4f1d5c8e2a7b9c03", "link_id": 57,
                         "pin": "/sys/fs/bpf/ebpf_oom/pid_first/link_select_target"}],
           "pinned_maps": []}
map_changes:
  description: Map entries written, C({map, key, before, after}) as hex strings.
  returned: when O(state=present) and not skipped
  type: list
  elements: dict
  contains:
    map:
      description: The map's name.
      type: str
    key:
      description: The key, as hex bytes in memory order.
      type: str
    before:
      description: The value before, as hex bytes; null when the key was not there.
      type: str
    after:
      description: The value written, as hex bytes; null when the key was removed.
      type: str
  sample: [{"map": "protected", "key": "d2040000", "before": null, "after": "01000000"}]
missing:
  description: Kernel symbols the object needs and the kernel lacks.
  returned: when the kernel is unsupported
  type: list
  elements: str
  sample: ["bpf_oom_evaluate_task"]
backend:
  description: With O(policy), the backend that enforces it (see O(backend)).
  returned: when O(policy) is given and not skipped
  type: str
  sample: score_adj
mode:
  description: With O(policy), the mode the policy now runs in (see O(mode)).
  returned: when O(policy) is given and not skipped
  type: str
  sample: shadow
score_adj:
  description: With the C(score_adj) backend, its bands (each class's C(oom_score_adj), the first
    to die first), the smallest gap between two of them, how many values this task wrote,
    what the kernel refused, and whether the agent runs.
  returned: when the score_adj backend applied the policy
  type: dict
  contains:
    bands:
      description: Each class of processes with the C(oom_score_adj) it gets, the first to die first
        (C(select), C(tier N), C(no rule matches) or the fallback's tier at 0; C(protect) is -1000 and not listed).
      type: list
      elements: dict
    gap:
      description: The smallest difference between two adjacent bands (null with one band).
      type: int
    written:
      description: How many processes this task gave their band's value (none in check mode).
      type: int
    errors:
      description: The values the kernel refused to write, and a ledger that had to be set aside.
      type: list
      elements: str
    agent:
      description: Whether the agent (C(ebpf-oom agent)) runs, which gives the processes that start later their value.
      type: bool
    credentials:
      description: Whether the program that follows uid changes (C(fexit/commit_creds)) is attached; without it a
        process whose uid changes gets its value at the agent's next sweep.
      type: bool
  sample: {"bands": [{"class": "tier 1", "oom_score_adj": 1000}, {"class": "no rule matches",
    "oom_score_adj": 0}], "gap": 1000, "written": 2, "errors": [], "agent": true, "credentials": true}
restored:
  description: With O(state=absent) of a C(score_adj) policy, how many values written over were put back.
  returned: when a score_adj policy is removed
  type: int
  sample: 2
cgroups:
  description: With O(policy), each cgroup path the document names and the id of the cgroup that
    lives there now (an empty list while there is none; the rule matches it once it is made).
  returned: when O(policy) is given
  type: dict
  sample: {"/batch.slice": [4523], "/kubepods.slice": []}
lint:
  description: With O(policy), the lint findings (also shown as warnings).
  returned: when O(policy) is given
  type: list
  elements: str
  sample: []
log_tail:
  description: Tail of the libbpf and verifier log when loading failed.
  returned: failure
  type: str
  sample: "R1 invalid mem access 'scalar'"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ebpf.oom.plugins.module_utils import backends, converge, explain, language
from ansible_collections.ebpf.oom.plugins.module_utils.errors import (ExplainError, LoaderError, RenderError,
                                                                      UnsupportedKernel)
from ansible_collections.ebpf.oom.plugins.module_utils.files import sent_copy

ARGUMENT_SPEC = dict(
    name=dict(type="str"),
    object=dict(type="path"),
    object_sha256=dict(type="str"),
    policy=dict(type="raw"),
    strict=dict(type="bool", default=False),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    globals=dict(type="dict", default={}),
    maps=dict(type="dict", default={}),
    require_hook=dict(type="str", choices=["auto", "always"], default="auto"),
    backend=dict(type="str", choices=list(backends.CHOICES), default=backends.AUTO),
    on_unsupported=dict(type="str", choices=["fail", "skip"], default="fail"),
    persist=dict(type="bool", default=True),
    mode=dict(type="str", choices=list(language.MODES)),
)
SPEC_KWARGS = dict(required_if=[("state", "present", ("object", "policy"), True)],
                   required_one_of=[("name", "policy")])


def who(victim):
    if victim is None:
        return "nobody"
    rule = "rule %d" % victim["rule"]["index"] if victim.get("rule") else victim["action"]
    return "%d %s (%s)" % (victim["pid"], victim["comm"], rule)


def global_oom_victims(p):
    """What a global OOM would kill now, and under the document: a diff line."""
    after = explain.explain(p["object"], document=p["policy"], top=1,
                            backend=backends.choose(p["backend"]).name)
    try:
        before = explain.explain(p["object"], name=p["name"], top=1)["victim"]
    except ExplainError:  # not loaded yet (or a C policy): the kernel's own choice
        before = after["kernel_victim"] and dict(after["kernel_victim"], rule=None, action="kernel")
    return "a global OOM now kills %s, would kill %s\n" % (who(before), who(after["victim"]))


def present(module, p):
    """Load or keep the policy, checked first by converge.prepare; the result dict."""
    loaded = converge.prepare(p, module.check_mode)
    return loaded if isinstance(loaded, dict) else loaded()


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True, **SPEC_KWARGS)
    p = module.params
    if p["policy"] is not None and not isinstance(p["policy"], dict):
        module.fail_json(msg="policy must be a document here; the action plugin reads policy files on the controller")
    if not p["name"]:
        p["name"] = p["policy"].get("name")
    try:
        with sent_copy(p["object"], p["object_sha256"], LoaderError) as p["object"]:
            if p["state"] == "absent":
                result = backends.remove(p["name"], check_mode=module.check_mode)
                result["action"] = "removed" if result["changed"] else "absent"
            else:
                result = present(module, p)
            diff = result.pop("diff", None)
            if diff is not None and module._diff:
                if module.check_mode and p["policy"] is not None and p["state"] == "present":
                    try:
                        diff["prepared"] = global_oom_victims(p)
                    except (ExplainError, RenderError) as e:  # a warning, never text of the diff
                        module.warn("no prediction of the next global OOM: %s" % e)
                result["diff"] = diff
    except ValueError as e:
        module.fail_json(msg=str(e))
    except LoaderError as e:
        missing = {"missing": e.missing} if isinstance(e, UnsupportedKernel) else {}
        module.fail_json(msg=str(e), log_tail=e.log_tail, **missing)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
