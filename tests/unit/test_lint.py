"""The ecosystem's own linters on the repository: ansible-lint's production profile
(.ansible-lint names each skipped rule and why) and antsibull-changelog."""

import os
import subprocess
import sys

import pytest

from conftest import COLLECTIONS, REPO

BIN = os.path.dirname(sys.executable)


def tool(argv, **kwargs):
    return subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=False, **kwargs)


@pytest.fixture(scope="module")
def lint_failures():
    """ansible-lint --profile production over the whole checkout: one line per failure.
    Offline, with the checkout itself as ebpf.oom on the collections path (as the suite
    sets it), so that it writes no cache of its own into the checkout."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS)
    proc = tool([os.path.join(BIN, "ansible-lint"), "--offline", "--profile", "production", "-f", "pep8",
                 "--nocolor"], env=env)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    failures = [line for line in lines if not line.endswith("(warning)")]
    assert proc.returncode in (0, 2), proc.stderr[-4000:]  # 2: failures found; else the tool itself failed
    assert (proc.returncode == 2) == bool(failures), proc.stdout + proc.stderr[-4000:]
    return failures


@pytest.mark.parametrize("area", ["collection", "molecule"])
def test_ansible_lint_production_reports_no_failure(lint_failures, area):
    """No failure anywhere; the Molecule scenarios are reported on their own."""
    found = [line for line in lint_failures if line.startswith("molecule/") == (area == "molecule")]
    assert found == [], "\n".join(found)


def test_antsibull_changelog_lint_is_clean():
    """The fragments waiting for the next release and the released changelog.yaml."""
    changelog = os.path.join(BIN, "antsibull-changelog")
    for argv in ([changelog, "lint"],
                 [changelog, "lint-changelog-yaml", "--strict", os.path.join("changelogs", "changelog.yaml")]):
        proc = tool(argv)
        assert (proc.returncode, proc.stdout + proc.stderr) == (0, ""), argv
