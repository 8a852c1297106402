# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for ebpf.oom.explain: a `policy:` document is validated on the controller (as
for ebpf.oom.policy), and the collection's generic program, whose task iterator does
the explaining, is compiled here once and sent to the host."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.ebpf.oom.plugins.plugin_utils.action import ModuleAction


class ActionModule(ModuleAction):

    MODULE = "ebpf.oom.explain"

    def execute(self, args, task_vars):
        if args.get("policy") is not None:
            document, errors = self.document(args["policy"])
            if errors:
                return dict(failed=True, errors=errors,
                            msg="policy document is invalid:\n" + "\n".join(errors))
            args["policy"] = document
        self.send_generic(args)
        return super(ActionModule, self).execute(args, task_vars)
