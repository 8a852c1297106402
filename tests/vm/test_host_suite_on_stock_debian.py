"""The host tests that read cgroups, memory cgroups and OOMs pass on a stock Debian 12
host too: its own kernel (6.1), cgroup v2 only, systemd, root with every capability; the
machine the suite runs on may mount cgroup v1 instead, so both kinds of host are covered.
Left out there (they run on the suite's machine only): test_crash_windows.py and
test_modules.py, the loader's and the modules' mechanics, which read no cgroup and cost
minutes under TCG (a process or a playbook per step).

The checkout and the Python packages of the test venv (pure Python or cp311 wheels,
which Debian's python3 3.11 loads) are copied into the session's stock guest, and
`pytest -m host` runs there with Debian's python3 on the other files of tests/host. Every
test it runs must pass there: none may fail or be skipped.
"""

import io
import os
import re
import subprocess
import sys
import sysconfig
import tarfile

import pytest

from vmharness import REPO

GUEST_DIR = "/root/hostsuite"
# Not needed by the host tests (tools of the controller, or build tools).
LEAVE_OUT = re.compile(r"^(pip|setuptools|_distutils_hack|molecule|ansible_lint|ansible_builder"
                       r"|ansible_test|ansible_compat|antsibull|rich|bindep)")
TOOLS = {"ansible-playbook": "ansible.cli.playbook", "ansible": "ansible.cli.adhoc"}
SUMMARY = re.compile(r"^=+ (.*) in [\d.]+s", re.M)


def repository_files():
    listed = subprocess.run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, check=True).stdout
    return [name for name in listed.decode().split("\0")
            if name and os.path.isfile(os.path.join(REPO, name))]


def bundle(path):
    """A tar.gz: repo/ (the checkout), site/ (the venv's packages), bin/ (Ansible's tools)."""
    site = sysconfig.get_paths()["purelib"]
    with tarfile.open(path, "w:gz", compresslevel=3) as tar:
        for name in repository_files():
            tar.add(os.path.join(REPO, name), "repo/" + name)
        for entry in sorted(os.listdir(site)):
            if not LEAVE_OUT.match(entry) and entry != "__pycache__":
                tar.add(os.path.join(site, entry), "site/" + entry,
                        filter=lambda info: None if "__pycache__" in info.name else info)
        for tool, module in sorted(TOOLS.items()):
            text = ("#!/usr/bin/python3\nimport sys\nfrom %s import main\nsys.exit(main())\n"
                    % module).encode()
            info = tarfile.TarInfo("bin/" + tool)
            info.size, info.mode = len(text), 0o755
            tar.addfile(info, io.BytesIO(text))


@pytest.mark.timeout(2400)
def test_host_tests_pass_on_stock_debian_with_cgroup_v2(stock_vm, tmp_path):
    mounts = stock_vm.ssh(["stat", "-f", "-c", "%T", "/sys/fs/cgroup"]).stdout.strip()
    assert mounts == "cgroup2fs", "the stock guest should mount cgroup v2 only: %s" % mounts
    archive = tmp_path / "hostsuite.tar.gz"
    bundle(str(archive))
    stock_vm.ssh(["rm", "-rf", GUEST_DIR])
    stock_vm.ssh(["mkdir", "-p", GUEST_DIR])
    stock_vm.put(archive, GUEST_DIR + "/hostsuite.tar.gz")
    stock_vm.ssh(["tar", "-C", GUEST_DIR, "-xzf", GUEST_DIR + "/hostsuite.tar.gz"])
    try:
        done = stock_vm.ssh(
            ["env", "PYTHONPATH=%s/site" % GUEST_DIR,
             "PATH=%s/bin:/usr/sbin:/usr/bin:/sbin:/bin" % GUEST_DIR,
             "EBPF_OOM_CACHE=%s/cache" % GUEST_DIR, "HOME=%s/home" % GUEST_DIR,
             "sh", "-c", 'cd "$1" && exec python3 -m pytest -m host -p no:cacheprovider -q -rfEs tests/host '
             '--ignore=tests/host/test_crash_windows.py --ignore=tests/host/test_modules.py',
             "sh", GUEST_DIR + "/repo"], check=False, timeout=2300)
    finally:
        stock_vm.ssh(["rm", "-rf", GUEST_DIR], check=False)
    sys.stdout.write(done.stdout[-6000:])
    summary = SUMMARY.findall(done.stdout)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert summary and "passed" in summary[-1], done.stdout[-4000:]
    assert not re.search(r"\b(failed|skipped|error|errors|xfailed)\b", summary[-1]), summary
