"""ebpf.oom.host's decisions (plugins/module_utils/converge.py) as pure logic: which files
it writes, which systemctl commands it runs for the states systemd reports, in which
order, and that a rerun and check mode change nothing.

systemd and the unit directory are stood in for (a temporary directory, and a systemctl
that keeps the states the commands set); the host's real units, policies and agent are
exercised through the role in the VM tests (test_role_options, test_role_score_adj,
Molecule)."""

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import converge, units

RESTORE, AGENT, TIMER, METRICS = units.RESTORE, units.AGENT, units.METRICS_TIMER, units.METRICS


class Systemd(object):
    """systemctl's states as the commands leave them; every command run, in order."""

    def __init__(self, enabled=(), active=()):
        self.enabled, self.active, self.ran = set(enabled), set(active), []

    def state(self, unit):
        return unit in self.enabled, unit in self.active

    def run(self, *args):
        self.ran.append(" ".join(args))
        verb, unit = (args + (None,))[:2]
        {"enable": self.enabled.add, "disable": self.enabled.discard, "start": self.active.add,
         "restart": self.active.add, "stop": self.active.discard}.get(verb, lambda _u: None)(unit)


@pytest.fixture
def systemd(monkeypatch, tmp_path):
    fake = Systemd()
    monkeypatch.setattr(units, "UNIT_DIR", str(tmp_path / "units"))
    (tmp_path / "units").mkdir()
    monkeypatch.setattr(units, "state", fake.state)
    monkeypatch.setattr(units, "run", fake.run)
    monkeypatch.setattr(converge.os, "chown", lambda *_a: None)
    monkeypatch.setattr(converge, "ON_PATH", str(tmp_path / "sbin" / "ebpf-oom"))
    return fake


def want(tmp_path, **settings):
    out = dict(engine_dir=str(tmp_path / "engine"), metrics=False, metrics_file=str(tmp_path / "prom" / "x.prom"),
               metrics_interval="1min", metrics_cgroup_depth=1, restore_at_boot=True,
               archive=b"zip", command=b"#!cmd")
    out.update(settings)
    return out


def host(tmp_path, check_mode=False, agent=False, bpffs_mounted=True, **settings):
    """A Host past its kernel part: supported, with or without the agent."""
    run = converge.Host(want(tmp_path, **settings), check_mode=check_mode)
    run.info = {"bpffs_mounted": bpffs_mounted}
    run.supported, run.agent = True, agent
    return run


def setup(run):
    run.engine()
    run.units()
    return run


def test_a_first_run_writes_the_units_reloads_once_and_enables_the_restore(systemd, tmp_path):
    run = setup(host(tmp_path, metrics=True))
    assert sorted(units.installed()) == sorted([RESTORE, METRICS, TIMER])
    assert systemd.ran == ["daemon-reload", "enable " + RESTORE, "enable " + TIMER, "start " + TIMER]
    assert run.parts["engine"] == ["created %s" % (tmp_path / "engine"),
                                   "wrote %s/ebpf_oom_engine.zip" % (tmp_path / "engine"),
                                   "wrote %s/ebpf-oom" % (tmp_path / "engine"),
                                   "linked %s to %s/ebpf-oom" % (converge.ON_PATH, tmp_path / "engine")]
    assert converge.os.readlink(converge.ON_PATH) == str(tmp_path / "engine" / "ebpf-oom")
    assert (tmp_path / "prom").is_dir()
    again = setup(host(tmp_path, metrics=True))
    assert not again.changed and again.parts["units"] == [], again.parts
    assert len(systemd.ran) == 4


def test_check_mode_says_what_a_run_would_do_and_does_none_of_it(systemd, tmp_path):
    checked = setup(host(tmp_path, check_mode=True, metrics=True))
    assert units.installed() == [] and not (tmp_path / "engine").exists() and systemd.ran == []
    done = setup(host(tmp_path, metrics=True))
    assert checked.changes == done.changes


