"""The collection as users get it: ansible-galaxy build, install into a temp path, and
ansible-doc for every module from that installed copy (not from this checkout)."""

import configparser
import json
import os
import subprocess
import sys
import tarfile
import time

import pytest
import yaml

from conftest import REPO

BIN = os.path.dirname(sys.executable)
MODULES = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "plugins", "modules"))
                 if f.endswith(".py") and not f.startswith("_"))


def run(argv, env=None):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(tarball, collections path holding the installed ebpf.oom)."""
    base = tmp_path_factory.mktemp("galaxy")
    run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", REPO, "--output-path", str(base)])
    with open(os.path.join(REPO, "galaxy.yml")) as f:
        version = yaml.safe_load(f)["version"]
    tarball = base / ("ebpf-oom-%s.tar.gz" % version)
    assert tarball.exists(), os.listdir(str(base))
    collections = base / "collections"
    # Only the temp path: the checkout itself is on ANSIBLE_COLLECTIONS_PATH for the other tests.
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections))
    run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", str(tarball), "-p", str(collections)],
        env=env)
    return tarball, collections


def test_collection_builds_with_the_files_the_modules_need(installed):
    tarball, _collections = installed
    with tarfile.open(str(tarball)) as tar:
        names = set(tar.getnames())
    for module in MODULES:
        assert "plugins/modules/%s.py" % module in names
    assert "plugins/action/compile.py" in names
    assert "bpf/include/vmlinux.h" in names  # sent by the compile action to the hosts
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/output")]


def test_installed_collection_reports_its_version(installed):
    _tarball, collections = installed
    with open(os.path.join(str(collections), "ansible_collections", "ebpf", "oom", "MANIFEST.json")) as f:
        manifest = json.load(f)
    with open(os.path.join(REPO, "galaxy.yml")) as f:
        assert manifest["collection_info"]["version"] == yaml.safe_load(f)["version"]


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_works_for_every_installed_module(installed, module):
    _tarball, collections = installed
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections))
    doc = json.loads(run([os.path.join(BIN, "ansible-doc"), "--json", "ebpf.oom.%s" % module], env=env))
    entry = doc["ebpf.oom.%s" % module]
    assert entry["doc"]["collection"] == "ebpf.oom"
    assert entry["doc"]["filename"].startswith(str(collections))
    assert entry["doc"]["short_description"]
    assert entry["examples"] and entry["return"] is not None


def sanity(home, *args, **env):
    """tests/sanity/run with HOME at `home`, as on a machine that never ran ansible-test."""
    env = dict(os.environ, HOME=str(home), PATH=BIN + os.pathsep + os.environ.get("PATH", ""),
               PYTHON=sys.executable, **env)
    return subprocess.run([os.path.join(REPO, "tests", "sanity", "run")] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, env=env, check=False)


def test_ansible_test_sanity_is_clean(tmp_path):
    """ansible-test sanity (pep8, pylint, validate-modules, shebangs, ...) on the whole
    collection; tests/sanity/ignore-2.19.txt lists each justified exception. From an empty
    ~/.ansible: ansible-test builds every venv afresh, with the machine's pip settings."""
    start = time.monotonic()
    proc = sanity(tmp_path)
    print("ansible-test sanity from an empty ~/.ansible: %.0f s" % (time.monotonic() - start))
    errors = [line for line in proc.stdout.splitlines() if line.startswith("ERROR")]
    assert proc.returncode == 0, "\n".join(errors) or proc.stdout[-4000:]
    # Each venv ansible-test made carries the PIP_* settings of this environment.
    skip = ("PIP_CONFIG_FILE", "PIP_BREAK_SYSTEM_PACKAGES", "PIP_REQUIRE_VIRTUALENV")
    wanted = {k[4:].lower().replace("_", "-"): v for k, v in os.environ.items()
              if k.startswith("PIP_") and k not in skip and v}
    confs = list((tmp_path / ".ansible" / "test" / "venv").glob("*/*/*/pip.conf"))
    assert confs, "ansible-test made no venv"
    for conf in confs:
        parser = configparser.RawConfigParser()
        parser.read(str(conf))
        got = dict(parser.items("global")) if parser.has_section("global") else {}
        assert got == wanted, conf


def test_sanity_venvs_take_pip_settings_from_the_environment(tmp_path):
    """The negative control of the above: a CA bundle that does not exist, given only
    through PIP_CERT, is what pip in ansible-test's venvs uses (so it fails), whatever the
    machine's pip configuration files say."""
    bogus = str(tmp_path / "no-such-ca.pem")
    proc = sanity(tmp_path / "home", "--test", "yamllint", PIP_CERT=bogus)
    assert proc.returncode != 0, proc.stdout[-4000:]
    assert bogus in proc.stdout, proc.stdout[-4000:]
