# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for ebpf.oom.engine: the engine's archive is built here (plugin_utils/engine.py)
and goes to the module as `archive`, base64 in its arguments: one round trip to the host,
however many files the engine has."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64

from ansible_collections.ebpf.oom.plugins.plugin_utils import engine
from ansible_collections.ebpf.oom.plugins.plugin_utils.action import ModuleAction


class ActionModule(ModuleAction):

    MODULE = "ebpf.oom.engine"

    def execute(self, args, task_vars):
        if args.get("state", "present") == "present":
            args["archive"] = base64.b64encode(engine.archive()).decode("ascii")
        return super(ActionModule, self).execute(args, task_vars)
