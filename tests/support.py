"""Helpers shared by tests of several directories (imported as `support`: tests/ is on
sys.path through tests/conftest.py; a `conftest` import would find whichever directory's
conftest.py pytest loaded last)."""

import os
import sys


def live_log(line):
    """A line for the run's live log (tests/run prints it as it is written), when there is
    one: what a long test does, visible while it runs, whichever worker runs it."""
    path = os.environ.get("EBPF_OOM_LIVE_LOG")
    if path:
        with open(path, "a") as handle:
            handle.write(line.rstrip("\n") + "\n")


def venv_tool(name):
    """An Ansible command beside this interpreter (the test venv), else the one on PATH (as
    where the host tests run with a system python3)."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.access(beside, os.X_OK) else name


def argument_spec(module):
    """The argument_spec ebpf.oom.<module>'s main() hands to AnsibleModule (stopped right there)."""
    import importlib
    from unittest import mock

    from ansible.module_utils import basic

    class Stop(Exception):
        pass

    def capture(_self, argument_spec, **_kwargs):
        raise Stop(argument_spec)

    main = importlib.import_module("ansible_collections.ebpf.oom.plugins.modules." + module).main
    with mock.patch.object(basic.AnsibleModule, "__init__", capture):
        try:
            main()
        except Stop as stop:
            return stop.args[0]
    raise AssertionError("ebpf.oom.%s's main() never made its AnsibleModule" % module)
