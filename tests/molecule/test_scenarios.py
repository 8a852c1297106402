"""Every Molecule scenario passes `molecule test` (create, converge, idempotence,
verify with real OOMs, destroy); molecule/run prints the wall time of each.

Marked vm. The directory sorts before tests/vm, so the scenarios run before the
session-scoped guests of the vm tests boot and sit idle on the shared cores.
Molecule's output is streamed to the terminal as it comes (each line behind the
seconds since its step began), so a run that stalls shows where.
"""

import os
import subprocess

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.timeout(3600)]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENARIOS = ("default", "reboot", "stock_kernel")


def test_every_scenario_directory_is_tested():
    found = sorted(d for d in os.listdir(os.path.join(REPO, "molecule"))
                   if os.path.isfile(os.path.join(REPO, "molecule", d, "molecule.yml")))
    assert found == sorted(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario_passes(scenario, request):
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    tail = []
    proc = subprocess.Popen([os.path.join(REPO, "molecule", "run"), scenario], cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    try:
        terminal.write_line("")
        for line in proc.stdout:
            terminal.write_line("molecule %s %s" % (scenario, line.rstrip("\n")))
            tail = (tail + [line])[-200:]
    finally:
        if proc.poll() is None:  # the test's time bound ran out: stop it, guests too
            proc.terminate()
        proc.wait()
    assert proc.returncode == 0, "".join(tail)
