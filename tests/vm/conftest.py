"""Guests for the vm tests: QEMU VMs that molecule/vm/vmctl starts, reached over SSH.

Fixtures
  vm_factory         start(name, kernel='hook', memory=1024) -> Guest; every guest it
                     started is stopped (destroyed) when the test ends, failed or not
  vm_factory_module  the same, guests live for the test module
  hook_vm, stock_vm  one guest each for the whole session (hook kernel / Debian kernel)
  global_vm          a small hook guest for global OOMs, for the whole session
  disk_vm            a stock guest that boots from its own disk through GRUB, for the
                     test module (the hook_kernel role installs kernels in it)
  hook_lab, stock_lab real OOMs in those guests, driven as data (tests/vm/lab.py)
  hook_policies      documents applied to the hook guest through ebpf.oom.policy
and run_playbook(playbook, inventory, extra_vars=None, check=True), play(guest, tasks, tmp).

Guest names get a per-process prefix (pt<pid>-) so parallel sessions do not clash;
each guest is owned by the test process, and guests left by a killed session (its
owner gone) are destroyed before new ones start (`vmctl reap`).
Prerequisites missing (image not built, hook kernel not built) make the fixture fail
with vmctl's message: CI builds both first.
"""

import pytest

from lab import Lab, Policies
from vmharness import Fleet


def _fleet():
    """A Fleet whose guests are all stopped (destroyed) when the fixture's scope ends,
    failed or not: one function, registered below at each scope the tests use."""
    started = Fleet()
    try:
        yield started
    finally:
        started.stop_all()


vm_factory = pytest.fixture(_fleet, name="vm_factory")
vm_factory_module = pytest.fixture(_fleet, scope="module", name="vm_factory_module")
_session_fleet = pytest.fixture(_fleet, scope="session", name="_session_fleet")


@pytest.fixture(scope="session")
def hook_vm(_session_fleet):
    return _session_fleet.start("hook", kernel="hook", memory=1024)


@pytest.fixture(scope="session")
def stock_vm(_session_fleet):
    return _session_fleet.start("stock", kernel="stock", memory=1024)


@pytest.fixture(scope="session")
def global_vm(_session_fleet):
    """A small hook-kernel guest for global OOMs (the whole guest runs out of memory soon
    after 512 MiB); sshd is made unkillable, so the guest stays reachable whatever dies."""
    guest = _session_fleet.start("global", kernel="hook", memory=512)
    guest.ssh(["sh", "-c", "for p in $(pgrep -x sshd); do echo -1000 > /proc/$p/oom_score_adj; done"])
    return guest


@pytest.fixture(scope="module")
def disk_vm(vm_factory_module):
    return vm_factory_module.start("disk", kernel="stock", memory=1024, boot="disk")


@pytest.fixture(scope="session")
def hook_lab(hook_vm):
    """Real OOMs in the session's hook guest (tests/vm/lab.py)."""
    return Lab(hook_vm)


@pytest.fixture(scope="session")
def stock_lab(stock_vm):
    """Real OOMs in the session's stock guest (tests/vm/lab.py)."""
    return Lab(stock_vm)


@pytest.fixture(scope="module")
def hook_policies(hook_vm, tmp_path_factory):
    """Documents applied to the hook guest through ebpf.oom.policy; removed when the
    test module ends, failed or not."""
    policies = Policies(hook_vm, tmp_path_factory.mktemp("policies"))
    try:
        yield policies
    finally:
        policies.remove_all()
