"""The engine's file helpers (plugins/module_utils/files.py): the atomic write, reads that
do not follow a symbolic link, reads of trusted files, sha256."""

import hashlib
import os
import stat
import tempfile

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import files
from ansible_collections.ebpf.oom.plugins.module_utils.files import (read_file, read_text, sha256_file,
                                                                     write_atomic)


def test_write_atomic_replaces_the_file_with_its_mode_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    inode = os.stat(str(path)).st_ino
    write_atomic(str(path), "new", 0o600)
    assert path.read_text() == "new"
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
    assert os.stat(str(path)).st_ino != inode  # renamed over, never written in place
    assert os.listdir(str(tmp_path)) == ["state.json"]


def test_write_atomic_that_fails_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "object.o"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(str(path), 42)  # fails while writing
    assert path.read_bytes() == b"old"
    assert os.listdir(str(tmp_path)) == ["object.o"]


def test_write_atomic_into_a_missing_directory_fails_without_a_trace(tmp_path):
    with pytest.raises(OSError):
        write_atomic(str(tmp_path / "gone" / "x"), b"data")
    assert os.listdir(str(tmp_path)) == []


def test_read_file_does_not_follow_a_symbolic_link(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"secret")
    os.symlink(str(target), str(tmp_path / "link"))
    assert read_file(str(target)) == b"secret"
    assert read_file(str(tmp_path / "link")) is None


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_read_file_of_what_is_no_readable_file_is_none(tmp_path, what):
    path = tmp_path / what
    if what == "directory":
        path.mkdir()
    assert read_file(str(path)) is None and read_text(str(path)) is None


def test_read_text_of_bytes_that_are_no_utf8_is_none(tmp_path):
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    assert read_text(str(tmp_path / "bin")) is None


def test_sha256_file_is_the_content_hash(tmp_path):
    data = os.urandom(3 << 20)  # more than one read block
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(str(tmp_path / "f")) == hashlib.sha256(data).hexdigest()


def test_read_trusted_reads_a_root_owned_file_no_one_else_can_write(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"data")
    path.chmod(0o644)
    assert files.read_trusted(str(path)) == b"data"


@pytest.mark.parametrize("owner,mode,why", [(1000, 0o644, "owned by uid 1000"), (0, 0o664, "group-writable"),
                                            (0, 0o606, "world-writable")])
def test_read_trusted_refuses_what_someone_else_can_change(tmp_path, owner, mode, why):
    path = tmp_path / "f"
    path.write_bytes(b"data")
    os.chown(str(path), owner, owner)
    path.chmod(mode)
    with pytest.raises(ValueError, match=why):
        files.read_trusted(str(path), ValueError)


def test_read_trusted_refuses_a_directory_a_fifo_and_a_link_when_asked(tmp_path):
    os.mkfifo(str(tmp_path / "fifo"))
    (tmp_path / "f").write_bytes(b"x")
    os.symlink(str(tmp_path / "f"), str(tmp_path / "link"))
    for what in ("", "fifo"):
        with pytest.raises(ValueError, match="not a regular file"):
            files.read_trusted(str(tmp_path / what), ValueError)
    assert files.read_trusted(str(tmp_path / "link")) == b"x"
    with pytest.raises(ValueError, match="link"):
        files.read_trusted(str(tmp_path / "link"), ValueError, follow=False)


def test_sent_copy_of_a_file_anyone_owns_is_a_private_copy_of_the_bytes_checked(tmp_path):
    """A file the controller sent, owned by another user and writable by all: with its sha256
    the block gets a copy of this process's own, mode 0600, that read_trusted accepts; the
    copy is gone after the block."""
    sent = tmp_path / "generic.bpf.o"
    sent.write_bytes(b"\x7fELF object")
    os.chown(str(sent), 4242, 4242)
    os.chmod(str(sent), 0o666)
    digest = hashlib.sha256(b"\x7fELF object").hexdigest()
    with files.sent_copy(str(sent), digest.upper()) as copy:
        assert copy != str(sent)
        st = os.stat(copy)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 0o600)
        assert files.read_trusted(copy) == b"\x7fELF object"
        held = os.path.dirname(copy)
    assert not os.path.exists(held)


def test_sent_copy_refuses_bytes_that_are_not_the_ones_sent_and_makes_no_copy(tmp_path):
    sent = tmp_path / "generic.bpf.o"
    sent.write_bytes(b"swapped")
    before = set(os.listdir(tempfile.gettempdir()))
    with pytest.raises(ValueError, match=r"refusing to load .*generic.bpf.o: its sha256 is [0-9a-f]{64}, "
                                         r"not the 0{64} of the file sent"):
        with files.sent_copy(str(sent), "0" * 64, ValueError):
            raise AssertionError("the block ran")
    assert set(os.listdir(tempfile.gettempdir())) == before


def test_sent_copy_without_a_sha256_is_the_path_itself(tmp_path):
    with files.sent_copy(str(tmp_path / "x.o"), None) as path:
        assert path == str(tmp_path / "x.o")
