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
document on the host (cgroup paths become that host's cgroup ids), takes its
name as the policy's when `name:` is not given, and loads or updates the
policy. Without `policy:` the module runs unchanged.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.common.text.converters import to_text
from ansible_collections.ebpf.oom.plugins.module_utils import renderer
from ansible_collections.ebpf.oom.plugins.module_utils.errors import PolicyError
from ansible_collections.ebpf.oom.plugins.module_utils.names import name_problem
from ansible_collections.ebpf.oom.plugins.plugin_utils import documents
from ansible_collections.ebpf.oom.plugins.plugin_utils.action import ModuleAction
from ansible_collections.ebpf.oom.plugins.plugin_utils.bundled import compile_generic


class ActionModule(ModuleAction):

    MODULE = "ebpf.oom.policy"

    def execute(self, args, task_vars):
        problem = name_problem(to_text(args["name"])) if args.get("name") is not None else None
        if problem:
            return dict(failed=True, msg=problem)
        if args.get("policy") is None or args.get("state", "present") == "absent":
            return super(ActionModule, self).execute(args, task_vars)
        return self._declarative(args, task_vars)

    def _document(self, policy):
        if isinstance(policy, dict):
            return documents.plain(policy)
        if not isinstance(policy, str):
            raise PolicyError(["policy: must be a document (a mapping) or the path of a YAML or "
                               "JSON file on the controller, not %s" % documents.type_name(policy)])
        return documents.plain(self._loader.load_from_file(self._find_needle("files", policy)))

    def _declarative(self, args, task_vars):
        """Validate and lint the document here, then run the module with the generic object."""
        try:
            document = self._document(args["policy"])
            errors = documents.validate(document)
        except PolicyError as e:
            errors = e.errors
        if errors:
            return dict(failed=True, errors=errors, msg="policy document is invalid:\n" + "\n".join(errors))
        findings = renderer.lint(document)
        if findings and args.get("strict"):
            return dict(failed=True, lint=findings,
                        msg="policy %s fails lint (strict: true):\n%s" % (document["name"], "\n".join(findings)))
        args["policy"] = document
        if not args.get("object"):
            remote = self._connection._shell.join_path(self._make_tmp_path(), "generic.bpf.o")
            self._transfer_file(compile_generic(), remote)
            self._fixup_perms2((self._connection._shell.tmpdir, remote))
            args["object"] = remote
        result = super(ActionModule, self).execute(args, task_vars)
        result["lint"] = findings
        if findings:
            result["warnings"] = findings + list(result.get("warnings") or [])
        return result
