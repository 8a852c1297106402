#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: compile
short_description: Compile a BPF C program into a CO-RE object, once per distinct input
description:
  - Compiles a C source with clang (C(clang-19), C(clang-16) or C(clang), in that order, unless
    O(clang) names one) as C(-target bpf -g -O2 -D__TARGET_ARCH_x86), a CO-RE object that one
    build serves every kernel with BTF.
  - Embeds the source's sha256, the collection version and, with O(policy_name), the policy name
    in the object as C(bpf_metadata_ebpf_oom_*) read-only data, which C(bpftool prog show),
    M(ebpf.oom.verify) and the loader read back from the loaded program. With O(policy_name) the
    macro C(EBPF_OOM_POLICY_NAME) is also defined as that name (a C string).
  - The source is read once and clang compiles those very bytes (from its standard input, never
    the file again), so the embedded sha256 describes the code that was compiled.
  - Only trusted files are compiled. The source and every header clang reads must be owned by root
    (or by the user running the module, on a controller) and writable by no one else (no group or
    world write bit).
  - Output is content-addressed in the cache (C($EBPF_OOM_CACHE/objects), default
    C(/var/cache/ebpf-oom)). An object is stored under its own sha256 and hashed again whenever it
    is used. The key is the sha256 of the preprocessed source, the flags and the clang version, so
    the same input never compiles twice. The object is copied to O(dest) only when it differs.
  - Works on a managed host or on the controller (delegated to localhost, with C(run_once)).
    Compiler errors come back in the failure message; the compiler's output is in RV(stderr).
version_added: "0.1.0"
author:
  - ebpf.oom maintainers (@ebpf-oom)
options:
  src:
    description:
      - Path of the C source (for example C(policy.bpf.c)) on the host that runs the module.
      - Refused when missing, not a regular file, unreadable, owned by another user than root (or
        the user running the module) or group- or world-writable.
      - Mutually exclusive with O(content).
    type: path
  content:
    description:
      - C source text to compile instead of a file. Diagnostics name it C(<content>).
      - Mutually exclusive with O(src).
    type: str
  dest:
    description:
      - Where to put the object. Written only when its content differs.
      - Without O(dest) the object stays in the cache and RV(object) is its path.
    type: path
  defines:
    description:
      - Preprocessor definitions, a dict of C(NAME) to its value; a null value defines C(NAME) without a value.
    type: dict
    default: {}
  include_dirs:
    description:
      - Extra include directories, searched before the C(vmlinux.h) directory and the
        collection's bundled headers (C(ebpf_oom.h)).
    type: list
    elements: path
    default: []
  policy_name:
    description:
      - The policy name to embed (C(bpf_metadata_ebpf_oom_policy)); at most 15 bytes of
        letters, digits, C(_) and C(-).
    type: str
  vmlinux:
    description:
      - Which C(vmlinux.h) is on the include path.
      - C(auto) generates it from the host's C(/sys/kernel/btf/vmlinux) with bpftool (cached per
        BTF hash) and falls back to the bundled header without BTF or bpftool; when the task is
        delegated to localhost, C(auto) means C(bundled).
      - C(bundled) is the collection's minimal CO-RE header (C(bpf/include/vmlinux.h)).
      - Anything else is the path of a C(vmlinux.h) on the host that runs the module.
    type: str
    default: auto
  clang:
    description:
      - The clang binary (a path or a name on C(PATH)); by default the first of C(clang-19),
        C(clang-16), C(clang).
    type: str
notes:
  - Needs clang and libbpf's headers (C(bpf/bpf_helpers.h), Debian package C(libbpf-dev)) where
    it runs, and bpftool for O(vmlinux=auto) on a host with BTF.
  - In check mode nothing is written; the result says whether O(dest) would change.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ebpf.oom.attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
"""

EXAMPLES = r"""
- name: Compile a policy on every host against its own BTF
  ebpf.oom.compile:
    src: /etc/ebpf-oom/protect_db.bpf.c
    dest: /var/lib/ebpf-oom/protect_db.bpf.o
    policy_name: protect_db

