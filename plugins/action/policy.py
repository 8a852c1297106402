# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for ebpf.oom.policy: declarative documents are checked on the controller.

With `policy:` (a document, or the path of a YAML/JSON file on the
controller), the document is validated against schemas/policy.schema.json
and linted BEFORE any host is contacted; a bad document fails the task with
one line per problem, `path: reason` (`rules[2].action: 'abort' is only
allowed with scope memcg`). Lint findings are warnings, or failures with
`strict: true`.  A `name:` that is no policy name fails here too.

Then the collection's generic program (bpf/generic.bpf.c) is compiled here,
once (content-addressed cache), copied to the host, and the module runs with
`object:` pointing at it and the document inline; the module renders the
document on the host (a cgroup rule follows its path there), takes its
name as the policy's when `name:` is not given, and loads or updates the
policy. Without `policy:` the module runs unchanged.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.common.text.converters import to_text
from ansible_collections.ebpf.oom.plugins.module_utils import language
from ansible_collections.ebpf.oom.plugins.module_utils.names import name_problem
from ansible_collections.ebpf.oom.plugins.plugin_utils.action import ModuleAction


class ActionModule(ModuleAction):

    MODULE = "ebpf.oom.policy"

    def execute(self, args, task_vars):
        problem = name_problem(to_text(args["name"])) if args.get("name") is not None else None
        if problem:
            return dict(failed=True, msg=problem)
        if args.get("policy") is None or args.get("state", "present") == "absent":
            return super(ActionModule, self).execute(args, task_vars)
        return self._declarative(args, task_vars)

    def _declarative(self, args, task_vars):
        """Validate and lint the document here, then run the module with the generic object."""
        document, errors = self.document(args["policy"])
        if errors:
            return dict(failed=True, errors=errors, msg="policy document is invalid:\n" + "\n".join(errors))
        findings = language.lint(document)
        if findings and args.get("strict"):
            return dict(failed=True, lint=findings,
                        msg="policy %s fails lint (strict: true):\n%s" % (document["name"], "\n".join(findings)))
        args["policy"] = document
        self.send_generic(args)
        result = super(ActionModule, self).execute(args, task_vars)
        result["lint"] = findings
        if findings:
            result["warnings"] = findings + list(result.get("warnings") or [])
        return result
