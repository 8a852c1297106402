"""Shared pytest setup: make the checkout importable as ansible_collections.ebpf.oom."""

import os
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _collection_root():
    """A directory holding ansible_collections/ebpf/oom -> this checkout."""
    here = REPO.split(os.sep)
    if here[-3:-1] == ["ansible_collections", "ebpf"] and here[-1] == "oom":
        return os.sep.join(here[:-3])
    root = os.path.join(tempfile.gettempdir(), "ebpf-oom-collections-%d" % os.getuid())
    link = os.path.join(root, "ansible_collections", "ebpf", "oom")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.realpath(link) != REPO:
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(REPO, link)
    return root


COLLECTIONS = _collection_root()
sys.path.insert(0, COLLECTIONS)
os.environ["ANSIBLE_COLLECTIONS_PATH"] = COLLECTIONS


def pytest_collection_modifyitems(config, items):
    """Tests under tests/unit are unit tests unless they say otherwise."""
    for item in items:
        rel = os.path.relpath(str(item.fspath), REPO)
        kind = rel.split(os.sep)[1] if rel.startswith("tests" + os.sep) else ""
        if kind in ("unit", "host", "vm") and not any(item.iter_markers(name=kind)):
            item.add_marker(getattr(pytest.mark, kind))