- name: Compile once on the controller with the bundled vmlinux.h
  ebpf.oom.compile:
    src: "{{ playbook_dir }}/files/protect_db.bpf.c"
    dest: "{{ playbook_dir }}/build/protect_db.bpf.o"
    policy_name: protect_db
    defines:
      MAX_VICTIMS: 4
  delegate_to: localhost
  run_once: true

- name: Compile inline source
  ebpf.oom.compile:
    content: "{{ lookup('ansible.builtin.file', 'example.bpf.c') }}"
    dest: /root/example.bpf.o
"""

RETURN = r"""
object:
  description: Path of the object (O(dest), or its cache path without O(dest)).
  returned: success
  type: str
  sample: /var/lib/ebpf-oom/protect_db.bpf.o
object_sha256:
  description: sha256 of the object.
  returned: success
  type: str
  sample: c0af8b60a5095e342f6716ed59b863f8b91d9cc02086140ceaad6d8ad2e56a6b
source_sha256:
  description: sha256 of the source, as embedded in C(bpf_metadata_ebpf_oom_src_sha256).
  returned: success
  type: str
  sample: 31b3c71e6bbc84e6e851c8c67d625059c033eb2ba67bc720751b3c3d68718072
key:
  description: The cache key (sha256 of preprocessed source, flags and clang version). The object
    itself is stored in the cache under RV(object_sha256).
  returned: success
  type: str
  sample: 99a7389179db8dfef6e438d67b6d7550bdb4280b73a49750582fe63fb865e8db
cached:
  description: Whether the object came from the cache rather than a compiler run.
  returned: success
  type: bool
  sample: true
clang:
  description: The clang binary used.
  returned: success
  type: str
  sample: /usr/bin/clang-16
clang_version:
  description: Its version.
  returned: success
  type: str
  sample: 16.0.6
vmlinux:
  description: The C(vmlinux.h) that was on the include path.
  returned: success
  type: str
  sample: /var/cache/ebpf-oom/vmlinux/309e2b4c.../vmlinux.h
warnings_text:
  description: The compiler's warnings, if any (tail).
  returned: success
  type: str
  sample: ""
stderr:
  description: Tail of the compiler's (or bpftool's) output when it failed.
  returned: failure
  type: str
  sample: "policy.bpf.c:12:5: error: use of undeclared identifier 'x'"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ebpf.oom.plugins.module_utils import compiler
from ansible_collections.ebpf.oom.plugins.module_utils.errors import CompileError

ARGUMENT_SPEC = dict(
    src=dict(type="path"),
    content=dict(type="str"),
    dest=dict(type="path"),
    defines=dict(type="dict", default={}),
    include_dirs=dict(type="list", elements="path", default=[]),
    policy_name=dict(type="str"),
    vmlinux=dict(type="str", default="auto"),
    clang=dict(type="str"),
    # Internal, not documented: the action plugin sends the collection's bpf/include
    # headers ({file name: text}) with the task, so that they reach the host.
    _bundled_headers=dict(type="dict"),
)
SPEC_KWARGS = dict(mutually_exclusive=[("src", "content")], required_one_of=[("src", "content")])


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True, **SPEC_KWARGS)
    p = module.params
    try:
        result = compiler.compile_object(
            src=p["src"], content=p["content"], dest=p["dest"], defines=p["defines"],
            include_dirs=p["include_dirs"], policy_name=p["policy_name"], vmlinux=p["vmlinux"],
            clang=p["clang"], bundled_headers=p["_bundled_headers"], check_mode=module.check_mode)
    except CompileError as e:
        msg = e.message
        if e.log_tail:
            msg += ":\n" + e.log_tail
        module.fail_json(msg=msg, stderr=e.log_tail)
    diff = result.pop("diff")
    result["warnings_text"] = result.pop("warnings")
    if p["dest"] is not None and module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
