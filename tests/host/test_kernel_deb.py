"""molecule/kernel/build --deb: the interface the role ebpf.oom.hook_kernel relies on.

The package `build --deb` makes (cached: built here only when the cache has none, over
the test kernel's build tree, about a minute) is one linux-image package for the release in its `release`
file, with the kernel, its System.map and config under /boot, and a sha256 file that
`sha256sum -c` accepts. `--cached` without a package and `--config` without `--deb` exit
1 at once without printing a path.
"""

import os
import subprocess
import time

import pytest

from conftest import REPO

BUILD = os.path.join(REPO, "molecule", "kernel", "build")
AT_ONCE = 20  # seconds: no build, only the cache key (gcc, pahole, sha256sum)


def run_build(*args, env=None, timeout=120):
    return subprocess.run([BUILD, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)


@pytest.fixture(scope="module")
def package():
    """(path of the .deb, its out dir, its release)."""
    done = run_build("--deb", timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    path = done.stdout.strip().splitlines()[-1]
    out = os.path.dirname(path)
    with open(os.path.join(out, "release")) as f:
        release = f.read().strip()
    return path, out, release


def dpkg_deb(*args):
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True).stdout


def test_cached_package_path_is_its_last_line(package):
    path, _out, release = package
    assert os.path.isabs(path) and os.path.isfile(path)
    assert os.path.basename(path).startswith("linux-image-%s_" % release)
    assert path.endswith("_amd64.deb")


def test_package_is_the_linux_image_of_its_release(package):
    path, _out, release = package
    assert release.endswith("-ebpf-oom-hook")
    assert dpkg_deb("-f", path, "Package").strip() == "linux-image-" + release
    version = dpkg_deb("-f", path, "Version").strip()
    assert os.path.basename(path) == "linux-image-%s_%s_amd64.deb" % (release, version)


def test_package_has_kernel_system_map_and_config_in_boot(package):
    path, _out, release = package
    names = {line.split()[-1] for line in dpkg_deb("-c", path).splitlines()}
    for name in ("vmlinuz", "System.map", "config"):
        assert "./boot/%s-%s" % (name, release) in names


def test_sha256_file_checks_the_package(package):
    path, out, _release = package
    with open(path + ".sha256") as f:
        digest, name = f.read().split()
    assert len(digest) == 64 and name == os.path.basename(path)
    subprocess.run(["sha256sum", "--check", "--status", os.path.basename(path) + ".sha256"],
                   cwd=out, check=True)


def test_cached_without_a_package_exits_1_at_once(tmp_path):
    env = dict(os.environ, EBPF_OOM_CACHE=str(tmp_path))
    start = time.monotonic()
    done = run_build("--deb", "--cached", env=env)
    assert done.returncode == 1
    assert done.stdout == ""
    assert time.monotonic() - start < AT_ONCE
    assert not (tmp_path / "kernel").exists()


def test_config_without_deb_is_refused(tmp_path):
    config = tmp_path / "config"
    config.write_text("CONFIG_BPF=y\n")
    done = run_build("--config", str(config))
    assert done.returncode == 1
    assert done.stdout == ""
    assert "--config FILE needs --deb" in done.stderr
