# -*- coding: utf-8 -*-
# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's systemd units as text, the files the host holds, and systemctl.

Layer 2 (layout: the units, their text and place): imports the leaf helpers.  Used by converge.py (the state
module ebpf.oom.host): it writes these units when their text differs (put()), and
asks systemctl (state(), run()) before it changes what is enabled or running.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import subprocess

from .files import sha256_file, write_atomic

UNIT_DIR = "/etc/systemd/system"
SYSTEMD_RUNTIME = "/run/systemd/system"  # there only when systemd is PID 1 (sd_booted)
MOUNT = "sys-fs-bpf.mount"
RESTORE = "ebpf-oom-restore.service"
AGENT = "ebpf-oom-agent.service"
METRICS = "ebpf-oom-metrics.service"
METRICS_TIMER = "ebpf-oom-metrics.timer"
ALL = (MOUNT, RESTORE, AGENT, METRICS, METRICS_TIMER)
HEADER = "# Installed by ebpf.oom (ebpf.oom.host); changes here are overwritten.\n"

# systemd (PID 1) mounts bpffs itself on most hosts as one of its API file systems, and
# refuses a unit for it: this one is for hosts where nothing mounts bpffs.
MOUNT_TEXT = """# The BPF file system, where OOM policies are pinned (/sys/fs/bpf/ebpf_oom/<policy>/),
# mounted early at every boot, on a host where nothing else mounts it.
[Unit]
Description=BPF file system (ebpf.oom pins)
Documentation=man:bpf(2)
DefaultDependencies=no
ConditionPathExists=/sys/fs/bpf
ConditionCapability=CAP_SYS_ADMIN
Before=sysinit.target

[Mount]
What=bpf
Where=/sys/fs/bpf
Type=bpf
Options=mode=0700,nosuid,nodev,noexec

[Install]
WantedBy=sysinit.target
"""

RESTORE_TEXT = """# Re-attaches and re-pins every OOM policy recorded under %(state_dir)s before ordinary
# services start, with the engine the modules use. A policy that no longer loads (a kernel
# without the hook) is logged with the reason and the unit fails; nothing requires it, so
# the host boots on.
[Unit]
Description=Restore ebpf.oom OOM-killer policies
DefaultDependencies=no
Wants=sys-fs-bpf.mount
After=sys-fs-bpf.mount local-fs.target
RequiresMountsFor=%(state_dir)s %(engine_dir)s
Before=sysinit.target shutdown.target
Conflicts=shutdown.target
ConditionPathIsDirectory=%(state_dir)s

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/python3 %(engine_dir)s/ebpf-oom restore

[Install]
WantedBy=sysinit.target
"""

AGENT_TEXT = """# The score_adj backend's agent: keeps every process a score_adj policy's rules match at
# its band's oom_score_adj (a sweep at start and when the policy changes, the policy's BPF
# events in between), and puts every value it wrote back when it stops or the policy goes.
# After a crash systemd starts it again and it sweeps.
[Unit]
Description=ebpf.oom score_adj agent
Wants=sys-fs-bpf.mount
After=sys-fs-bpf.mount ebpf-oom-restore.service
RequiresMountsFor=%(engine_dir)s

[Service]
# Ready (systemctl start returns) once it swept: every matched process has its value.
Type=notify
ExecStart=/usr/bin/python3 %(engine_dir)s/ebpf-oom agent
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""

METRICS_TEXT = """[Unit]
Description=Write ebpf.oom OOM kill metrics for node_exporter's textfile collector
After=sys-fs-bpf.mount

[Service]
Type=oneshot
ExecStart=/usr/bin/python3 %(engine_dir)s/ebpf-oom events --metrics-file %(metrics_file)s \
--cgroup-depth %(metrics_cgroup_depth)d
"""

METRICS_TIMER_TEXT = """[Unit]
Description=Write ebpf.oom OOM kill metrics every %(metrics_interval)s

[Timer]
OnBootSec=30s
OnUnitActiveSec=%(metrics_interval)s
AccuracySec=5s

[Install]
WantedBy=timers.target
"""

TEXTS = {MOUNT: MOUNT_TEXT, RESTORE: RESTORE_TEXT, AGENT: AGENT_TEXT, METRICS: METRICS_TEXT,
         METRICS_TIMER: METRICS_TIMER_TEXT}


def text(unit, **settings):
    """The unit file's text with the settings it names (engine_dir, state_dir, metrics_*)."""
    return HEADER + TEXTS[unit] % settings


def systemd_runs():
    """Whether the host runs systemd: the units are for it."""
    return os.path.isdir(SYSTEMD_RUNTIME)


def path(unit):
    return os.path.join(UNIT_DIR, unit)


def installed():
    """The collection's unit files there now."""
    return [unit for unit in ALL if os.path.lexists(path(unit))]


def held(file_path):
    """(sha256, mode, owner uid) of a regular file, or None (missing, or not a file)."""
    try:
        st = os.lstat(file_path)
    except OSError:
        return None
    if not os.path.isfile(file_path) or os.path.islink(file_path):
        return ("not a regular file", st.st_mode & 0o7777, st.st_uid)
    return sha256_file(file_path), st.st_mode & 0o7777, st.st_uid


def put(file_path, data, mode, check_mode):
    """Make ``file_path`` hold ``data`` (bytes), root's, with ``mode``; True when it did not."""
    if held(file_path) == (hashlib.sha256(data).hexdigest(), mode, 0):
        return False
    if not check_mode:
        write_atomic(file_path, data, mode=mode)
        os.chown(file_path, 0, 0)
    return True


def run(*args):
    """systemctl with ``args``; raises OSError with its message when it fails."""
    done = subprocess.run(["systemctl"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=False)
    if done.returncode != 0:
        raise OSError("systemctl %s: %s" % (" ".join(args), (done.stderr or done.stdout).strip()))
    return done.stdout


def state(unit):
    """(enabled, active) as systemctl says: is-enabled says 'enabled', is-active 'active'."""
    def says(verb):
        done = subprocess.run(["systemctl", verb, unit], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              universal_newlines=True, check=False)
        return done.stdout.strip()
    return says("is-enabled") == "enabled", says("is-active") == "active"
