#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: observer
short_description: Deploy or remove the OOM observer, which counts every OOM kill of a host
description:
  - The OOM observer is the collection's small BPF program on the C(oom/mark_victim) tracepoint
    (C(bpf/observer.bpf.c)). It counts every OOM kill and keeps the last 64 victims in pinned
    maps under C(/sys/fs/bpf/ebpf_oom/observer/), on any kernel with BTF, with or without the
    OOM policy hook. M(ebpf.oom.events_info) and the metrics timer of the role
    C(ebpf.oom.bpf_oom) read it.
  - The action plugin compiles the observer on the controller (once; a content-addressed cache,
    the collection's bundled CO-RE C(vmlinux.h)) in two builds, C(tp_btf) and the C(raw_tp)
    fallback for kernels that refuse C(tp_btf), and sends both with the task; the module loads
    the first build the kernel accepts. The build that runs is tried first, so a rerun changes
    nothing.
  - Loaded like a policy, under the name C(observer) (see M(ebpf.oom.policy)); with O(persist) the
    boot restore (C(ebpf-oom-restore.service)) loads it again. It decides nothing, so it runs
    beside any policy.
version_added: "0.1.0"
author:
  - ebpf.oom maintainers (@ebpf-oom)
options:
  state:
    description:
      - C(present) loads the observer (or keeps it); C(absent) unloads it and drops its copy for
        the boot restore.
    type: str
    choices: [present, absent]
    default: present
  objects:
    description:
      - Builds of C(bpf/observer.bpf.c) already on the host, in the order to try them, instead of
        the collection's own builds.
    type: list
    elements: path
  builds:
    description:
      - The collection's builds as the action plugin sends them (C(variant), base64 C(content));
        set by the action plugin when O(objects) is not given, not by users.
    type: list
    elements: dict
  persist:
    description:
      - Keep a copy of the loaded build for the boot restore.
    type: bool
    default: true
notes:
  - Needs kernel BTF (C(/sys/kernel/btf/vmlinux)); the module fails naming it where it is missing.
  - Check mode assumes that the first build tried would load.
seealso:
  - module: ebpf.oom.events_info
  - module: ebpf.oom.verify
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ebpf.oom.attributes
attributes:
  check_mode:
    details: Nothing is loaded or unloaded; C(changed) and RV(action) say what would be.
  diff_mode:
    details: The observer's record before and after.
"""

EXAMPLES = r"""
- name: Count every OOM kill of the host
  ebpf.oom.observer:

- name: Check that it runs
  ebpf.oom.verify:
    name: observer

- name: Remove it
  ebpf.oom.observer:
    state: absent
"""

RETURN = r"""
action:
  description: C(created), C(replaced), C(reloaded), C(unchanged) or C(persisted) (see
    M(ebpf.oom.policy)); C(removed) or C(absent) for O(state=absent).
  returned: always
  type: str
  sample: unchanged
variant:
  description: The build that runs, C(tp_btf) or C(raw_tp) (from the collection's builds).
  returned: when O(state=present) and O(objects) is not given
  type: str
  sample: tp_btf
object:
  description: The object that runs, on the host (a temporary copy for the collection's builds).
  returned: when O(state=present)
  type: str
  sample: /root/.ansible/tmp/ansible-tmp-1769860984/observer-tp_btf.bpf.o
object_sha256:
  description: Its sha256, as the observer's record keeps it (compare with M(ebpf.oom.verify)).
  returned: when O(state=present)
  type: str
  sample: 20443aae968fb031ac4b240311492b83f57dce4d6917ce5223bf6229460ebc72
record:
  description: The observer's record (programs, links, pinned maps), as M(ebpf.oom.policy) keeps a policy's
    (RV(ebpf.oom.policy#module:record)), under the name C(observer).
  returned: when O(state=present)
  type: dict
  contains:
    name:
      description: Always C(observer) (its bpffs directory).
      type: str
    object_sha256:
      description: The sha256 of the build that runs (RV(object_sha256)).
      type: str
    source_sha256:
      description: The sha256 of the source the build was compiled from, embedded in the object.
      type: str
    collection_version:
      description: The version of the collection that loaded it.
      type: str
    policy_name:
      description: Null (the observer is not a policy).
      type: str
    loaded_at:
      description: When it was loaded, ISO 8601 UTC (null in check mode).
      type: str
    globals:
      description: Empty.
      type: dict
    maps:
      description: Empty (the collection writes no entry into its maps; the program fills them).
      type: dict
    programs:
      description: Its program, C(observe_victim) on the C(mark_victim) tracepoint (C({name, section, prog_type,
        attach_type, target, prog_id, tag, link_id, pin}), as in RV(ebpf.oom.policy#module:record)).
      type: list
      elements: dict
    pinned_maps:
      description: Its maps C(victims) (the last victims) and C(stats) (the kill count), C({name, type, map_id, pin}).
      type: list
      elements: dict
  sample: {"name": "observer", "object_sha256": "20443aae968fb031ac4b240311492b83f57dce4d6917ce5223bf6229460ebc72",
           "source_sha256": "a969dc773492d033cdc3644e7761fa131c2645fe86dc25186e03cf684ce03662",
           "collection_version": "0.2.0", "policy_name": null, "loaded_at": "2026-12-06T15:37:48+00:00",
           "globals": {}, "maps": {},
           "programs": [{"name": "observe_victim", "section": "tp_btf/mark_victim", "prog_type": "tracing",
                         "attach_type": "trace_raw_tp", "target": "mark_victim", "prog_id": 805,
                         "tag": "b7c2d1e09a4f3568", "link_id": 52,
                         "pin": "/sys/fs/bpf/ebpf_oom/observer/link_observe_victim"}],
           "pinned_maps": [{"name": "victims", "type": "array", "map_id": 1210,
                            "pin": "/sys/fs/bpf/ebpf_oom/observer/map_victims"},
                           {"name": "stats", "type": "array", "map_id": 1211,
                            "pin": "/sys/fs/bpf/ebpf_oom/observer/map_stats"}]}
log_tail:
  description: The verifier's last lines when no build loads.
  returned: failure
  type: str
  sample: "R1 invalid mem access 'scalar'"
"""

import base64
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ebpf.oom.plugins.module_utils import deploy
from ansible_collections.ebpf.oom.plugins.module_utils.common import BTF_VMLINUX
from ansible_collections.ebpf.oom.plugins.module_utils.errors import LoaderError
from ansible_collections.ebpf.oom.plugins.module_utils.observer import OBSERVER_VARIANTS

ARGUMENT_SPEC = dict(
    state=dict(type="str", choices=["present", "absent"], default="present"),
    objects=dict(type="list", elements="path"),
    builds=dict(type="list", elements="dict"),
    persist=dict(type="bool", default=True),
)
SPEC_KWARGS = dict(mutually_exclusive=[("objects", "builds")],
                   required_if=[("state", "present", ("objects", "builds"), True)])


def build_files(module, builds):
    """{path: variant} of the builds written to the module's temporary directory, in order."""
    known = [label for label, _defines in OBSERVER_VARIANTS]
    out = {}
    for i, build in enumerate(builds):
        if set(build) != {"variant", "content"} or build["variant"] not in known:
            module.fail_json(msg="builds[%d]: needs a variant (%s) and a content (base64), has %s"
                             % (i, ", ".join(known), ", ".join(sorted(build))))
        try:
            data = base64.b64decode(build["content"], validate=True)
        except (TypeError, ValueError) as e:
            module.fail_json(msg="builds[%d].content is not base64: %s" % (i, e))
        path = os.path.join(module.tmpdir, "observer-%s.bpf.o" % build["variant"])
        with open(path, "wb") as f:
            f.write(data)
        out[path] = build["variant"]
    return out


def present(module, p):
    if not os.path.exists(BTF_VMLINUX):
        module.fail_json(msg="the OOM observer needs kernel BTF: %s is missing (a kernel built with "
                             "CONFIG_DEBUG_INFO_BTF=y)" % BTF_VMLINUX)
    variants = build_files(module, p["builds"]) if p["builds"] else {}
    missing = [path for path in p["objects"] or () if not os.path.isfile(path)]
    if missing:
        module.fail_json(msg="objects: %s does not exist or is not a file" % ", ".join(missing))
    result = deploy.apply_observer(list(variants) or p["objects"], check_mode=module.check_mode,
                                   persist=p["persist"])
    result["object_sha256"] = result["record"]["object_sha256"]
    if result["object"] in variants:
        result["variant"] = variants[result["object"]]
    return result


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True, **SPEC_KWARGS)
    p = module.params
    try:
        if p["state"] == "absent":
            result = deploy.remove_observer(check_mode=module.check_mode)
            result["action"] = "removed" if result["changed"] else "absent"
        else:
            result = present(module, p)
    except LoaderError as e:
        module.fail_json(msg=e.message, log_tail=e.log_tail)
    diff = result.pop("diff", None)
    result.pop("map_changes", None)
    if diff is not None and module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
