# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wall time of a no-op rerun of a playbook that compiles, pins and verifies one policy,
divided by a bare ansible.builtin.ping play against the same host in the same run
(goal <= 1.5).

By default against this machine (localhost, connection local) with bpf/testing/counter.bpf.c
(tp_btf programs: any kernel with BTF); -i INVENTORY targets its hosts instead (e.g. a guest from
`molecule/vm/vmctl inventory`), --src another program (e.g. bpf/examples/select_target.bpf.c
with --global target_pid=1 on a hook kernel). The policy (bench_noop) is removed at the end.
Prints the median of --runs timed runs of each play and their ratio, and, for scale, the
ratio of a play with three ping tasks to the one-ping play (Ansible's own per-task cost).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
NAME = "bench_noop"
GOAL = 1.5
RECAP = re.compile(r"^\S+\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

# Counts OOM kills (tp_btf programs, any kernel with BTF); its text is sent as `content`.
PROGRAM = os.path.join(REPO, "bpf", "testing", "counter.bpf.c")


def play(hosts, tasks):
    return [{"hosts": hosts, "gather_facts": False, "tasks": tasks}]


def policy_tasks(src, globals_):
    return [
        {"name": "compile", "ebpf.oom.compile": {
            "content": "{{ lookup('ansible.builtin.file', %s) }}" % json.dumps(src),
            "policy_name": NAME}, "register": "compiled"},
        {"name": "pin", "ebpf.oom.policy": {
            "name": NAME, "object": "{{ compiled.object }}", "globals": globals_, "persist": False}},
        {"name": "verify", "ebpf.oom.verify": {
            "name": NAME, "object": "{{ compiled.object }}", "policy_name": NAME}},
    ]


def collections_path():
    """A directory holding ansible_collections/ebpf/oom -> this checkout."""
    parts = REPO.split(os.sep)
    if parts[-3:-1] == ["ansible_collections", "ebpf"]:
        return os.sep.join(parts[:-3])
    root = tempfile.mkdtemp(prefix="ebpf-oom-bench-")
    os.makedirs(os.path.join(root, "ansible_collections", "ebpf"))
    os.symlink(REPO, os.path.join(root, "ansible_collections", "ebpf", "oom"))
    return root


def run(argv, env):
    start = time.monotonic()
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, env=env, check=False)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        sys.exit("noop_rerun: %s failed:\n%s" % (" ".join(argv), done.stdout))
    changed = sum(int(m[0]) for m in RECAP.findall(done.stdout))
    return elapsed, changed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("-i", "--inventory", help="inventory (default: localhost, connection local)")
    ap.add_argument("--hosts", default="all", help="host pattern with -i (default: all)")
    ap.add_argument("--src", help="BPF C source (default: bpf/testing/counter.bpf.c)")
    ap.add_argument("--global", dest="globals_", action="append", default=[], metavar="NAME=INT",
                    help="a const volatile global of the program (repeatable)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs of each play (default 5)")
    args = ap.parse_args()

    playbook_bin = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    if not os.access(playbook_bin, os.X_OK):
        playbook_bin = "ansible-playbook"
    work = tempfile.mkdtemp(prefix="ebpf-oom-noop-rerun-")
    src = os.path.abspath(args.src) if args.src else PROGRAM
    globals_ = {k: int(v) for k, v in (g.split("=", 1) for g in args.globals_)}
    if args.inventory:
        hosts, inv = args.hosts, ["-i", args.inventory]
    else:
        hosts, inv = "localhost", ["-i", "localhost,", "-c", "local",
                                   "-e", "ansible_python_interpreter=/usr/bin/python3"]
    books = {}
    for key, tasks in (("policy", policy_tasks(src, globals_)),
                       ("ping", [{"name": "ping", "ansible.builtin.ping": {}}]),
                       ("ping3", [{"name": "ping%d" % i, "ansible.builtin.ping": {}} for i in range(3)]),
                       ("remove", [{"name": "remove", "ebpf.oom.policy": {"name": NAME, "state": "absent"}}])):
        books[key] = os.path.join(work, key + ".yml")
        with open(books[key], "w") as f:
            json.dump(play(hosts, tasks), f)  # JSON is YAML
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(), ANSIBLE_NOCOLOR="1",
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_LOCALHOST_WARNING="False")

    def cmd(book):
        return [playbook_bin] + inv + [books[book]]

    try:
        first, changed = run(cmd("policy"), env)
        print("first run (compile, load, pin, verify): %.2f s, %d changed" % (first, changed))
        noop, ping, ping3, noop_changed = [], [], [], 0
        for _i in range(args.runs):
            elapsed, changed = run(cmd("policy"), env)
            noop.append(elapsed)
            noop_changed += changed
            ping.append(run(cmd("ping"), env)[0])
            ping3.append(run(cmd("ping3"), env)[0])
    finally:
        run(cmd("remove"), env)
    noop_s, ping_s = statistics.median(noop), statistics.median(ping)
    ratio = noop_s / ping_s
    print("no-op rerun (compile, pin, verify): median %.2f s of %d runs, %d changed in total"
          % (noop_s, args.runs, noop_changed))
    print("bare ansible.builtin.ping play: median %.2f s of %d runs" % (ping_s, args.runs))
    print("ratio: %.2f (goal <= %.1f: %s)" % (ratio, GOAL, "met" if ratio <= GOAL else "NOT met"))
    # Ansible's own cost of three tasks: the ratio no three-task playbook gets below.
    print("floor, three ping tasks / one: median %.2f s, ratio %.2f"
          % (statistics.median(ping3), statistics.median(ping3) / ping_s))


if __name__ == "__main__":
    main()
