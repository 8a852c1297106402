"""The collection as users get it: ansible-galaxy build, install into a temp path, and
ansible-doc for every module and role from that installed copy (not from this checkout)."""

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
from support import argument_spec

BIN = os.path.dirname(sys.executable)
MODULES = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "plugins", "modules"))
                 if f.endswith(".py") and not f.startswith("_"))
ROLES = sorted(os.listdir(os.path.join(REPO, "roles")))


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
    for shipped in ("meta/execution-environment.yml", "requirements.txt", "bindep.txt",
                    "changelogs/changelog.yaml", "CHANGELOG.rst"):
        assert shipped in names
    unshipped = ("tests/output/", "benchmarks/", "bpf/bench/", ".hypothesis/", ".ansible/")
    assert not [n for n in names if "__pycache__" in n or n.endswith(".o") or (n + "/").startswith(unshipped)]


# What users of the installed collection read or run (the kernel recipe and its description
# are what the hook_kernel role and docs/hook-kernel.md build a kernel from), and what only the project's tests,
# benchmarks and CI use, from a checkout.
SHIPPED_DIRS = ("roles", "plugins", "bpf", "schemas", "LICENSES", "monitoring", "docs", "playbooks", "meta")
SHIPPED_FILES = ("COPYING", "LICENSES/GPL-3.0-or-later.txt", "LICENSES/GPL-2.0-only.txt",
                 "bpf/generic.bpf.c", "bpf/observer.bpf.c", "bpf/examples/select_target.bpf.c",
                 "molecule/kernel/oom-hook.patch", "molecule/kernel/config.fragment",
                 "molecule/kernel/README.md", "molecule/kernel/build", "molecule/kernel/guest.config")
SHIPPED_UNDER_MOLECULE = ("molecule", "molecule/kernel") + SHIPPED_FILES[-5:]
UNSHIPPED_DIRS = ("molecule", "tests", "benchmarks", "bpf/bench", "bpf/testing", ".ci", ".hypothesis",
                  ".pytest_cache", ".ansible")


def test_tarball_holds_what_users_need_and_not_the_test_suite(installed):
    """build_ignore in galaxy.yml: the collection's content, licences and the kernel recipe
    (what roles/hook_kernel copies to the build host) are in the tarball; Molecule, the VM and host tests, the benchmarks, CI and caches are not."""
    tarball, _collections = installed
    with tarfile.open(str(tarball)) as tar:
        names = set(n.rstrip("/") for n in tar.getnames())
    for top in SHIPPED_DIRS:
        assert [n for n in names if n.startswith(top + "/")], "%s/ is not in the tarball" % top
    for shipped in SHIPPED_FILES:
        assert shipped in names, shipped
    assert "tests/vm" not in names and not [n for n in names if n.startswith("tests/")]
    unshipped = [n for n in names if any(n == d or n.startswith(d + "/") for d in UNSHIPPED_DIRS)
                 and n not in SHIPPED_UNDER_MOLECULE]
    assert unshipped == []
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n.split("/")]


def test_galaxy_yml_declares_both_licences_with_their_texts(installed):
    """The Python/Ansible content is GPL-3.0-or-later, the BPF C GPL-2.0-only: both SPDX ids
    in galaxy.yml (no license_file beside them), each text in LICENSES/, and an SPDX header
    on every file under bpf/ naming GPL-2.0-only."""
    tarball, _collections = installed
    with tarfile.open(str(tarball)) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    info = manifest["collection_info"]
    assert info["license"] == ["GPL-3.0-or-later", "GPL-2.0-only"]
    assert info["license_file"] is None
    for spdx in info["license"]:
        assert os.path.isfile(os.path.join(REPO, "LICENSES", spdx + ".txt"))
    with open(os.path.join(REPO, "COPYING"), "rb") as f, \
            open(os.path.join(REPO, "LICENSES", "GPL-3.0-or-later.txt"), "rb") as g:
        assert f.read() == g.read()
    unmarked = []
    for top, _dirs, files in os.walk(os.path.join(REPO, "bpf")):
        for name in files:
            if name.endswith((".c", ".h")):
                path = os.path.join(top, name)
                with open(path) as f:
                    first = f.readline()
                if "SPDX-License-Identifier: GPL-2.0-only" not in first:
                    unmarked.append(os.path.relpath(path, REPO))
    assert unmarked == []
    for role in ROLES:
        with open(os.path.join(REPO, "roles", role, "meta", "main.yml")) as f:
            assert yaml.safe_load(f)["galaxy_info"]["license"] == "GPL-3.0-or-later", role


def test_installed_collection_reports_its_version(installed):
    _tarball, collections = installed
    with open(os.path.join(str(collections), "ansible_collections", "ebpf", "oom", "MANIFEST.json")) as f:
        manifest = json.load(f)
    with open(os.path.join(REPO, "galaxy.yml")) as f:
        assert manifest["collection_info"]["version"] == yaml.safe_load(f)["version"]