def test_a_changed_setting_rewrites_that_unit_and_reloads(systemd, tmp_path):
    setup(host(tmp_path))
    systemd.ran[:] = []
    run = setup(host(tmp_path, engine_dir=str(tmp_path / "elsewhere")))
    assert run.parts["units"] == ["wrote %s/%s" % (units.UNIT_DIR, RESTORE), "systemctl daemon-reload"]
    assert run.after[units.path(RESTORE)].count(str(tmp_path / "elsewhere")) == 2
    assert str(tmp_path / "engine") in run.before[units.path(RESTORE)]
    assert systemd.ran == ["daemon-reload"]


def test_metrics_turned_off_stop_and_disable_the_timer_before_its_files_go(systemd, tmp_path):
    setup(host(tmp_path, metrics=True))
    systemd.ran[:] = []
    run = setup(host(tmp_path, metrics=False))
    assert systemd.ran == ["disable " + TIMER, "stop " + TIMER, "daemon-reload"]
    assert units.installed() == [RESTORE]
    assert run.changes[-1] == "units: systemctl daemon-reload", run.changes


def test_the_mount_unit_is_installed_only_where_nothing_mounts_bpffs_and_then_kept(systemd, tmp_path):
    setup(host(tmp_path))
    assert units.MOUNT not in units.installed()
    setup(host(tmp_path, bpffs_mounted=False))
    assert units.MOUNT in units.installed() and {units.MOUNT} <= systemd.enabled & systemd.active
    kept = setup(host(tmp_path, bpffs_mounted=True))  # mounted now, by the unit
    assert units.MOUNT in units.installed() and not kept.changed


def test_the_agent_restarts_when_the_engine_changed_and_goes_after_the_purge(systemd, tmp_path):
    run = setup(host(tmp_path, agent=True))
    run.run_agent()
    assert systemd.ran[-2:] == ["enable " + AGENT, "start " + AGENT]
    same = setup(host(tmp_path, agent=True))
    same.run_agent()
    assert not same.changed
    newer = setup(host(tmp_path, agent=True, archive=b"zip2"))
    newer.run_agent()
    assert systemd.ran[-1] == "restart " + AGENT
    gone = setup(host(tmp_path, agent=False))
    gone.unit_gone(AGENT, (AGENT,), "agent")
    assert systemd.ran[-3:] == ["disable " + AGENT, "stop " + AGENT, "daemon-reload"]
    assert AGENT not in units.installed()


def test_a_file_that_is_not_root_0644_is_written_again(systemd, tmp_path):
    setup(host(tmp_path))
    path = units.path(RESTORE)
    units.os.chmod(path, 0o666)
    run = setup(host(tmp_path))
    assert run.parts["units"][0] == "wrote " + path and (units.os.stat(path).st_mode & 0o777) == 0o644


@pytest.mark.parametrize("requested, offered, chosen", [
    ("auto", ["evaluate_task", "score_adj"], "evaluate_task"),
    ("auto", ["score_adj"], "score_adj"),
    ("score_adj", ["evaluate_task", "score_adj"], "score_adj"),
    ("evaluate_task", ["score_adj"], "none"),
    ("auto", [], "none"),
])
def test_the_backend_is_the_one_asked_for_where_the_kernel_offers_it(requested, offered, chosen):
    info = {"backend": offered[0] if offered else "none", "backends": offered,
            "reasons": [] if offered else ["no BTF"]}
    backend, reasons = converge.choose_backend(requested, info)
    assert backend == chosen
    assert (reasons == []) == (chosen != "none"), reasons
    if requested != "auto" and chosen == "none":
        assert "backend evaluate_task is not among the backends this host has (score_adj)" in reasons


def test_the_agent_tells_systemd_it_is_ready_through_the_notify_socket(monkeypatch, tmp_path):
    """The agent's unit is Type=notify: systemctl start returns once the agent says READY=1
    (after its first sweep), so that verify right after finds it running."""
    import socket

    from ansible_collections.ebpf.oom.plugins.module_utils import agent
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listening:
        listening.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        agent.notify("READY=1")
        assert listening.recv(64) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    agent.notify("READY=1")  # not started by systemd: nothing to tell, and no error
    assert "Type=notify" in units.text(AGENT, engine_dir="/usr/lib/ebpf-oom")
