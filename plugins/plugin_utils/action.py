# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the collection's action plugins share: adjust a module's arguments on the
controller, then run the module on the host.

Controller side (plugin_utils): used by plugins/action.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible_collections.ebpf.oom.plugins.module_utils.errors import PolicyError
from ansible_collections.ebpf.oom.plugins.module_utils.files import sha256_file
from ansible_collections.ebpf.oom.plugins.plugin_utils import documents
from ansible_collections.ebpf.oom.plugins.plugin_utils.bundled import compile_generic


class ModuleAction(ActionBase):
    """Runs MODULE with the task's arguments as execute() makes them; an AnsibleError
    fails the task with its message; the remote temporary directory goes afterwards."""

    MODULE = None
    # No early remote tmp: a bad input must fail before the host is contacted.
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super(ModuleAction, self).run(tmp, task_vars)
        del tmp
        try:
            result.update(self.execute(dict(self._task.args), task_vars))
        except AnsibleError as e:
            result.update(failed=True, msg=to_text(e))
        finally:
            if self._connection._shell.tmpdir:
                self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def execute(self, args, task_vars):
        """The task's result: by default the module run with ``args``."""
        return self._execute_module(module_name=self.MODULE, module_args=args, task_vars=task_vars)

    def document(self, policy):
        """A policy document given inline or as the path of a YAML or JSON file on the
        controller, validated here: (document, []) or (None, ['path: reason', ...])."""
        try:
            if isinstance(policy, dict):
                document = documents.plain(policy)
            elif isinstance(policy, str):
                document = documents.plain(self._loader.load_from_file(self._find_needle("files", policy)))
            else:
                raise PolicyError(["policy: must be a document (a mapping) or the path of a YAML or "
                                   "JSON file on the controller, not %s" % documents.type_name(policy)])
            errors = documents.validate(document)
        except PolicyError as e:
            return None, e.errors
        return (None if errors else document), errors

    def send_generic(self, args, path_key="object", sha_key="object_sha256"):
        """Compile the collection's generic program here (once, cached), copy it to the host
        and point the module's `object` at it, with its sha256 (`object_sha256`: the copy
        is the connecting user's, also when the module runs with become), unless the task
        names an object."""
        if not args.get(path_key):
            compiled = compile_generic()
            remote = self._connection._shell.join_path(self._make_tmp_path(), "generic.bpf.o")
            self._transfer_file(compiled, remote)
            self._fixup_perms2((self._connection._shell.tmpdir, remote))
            args[path_key] = remote
            args[sha_key] = sha256_file(compiled)
