"""Helpers behind tests/vm/conftest.py's fixtures: vmctl, Guest, Fleet, run_playbook."""

import datetime
import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import threading

import pytest
import yaml

from support import venv_tool

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VMCTL = os.path.join(REPO, "molecule", "vm", "vmctl")

_spec = importlib.util.spec_from_file_location(
    "ebpf_oom_vmlib", os.path.join(REPO, "molecule", "vm", "vmlib.py"))
vmlib = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vmlib)

PREFIX = "pt%d-" % os.getpid()


class GuestCommandError(subprocess.CalledProcessError):
    """A command in a guest failed; the message carries its output."""

    def __str__(self):
        return "%s\nstdout:\n%s\nstderr:\n%s" % (
            super().__str__(), self.stdout or "", self.stderr or "")


def vmctl(*args, check=True, env=None, timeout=None):
    """Run molecule/vm/vmctl; return the CompletedProcess (text)."""
    done = subprocess.run([sys.executable, VMCTL] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise GuestCommandError(done.returncode, ["vmctl"] + list(args), done.stdout,
                                done.stderr)
    return done


class Guest:
    """One running guest. ssh/put/get go over its SSH port (multiplexed)."""

    def __init__(self, name, inventory_line):
        state = vmlib.load_state(name)
        self.name = name
        self.port = state["port"]
        self.key = state["key"]
        self.kernel = state["kernel"]
        self.memory = state["memory"]
        self.inventory_line = inventory_line
        self._control = vmlib.control_path(name)

    def __repr__(self):
        return "Guest(%s, port=%d, kernel=%s)" % (self.name, self.port, self.kernel)

    @property
    def state(self):
        """What vmctl recorded (disk, pid, kernel_image, ...)."""
        return vmlib.load_state(self.name)

    def _options(self):
        return vmlib.ssh_options(self.port, self.key, self._control)

    def _run(self, argv, check, input=None, timeout=None):
        done = subprocess.run(argv, input=input, capture_output=True, text=True,
                              timeout=timeout,
                              stdin=subprocess.DEVNULL if input is None else None, check=False)
        if check and done.returncode != 0:
            raise GuestCommandError(done.returncode, argv, done.stdout, done.stderr)
        return done

    def ssh(self, argv, check=True, input=None, timeout=None):
        """Run argv (a list, quoted for the remote shell) in the guest as root."""
        command = " ".join(shlex.quote(str(word)) for word in argv)
        return self._run(vmlib.ssh_argv(self.port, self.key, self._control) + [command],
                         check, input=input, timeout=timeout)

    def put(self, local, remote):
        """Copy a file or directory into the guest."""
        return self._run(["scp", "-q", "-r"] + self._options()
                         + [str(local), "root@127.0.0.1:" + str(remote)], True)

    def get(self, remote, local):
        """Copy a file or directory out of the guest."""
        return self._run(["scp", "-q", "-r"] + self._options()
                         + ["root@127.0.0.1:" + str(remote), str(local)], True)

    def boot_id(self):
        return self.ssh(["cat", "/proc/sys/kernel/random/boot_id"]).stdout.strip()

    def reboot(self):
        """A real reboot (same disk, same kernel); returns once SSH answers again."""
        vmctl("reboot", self.name)

    def inventory(self, tmp_path):
        """Path of an INI inventory holding just this guest."""
        path = os.path.join(str(tmp_path), "inventory-%s.ini" % self.name)
        with open(path, "w") as handle:
            handle.write("[ebpf_oom_vms]\n%s\n" % self.inventory_line)
        return path


_reaped = threading.Lock()
_reaped_done = []


def reap_stale_guests():
    """Destroy guests whose owner died without cleaning up (once per process)."""
    with _reaped:
        if not _reaped_done:
            _reaped_done.append(True)
            vmctl("reap", check=False)


_names_lock = threading.Lock()
_names = set()


class Fleet:
    """Starts guests and destroys every one of them at teardown."""

    def __init__(self):
        self.guests = []
        self._lock = threading.Lock()

    def start(self, name, kernel="hook", memory=1024, boot=None):
        """A new guest; boot="disk" boots it through GRUB from its own disk (the image's
        Debian kernel, until something installed in the guest says otherwise)."""
        reap_stale_guests()
        with _names_lock:  # unique in this process, so a taken name is never ours to stop
            full = PREFIX + name
            while full in _names:
                full = "%s%s-%d" % (PREFIX, name, len(_names))
            _names.add(full)
        with self._lock:
            self.guests.append(full)  # registered first: a half-started guest is stopped too
        done = vmctl("start", full, "--kernel", kernel, "--memory", str(memory),
                     "--owner", str(os.getpid()), *(["--boot", boot] if boot else []), check=False)
        if done.returncode != 0:
            pytest.fail("vmctl start %s --kernel %s failed:\n%s%s"
                        % (full, kernel, done.stdout, done.stderr), pytrace=False)
        return Guest(full, done.stdout.strip().splitlines()[-1])

    def stop_all(self):
        errors = []
        for name in reversed(self.guests):
            if vmlib.load_state(name) is not None:
                done = vmctl("stop", name, check=False)
                if done.returncode != 0:
                    errors.append(done.stderr)
        self.guests = []
        assert not errors, "vmctl stop failed: %s" % errors


def ansible_env():
    """Environment for ansible commands (tests/conftest.py set ANSIBLE_COLLECTIONS_PATH
    to this checkout as ebpf.oom)."""
    return dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_NOCOLOR="1",
                ANSIBLE_RETRY_FILES_ENABLED="False")


