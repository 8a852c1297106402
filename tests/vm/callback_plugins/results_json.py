# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helper: every task's result per host, as one JSON document on stdout at the end
(tests/vm/vmharness.py's play() reads it). ansible-core has no JSON stdout callback of
its own (ansible.posix has one); this is the few lines the tests need."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = """
name: results_json
type: stdout
short_description: task results as one JSON document
description: Every task's result per host, printed as one JSON document when the run ends.
"""

import json

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "results_json"

    def __init__(self):
        super(CallbackModule, self).__init__()
        self.tasks = []

    def _record(self, result, **status):
        data = dict(result._result, **status)
        self.tasks.append({"task": result._task.get_name(), "host": result._host.get_name(),
                           "action": result._task.action, "result": data})

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True, ignored=ignore_errors)

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True, failed=True)

    def v2_playbook_on_stats(self, stats):
        self._display.display(json.dumps({"tasks": self.tasks}, default=str))
