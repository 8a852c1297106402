# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for ebpf.oom.host: everything the host's state needs from the controller goes
with the one task.

Each entry of `policies` is checked here before any host is contacted: its name, and a
`policy:` document (inline, or the path of a YAML/JSON file on the controller) validated
against schemas/policy.schema.json and linted (lint findings are warnings, failures with
the entry's `strict: true`).  Then the module gets, in its arguments, the engine's
archive and the host command, the observer's builds (unless `observer: false`), and the
generic program copied to the host once for every document.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64

from ansible.module_utils.common.text.converters import to_text
from ansible_collections.ebpf.oom.plugins.module_utils import language
from ansible_collections.ebpf.oom.plugins.module_utils.names import name_problem
from ansible_collections.ebpf.oom.plugins.plugin_utils import engine
from ansible_collections.ebpf.oom.plugins.plugin_utils.action import ModuleAction
from ansible_collections.ebpf.oom.plugins.plugin_utils.bundled import HOST_COMMAND, observer_builds


def b64(data):
    return base64.b64encode(data).decode("ascii")


class ActionModule(ModuleAction):

    MODULE = "ebpf.oom.host"

    def execute(self, args, task_vars):
        if args.get("state", "present") == "absent":  # everything goes: nothing to check or send
            return super(ActionModule, self).execute(args, task_vars)
        entries = args.get("policies") or []
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            return dict(failed=True, msg="policies: must be a list of entries (mappings)")
        findings = {}
        checked = []
        for i, entry in enumerate(entries):
            name = entry.get("name")
            problem = name_problem(to_text(name)) if name is not None else "needs a name"
            if problem:
                return dict(failed=True, msg="policies[%d]: %s" % (i, problem))
            if entry.get("policy") is not None and entry.get("state", "present") == "present":
                document, errors = self.document(entry["policy"])
                if errors:
                    return dict(failed=True, errors=errors,
                                msg="policies: %s: policy document is invalid:\n%s" % (name, "\n".join(errors)))
                if document["name"] != name:
                    return dict(failed=True, msg="policies: %s: the document's name is %s; an entry's document "
                                                 "has the entry's name" % (name, document["name"]))
                lint = language.lint(document)
                if lint and entry.get("strict"):
                    return dict(failed=True, lint={name: lint},
                                msg="policies: %s fails lint (strict: true):\n%s" % (name, "\n".join(lint)))
                if lint:
                    findings[name] = lint
                entry = dict(entry, policy=document)
            checked.append(entry)
        args["policies"] = checked
        if any(e.get("policy") is not None for e in checked):
            self.send_generic(args, "_object", "_object_sha256")
        args["_archive"] = b64(engine.archive())
        with open(HOST_COMMAND, "rb") as f:
            args["_command"] = b64(f.read())
        if args.get("observer", True):
            args["_observer_builds"] = observer_builds()
        result = super(ActionModule, self).execute(args, task_vars)
        result["lint"] = findings
        warnings = ["%s: %s" % (name, line) for name, lines in sorted(findings.items()) for line in lines]
        if warnings:
            result["warnings"] = warnings + list(result.get("warnings") or [])
        return result