def run_playbook(playbook, inventory, extra_vars=None, check=True):
    """ansible-playbook PLAYBOOK -i INVENTORY [-e JSON]; raises on failure when check."""
    argv = [venv_tool("ansible-playbook"), "-i", str(inventory), str(playbook)]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=ansible_env(), check=False)
    if check and done.returncode != 0:
        raise GuestCommandError(done.returncode, argv, done.stdout, done.stderr)
    return done


CALLBACKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "callback_plugins")


class PlayResult:
    """One ansible-playbook run over one guest, read through the results_json callback."""

    def __init__(self, done, argv):
        self.rc = done.returncode
        self.stderr = done.stderr
        self.argv = argv
        try:
            self.data = json.loads(done.stdout)
        except ValueError:
            raise GuestCommandError(done.returncode, argv, done.stdout, done.stderr) from None
        self.tasks = [(t["task"], t["result"]) for t in self.data["tasks"]]
        self.actions = [t.get("action") for t in self.data["tasks"]]

    def __getitem__(self, name):
        """The result of the task with this name (the last one, if repeated)."""
        found = [result for task, result in self.tasks if task == name]
        assert found, "no task %r in %s" % (name, [t for t, _r in self.tasks])
        return found[-1]

    @property
    def failed(self):
        return [(task, result.get("msg")) for task, result in self.tasks if result.get("failed")]

    @property
    def changed(self):
        return [task for task, result in self.tasks if result.get("changed")]

    def __repr__(self):
        lines = ["rc=%d" % self.rc]
        for task, result in self.tasks:
            lines.append("- %s: %s" % (task, json.dumps(
                {k: result.get(k) for k in ("changed", "failed", "msg", "warnings") if k in result})))
        return "\n".join(lines) + ("\n" + self.stderr if self.stderr.strip() else "")


def play(guest, tasks, tmp_path, extra_vars=None, check=True, become=False, check_mode=False):
    """Run tasks (a list of task dicts) on the guest in one playbook; a PlayResult.
    Raises when a task failed and check is true (ignore_errors tasks do not count).
    check_mode: ansible-playbook --check."""
    book = os.path.join(str(tmp_path), "play-%d.json" % next(_plays))
    with open(book, "w") as handle:
        json.dump([{"hosts": "all", "gather_facts": False, "become": become,
                    "tasks": tasks}], handle)
    return playbook(guest, book, tmp_path, extra_vars, check, check_mode)


def playbook(guest, book, tmp_path, extra_vars=None, check=True, check_mode=False):
    """Run a playbook file on the guest; a PlayResult (as play())."""
    argv = [venv_tool("ansible-playbook"), "-i", guest.inventory(tmp_path), book]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    if check_mode:
        argv.append("--check")
    env = dict(ansible_env(), ANSIBLE_STDOUT_CALLBACK="results_json",
               ANSIBLE_CALLBACK_PLUGINS=CALLBACKS, ANSIBLE_PIPELINING="True")
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=env, check=False)
    result = PlayResult(done, argv)
    if check and result.rc != 0:
        raise AssertionError("playbook failed:\n%r" % result)
    return result


_plays = itertools.count()


# ---------------------------------------------------------------- the role and the docs

def role(**variables):
    """The role ebpf.oom.bpf_oom as a task: the guests have the packages, and policies
    the test does not list stay (no purge) unless the variables say otherwise."""
    settings = dict(bpf_oom_install_packages=False, bpf_oom_purge=False)
    settings.update(variables)
    return {"name": "converge", "ansible.builtin.include_role": {"name": "ebpf.oom.bpf_oom"},
            "vars": settings}


# Actions that run on the controller only: a role's checks and facts, not a round trip to
# the host (the measure of a converge's cost is the tasks that do make one).
_LOCAL = ("assert", "set_fact", "debug", "fail", "validate_argument_spec", "include_role", "include_tasks",
          "import_role", "import_tasks", "meta")
CONTROLLER_ONLY = frozenset(_LOCAL) | frozenset("ansible.builtin." + name for name in _LOCAL)


def host_tasks(played):
    """The names of the tasks of a PlayResult that ran on the host: neither skipped nor
    controller-only (a delegated task counts where it ran: delegate_to is not looked at)."""
    return [name for (name, result), action in zip(played.tasks, played.actions)
            if not result.get("skipped") and action not in CONTROLLER_ONLY]


