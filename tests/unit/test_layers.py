"""Imports only go down: the engine (plugins/module_utils) is built in layers, and a file
imports only from layers below its own.  Each file's opening docstring names its layer;
this table is the one place that lists them."""

import ast
import os
import re
import sys

import pytest

from conftest import REPO

LAYERS = [
    ("leaf helpers", {"common", "errors", "names", "files", "cgroups", "abi"}),
    ("kernel binding, the policy language", {"libbpf", "language"}),
    ("layout, translation, parsing",
     {"bpffs", "compiler", "renderer", "kmsg", "maps", "units", "grub"}),
    ("what is pinned, kept, observed", {"pins", "state", "observer", "cgrouprules", "scoreadj"}),
    ("loader", {"loader", "verify", "agent", "shadow"}),
    ("callers above the loader", {"backends", "deploy", "explain", "events", "metrics"}),
    ("what the host does by itself, what it offers", {"restore", "probe"}),
    ("a host's desired state", {"converge"}),
    ("host command", {"cli"}),
]
LAYER = dict((name, number) for number, (_what, names) in enumerate(LAYERS) for name in names)
PLUGINS = os.path.join(REPO, "plugins")
PACKAGE = "ansible_collections.ebpf.oom.plugins."


def sources(kind):
    folder = os.path.join(PLUGINS, kind)
    return sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py")


def parsed(kind, name):
    with open(os.path.join(PLUGINS, kind, name + ".py")) as f:
        return ast.parse(f.read())


def imports(tree):
    """(kind, name) of every import in a file: ('engine', module_utils file),
    ('plugins', 'plugin_utils.x' ...) or ('other', top-level module)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            targets = [node.module] if node.module else [a.name for a in node.names]
            out.extend(("engine", t.split(".")[0]) for t in targets)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
            rest = node.module[len(PACKAGE):]
            if rest == "module_utils":
                out.extend(("engine", a.name) for a in node.names)
            elif rest.startswith("module_utils."):
                out.append(("engine", rest.split(".")[1]))
            else:
                out.append(("plugins", rest))
        elif isinstance(node, ast.ImportFrom):
            out.append(("other", (node.module or "").split(".")[0]))
        elif isinstance(node, ast.Import):
            out.extend(("other", a.name.split(".")[0]) for a in node.names)
    return out


def upward(name, tree):
    """The imports of engine file ``name`` that do not go down: to its own layer or one
    above, to a file without a layer, or out of module_utils into the other plugins."""
    return [(kind, target) for kind, target in imports(tree)
            if kind == "plugins" or (kind == "engine" and LAYER.get(target, 99) >= LAYER[name])]


def test_every_engine_file_has_a_layer():
    assert sorted(LAYER) == sources("module_utils")


@pytest.mark.parametrize("name", sources("module_utils"))
def test_engine_file_imports_only_from_layers_below_it(name):
    found = upward(name, parsed("module_utils", name))
    assert found == [], "%s (layer %d) imports %s" % (name, LAYER[name], found)


@pytest.mark.parametrize("code", [
    "from . import loader",
    "from .bpffs import Layout",
    "from ansible_collections.ebpf.oom.plugins.module_utils import restore",
    "from ansible_collections.ebpf.oom.plugins.module_utils.compiler import CFLAGS",
    "from ansible_collections.ebpf.oom.plugins.plugin_utils import documents",
    "from . import newfile",
])
def test_an_import_that_does_not_go_down_is_caught(code):
    assert upward("bpffs", ast.parse(code)) != []
    assert upward("libbpf", ast.parse("from .errors import BpfError")) == []


@pytest.mark.parametrize("name", sources("module_utils"))
def test_engine_file_uses_the_standard_library_only(name):
    others = set(target for kind, target in imports(parsed("module_utils", name)) if kind == "other")
    assert others <= set(sys.stdlib_module_names) | {"__future__"}, name


@pytest.mark.parametrize("name", sources("module_utils"))
def test_engine_file_says_what_it_is_for_and_its_layer(name):
    doc = ast.get_docstring(parsed("module_utils", name)) or ""
    said = re.findall(r"^Layer (\d+) \(", doc, re.M)
    assert said == [str(LAYER[name])], "%s: docstring says layer %s, the table %d" % (name, said, LAYER[name])
    assert len(doc.split("\n\n")[0]) > 20, name


@pytest.mark.parametrize("name", sources("modules"))
def test_modules_import_the_engine_and_never_the_controller_side(name):
    found = imports(parsed("modules", name))
    assert not [t for kind, t in found if kind == "plugins"], name
    assert [t for kind, t in found if kind == "engine"], name


def test_no_test_file_imports_another():
    """Shared test code lives in helper modules (tests/support.py, tests/host/hosthelpers.py,
    tests/vm/lab.py, ...), never in a test file another one imports."""
    found = []
    for folder, _dirs, files in os.walk(os.path.join(REPO, "tests")):
        for name in files:
            if not name.endswith(".py") or "output" in folder.split(os.sep):
                continue
            with open(os.path.join(folder, name)) as f:
                tree = ast.parse(f.read())
            found.extend("%s imports %s" % (name, target) for kind, target in imports(tree)
                         if kind == "other" and target.startswith("test_"))
    assert found == []
    assert [t for k, t in imports(ast.parse("from test_loader import engine")) if t.startswith("test_")]
