"""A fleet's playbook logs in as a user and becomes root (the project's other tests log in
as root). The generic program that the action plugins of ebpf.oom.policy and
ebpf.oom.explain send lands in that user's temporary directory, owned by that user; the
modules, run as root, trust it by the sha256 the controller sent (object_sha256) and load
a private copy. Without it, an object owned by someone other than root is refused (the
loader's trust check, which explain now makes too).

The session's stock guest has no sudo: the user becomes root with su and root's password,
set for the test and put back as it was after it.
"""

import secrets

from vmharness import play

USER = "ebpf-fleet"


def test_a_user_who_becomes_root_applies_explains_and_removes_a_document(stock_vm, tmp_path):
    guest = stock_vm
    shadow = guest.ssh(["getent", "shadow", "root"]).stdout.split(":")[1]
    password = secrets.token_hex(16)
    guest.ssh(["useradd", "--create-home", "--shell", "/bin/sh", USER])
    try:
        guest.ssh(["install", "-d", "-o", USER, "-g", USER, "-m", "0700", "/home/%s/.ssh" % USER])
        guest.ssh(["install", "-o", USER, "-g", USER, "-m", "0600", "/root/.ssh/authorized_keys",
                   "/home/%s/.ssh/authorized_keys" % USER])
        guest.ssh(["chpasswd"], input="root:%s\n" % password)
        document = {"name": "fleet", "rules": [{"match": {"comm": "fleet-none"}, "action": "prefer",
                                                "tier": 1}]}
        played = play(guest, [
            {"name": "who", "ansible.builtin.command": {"argv": ["id", "-u"]}, "become": False},
            {"name": "apply", "ebpf.oom.policy": {"policy": document, "persist": False}},
            {"name": "explain", "ebpf.oom.explain": {"name": "fleet"}},
            {"name": "remove", "ebpf.oom.policy": {"name": "fleet", "state": "absent"}},
        ], tmp_path, become=True, check=False,
            extra_vars={"ansible_user": USER, "ansible_become_method": "su",
                        "ansible_become_password": password})
        assert played.rc == 0 and played.failed == [], played
        assert played["who"]["stdout"] != "0", played["who"]  # logged in as the user
        applied = played["apply"]
        assert applied["changed"] and applied["record"]["name"] == "fleet", applied
        assert played["explain"]["policy"] == "fleet", played["explain"]
        assert played["remove"]["changed"], played["remove"]
    finally:
        guest.ssh(["usermod", "--password", shadow, "root"], check=False)
        guest.ssh(["pkill", "-KILL", "-u", USER], check=False)
        guest.ssh(["userdel", "--remove", USER], check=False)