def result_of(played, task):
    """The result of the role's task named `task` in a PlayResult."""
    found = [r for name, r in played.tasks if name.endswith(" : " + task) or name == task]
    assert found, [name for name, _r in played.tasks]
    return found[-1]


def loaded(guest, tmp_path):
    """The names of the policies loaded on the guest (ebpf.oom.kernel_info)."""
    found = play(guest, [{"name": "info", "ebpf.oom.kernel_info": {}}], tmp_path)["info"]
    return sorted(p["name"] for p in found["policies"])


def documented_plays():
    """The plays of docs/operations.md's yaml blocks."""
    with open(os.path.join(REPO, "docs", "operations.md")) as handle:
        blocks = re.findall(r"^```yaml\n(.*?)^```", handle.read(), re.M | re.S)
    return [p for block in blocks for p in yaml.safe_load(block) if isinstance(p, dict)]


def documented_task(name):
    """The task called `name` in docs/operations.md: a test runs what the docs show."""
    found = [t for p in documented_plays() for t in p.get("tasks", []) if t.get("name") == name]
    assert len(found) == 1, "docs/operations.md has no single task %r" % name
    return found[0]


def documented_play(name):
    """The play called `name` in docs/operations.md as tasks for play(), in the play's
    order: its pre_tasks, its roles (each with its variables), its tasks, its post_tasks."""
    found = [p for p in documented_plays() if p.get("name") == name]
    assert len(found) == 1, "docs/operations.md has no single play %r" % name
    roles = [{"name": "role " + r["role"], "ansible.builtin.include_role": {"name": r["role"]},
              "vars": r.get("vars", {})} for r in found[0].get("roles", [])]
    return (found[0].get("pre_tasks", []) + roles + found[0].get("tasks", [])
            + found[0].get("post_tasks", []))


# ---------------------------------------------------------------- the uninstall

UNINSTALL = "Remove ebpf.oom from the hosts"  # its play in docs/operations.md

# What the role puts on a host that the uninstall must take away. (The guest image has a
# unit of its own named ebpf-oom-*: the tests' SSH host keys.)
ROLE_UNITS = ["ebpf-oom-agent.service", "ebpf-oom-restore.service", "ebpf-oom-metrics.timer",
              "ebpf-oom-metrics.service"]
ROLE_PATHS = ["/etc/systemd/system/" + unit for unit in ROLE_UNITS] + [
    "/usr/lib/ebpf-oom", "/usr/local/sbin/ebpf-oom", "/var/lib/ebpf-oom", "/var/cache/ebpf-oom",
    "/run/ebpf-oom", "/var/lib/prometheus/node-exporter/ebpf_oom.prom"]


def leftovers(guest):
    """What of the role is on the guest: its units systemd knows (loaded or as files),
    its paths, and what is pinned under the collection's bpffs directory."""
    units = guest.ssh(["systemctl", "list-units", "--all", "--plain", "--no-legend"] + ROLE_UNITS,
                      check=False).stdout.split("\n")
    files = guest.ssh(["systemctl", "list-unit-files", "--no-legend"] + ROLE_UNITS,
                      check=False).stdout.split("\n")
    paths = guest.ssh(["ls", "-d", "--"] + ROLE_PATHS, check=False).stdout.split()
    pinned = guest.ssh(["ls", "-A", "/sys/fs/bpf/ebpf_oom"], check=False).stdout.split()
    return [line for line in units + files if line.strip()], paths, pinned


# ---------------------------------------------------------------- the fleet status

STATUS = os.path.join(REPO, "playbooks", "status.yml")


def fleet_status(guest, tmp_path, on_host=True):
    """playbooks/status.yml over the guest: (its row, as -e status_json writes it; the
    table it prints). on_host (where the role put `ebpf-oom` on root's PATH): checks that
    the row is the one `ebpf-oom status --json` gives on the guest, but for the second of
    the last kill: its wall time is worked out from the boot clock at each read, and may
    cross a second between the two."""
    table = os.path.join(str(tmp_path), "status.json")
    shown = run_playbook(STATUS, guest.inventory(tmp_path), extra_vars={"status_json": table})
    with open(table) as handle:
        [(host, row)] = json.load(handle).items()
    assert host == guest.name, host
    if not on_host:
        return row, shown.stdout
    host_row = json.loads(guest.ssh(["ebpf-oom", "status", "--json"]).stdout)
    mine = dict(row)
    when, when_on_host = mine.pop("last kill").split(" ", 1), host_row.pop("last kill").split(" ", 1)
    assert mine == host_row and when[1:] == when_on_host[1:], (row, host_row)
    if when[0] != "-":
        stamps = [datetime.datetime.strptime(w[0], "%Y-%m-%dT%H:%M:%S") for w in (when, when_on_host)]
        assert abs((stamps[0] - stamps[1]).total_seconds()) <= 1, stamps
    return row, shown.stdout
