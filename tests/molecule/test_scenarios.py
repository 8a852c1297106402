"""Every Molecule scenario passes `molecule test` (create, converge, idempotence,
verify with real OOMs, destroy); molecule/run prints the wall time of each.

Marked vm. Molecule's output is streamed as it comes (each line behind the seconds
since its step began), so a run that stalls shows where: into the run's live log
(tests/run prints it), or to the terminal when pytest runs without one.
"""

import os
import subprocess

import pytest

from support import live_log

pytestmark = [pytest.mark.vm, pytest.mark.timeout(3600)]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENARIOS = ("default", "stock_kernel")


def test_every_scenario_directory_is_tested():
    found = sorted(d for d in os.listdir(os.path.join(REPO, "molecule"))
                   if os.path.isfile(os.path.join(REPO, "molecule", d, "molecule.yml")))
    assert found == sorted(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario_passes(scenario, request):
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    show = live_log if os.environ.get("EBPF_OOM_LIVE_LOG") else terminal.write_line
    tail = []
    proc = subprocess.Popen([os.path.join(REPO, "molecule", "run"), scenario], cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    try:
        show("")
        for line in proc.stdout:
            show("molecule %s %s" % (scenario, line.rstrip("\n")))
            tail = (tail + [line])[-200:]
    finally:
        if proc.poll() is None:  # the test's time bound ran out: stop it, guests too
            proc.terminate()
        proc.wait()
    assert proc.returncode == 0, "".join(tail)
