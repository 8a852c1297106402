"""Every Molecule scenario passes `molecule test` (create, converge, idempotence,
verify with real OOMs, destroy) on hook-kernel guests; molecule/run prints the
wall time of each.

Marked vm. The directory sorts before tests/vm, so the scenarios run before the
session-scoped guests of the vm tests boot and sit idle on the shared cores."""

import os
import subprocess

import pytest

pytestmark = pytest.mark.vm

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENARIOS = ("default", "reboot", "stock_kernel")


def test_every_scenario_directory_is_tested():
    found = sorted(d for d in os.listdir(os.path.join(REPO, "molecule"))
                   if os.path.isfile(os.path.join(REPO, "molecule", d, "molecule.yml")))
    assert found == sorted(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario_passes(scenario):
    proc = subprocess.run([os.path.join(REPO, "molecule", "run"), scenario], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-8000:]