def ansible_doc(collections, name, kind="module"):
    """ansible-doc's JSON entry for ebpf.oom.<name>, after its text rendering succeeded too."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections))
    argv = [os.path.join(BIN, "ansible-doc"), "-t", kind, "ebpf.oom.%s" % name]
    assert run(argv, env=env).strip()
    return json.loads(run(argv + ["--json"], env=env))["ebpf.oom.%s" % name]


def wrong_defaults(documented, defaults, sub="suboptions", path=""):
    """(option, default shown, real default) for each documented option whose real default
    (not None) the documentation does not show. `defaults`: an argument_spec, or a role's
    defaults/main.yml (sub="options")."""
    wrong = []
    for name, real in defaults.items():
        if name not in documented:
            continue
        if sub == "suboptions":  # an argument_spec entry
            nested = real.get("options")
            if nested:
                wrong += wrong_defaults(documented[name].get(sub) or {}, nested, sub, path + name + ".")
            real = real.get("default")
        shown = documented[name].get("default")
        if real is not None and shown != json.loads(json.dumps(real)):
            wrong.append((path + name, shown, real))
    return wrong


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_works_for_every_installed_module(installed, module):
    _tarball, collections = installed
    entry = ansible_doc(collections, module)
    assert entry["doc"]["collection"] == "ebpf.oom"
    assert entry["doc"]["filename"].startswith(str(collections))
    assert entry["doc"]["short_description"]
    assert entry["examples"] and entry["return"] is not None
    assert wrong_defaults(entry["doc"]["options"], argument_spec(module)) == []


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_works_for_every_installed_role(installed, role):
    """Every variable of the role's defaults/main.yml is documented with that default."""
    _tarball, collections = installed
    entry = ansible_doc(collections, role, kind="role")
    assert entry["collection"] == "ebpf.oom"
    assert entry["path"].startswith(str(collections))
    options = entry["entry_points"]["main"]["options"]
    with open(os.path.join(str(collections), "ansible_collections", "ebpf", "oom", "roles", role,
                           "defaults", "main.yml")) as f:
        defaults = yaml.safe_load(f)
    assert sorted(set(defaults) - set(options)) == []
    assert wrong_defaults(options, defaults, sub="options") == []


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


def test_execution_environment_dependencies_of_the_installed_collection(installed):
    """What ansible-builder's introspection (the step of an EE build that gathers the
    collections' dependencies) finds in the installed collection: requirements.txt and
    bindep.txt, named by meta/execution-environment.yml."""
    _tarball, collections = installed
    data = yaml.safe_load(run([os.path.join(BIN, "ansible-builder"), "introspect", str(collections)]))
    with open(os.path.join(REPO, "requirements.txt")) as f:
        python = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    # The collection needs no Python package: the document check is its own (language.py).
    assert [line.split("#")[0].strip() for line in data.get("python") or []] == python == []
    assert all(line.endswith("# from collection ebpf.oom") for line in data["system"])
    # On this Debian controller, bindep resolves the installed bindep.txt to the packages a
    # compile on the controller needs.
    bindep_txt = os.path.join(str(collections), "ansible_collections", "ebpf", "oom", "bindep.txt")
    packages = run([os.path.join(BIN, "bindep"), "-f", bindep_txt, "-l", "newline"]).split()
    assert sorted(packages) == ["bpftool", "clang", "libbpf-dev", "libbpf1", "llvm"]


def test_ansible_builder_creates_a_build_context_with_the_collection(installed, tmp_path):
    """`ansible-builder create` (no container engine needed) for an EE holding the built
    collection: the context has the tarball, the galaxy requirements naming it, and the
    introspection step that reads meta/execution-environment.yml."""
    tarball, _collections = installed
    definition = {
        "version": 3,
        "dependencies": {"galaxy": {"collections": [
            {"name": "/build/collections/" + tarball.name, "type": "file"}]}},
        "additional_build_files": [{"src": str(tarball), "dest": "collections"}],
        "additional_build_steps": {"prepend_galaxy": ["COPY _build/collections/ /build/collections/"]},
    }
    ee_file = tmp_path / "execution-environment.yml"
    ee_file.write_text(yaml.safe_dump(definition))
    context = tmp_path / "context"
    run([os.path.join(BIN, "ansible-builder"), "create", "-f", str(ee_file), "-c", str(context),
         "--output-filename", "Containerfile"])
    assert (context / "_build" / "collections" / tarball.name).read_bytes() == tarball.read_bytes()
    with open(str(context / "_build" / "requirements.yml")) as f:
        assert yaml.safe_load(f)["collections"][0]["name"].endswith(tarball.name)
    containerfile = (context / "Containerfile").read_text()
    assert "ansible-galaxy collection install" in containerfile
    assert "introspect" in containerfile


def test_the_action_group_holds_every_module():
    """module_defaults: group/ebpf.oom.all reaches each module, new ones included."""
    with open(os.path.join(REPO, "meta", "runtime.yml")) as f:
        runtime = yaml.safe_load(f)
    assert runtime["action_groups"]["all"] == MODULES
