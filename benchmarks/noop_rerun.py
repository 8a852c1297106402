# Copyright: ebpf.oom contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a no-op rerun costs: the collection's tasks against Ansible's own, in one run.

Prints, in this order:
- payloads: the AnsiballZ payload each module ships (built here as ansible-core builds it,
  with recursive_finder: zipped bytes and the engine files in it), beside ansible.builtin.stat;
- policy: the wall time of a no-op rerun of a compile + pin + verify play, divided by a
  bare ansible.builtin.ping play (goal <= 1.5), and three pings over one for scale;
- with --role [NAME]: a no-op converge of the role ebpf.oom.NAME (default bpf_oom: the OOM
  observer, the metrics timer, and on a hook kernel a declarative policy and a C policy;
  a host-class role such as database_server: its own policy), the number of its tasks that
  reached the host (controller-only tasks such as assert and set_fact aside, counted as the
  VM tests count them), and its time divided by a play of as many ansible.builtin.stat
  tasks, run alternately (goal <= 1.25);
- with --fleet 1,10,50: the same role play over that many inventory aliases of the first
  host, one cold compiler cache each: the wall time per host, and how often clang ran
  (a counting clang first on PATH) against the number of distinct objects (each policy
  compiled once for the fleet, and the observer's two builds).

By default against this machine (localhost, connection local) with bpf/testing/counter.bpf.c
(tp_btf programs: any kernel with BTF); -i INVENTORY targets its hosts instead (e.g. a guest from
`molecule/vm/vmctl inventory`), --src another program (e.g. bpf/examples/select_target.bpf.c
with --global target_pid=1 on a hook kernel). Everything the plays load is removed at the end.
SSH plays run with pipelining on. Medians of --runs timed runs; figures only, no verdict
beyond "met"/"NOT met".
"""

import argparse
import datetime
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(REPO, "tests"), os.path.join(REPO, "tests", "vm")]
import vmharness  # noqa: E402  (the tests' count of the tasks that reach a host)

CALLBACKS = os.path.join(REPO, "tests", "vm", "callback_plugins")
NAME = "bench_noop"
GOAL = 1.5
ROLE_GOAL = 1.25
RECAP = re.compile(r"^\S+\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

# Counts OOM kills (tp_btf programs, any kernel with BTF); its text is sent as `content`.
PROGRAM = os.path.join(REPO, "bpf", "testing", "counter.bpf.c")
# The role's policies on a hook kernel: one declarative (the generic program decides) and
# one C policy beside it (tp_btf counters, no opinion): two distinct policies.
DOCUMENT = {"name": "bench_doc", "rules": [{"match": {"cgroup": "/bench.slice"}, "action": "prefer", "tier": 1}],
            "fallback": "kernel"}
# Logs each run, then runs the real clang (--fleet puts it first on PATH under its name).
CLANG_SHIM = """#!/bin/sh
echo "$*" >> %(log)s
exec %(real)s "$@"
"""


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


def role_play(hosts, policies, role="bpf_oom"):
    """The role's play; a host-class role (role != bpf_oom) brings its own policies."""
    settings = {"bpf_oom_on_unsupported": "skip", "bpf_oom_metrics": True,
                "bpf_oom_metrics_file": "/var/lib/ebpf-oom-bench/ebpf_oom.prom"}
    if role == "bpf_oom":
        settings["bpf_oom_policies"] = policies
    return [{"hosts": hosts, "gather_facts": False, "roles": [{"role": "ebpf.oom." + role, "vars": settings}]}]


def role_policies(absent=False):
    """The role's policies: a document and a C source (and, to remove, the host-class
    roles' own)."""
    entries = [{"name": DOCUMENT["name"], "policy": DOCUMENT},
               {"name": "bench_src", "src": PROGRAM}]
    names = [e["name"] for e in entries] + ["database", "batch", "containers"]
    return [{"name": name, "state": "absent"} for name in names] if absent else entries


def role_cleanup(hosts):
    """The role again, removing what it added (the policies, the observer, the timer)."""
    cleanup = role_play(hosts, role_policies(absent=True))
    cleanup[0]["roles"][0]["vars"].update(bpf_oom_observer=False, bpf_oom_metrics=False,
                                          bpf_oom_restore_at_boot=False)
    return cleanup


def collections_path():
    """A directory holding ansible_collections/ebpf/oom -> this checkout."""
    parts = REPO.split(os.sep)
    if parts[-3:-1] == ["ansible_collections", "ebpf"]:
        return os.sep.join(parts[:-3])
    root = tempfile.mkdtemp(prefix="ebpf-oom-bench-")
    os.makedirs(os.path.join(root, "ansible_collections", "ebpf"))
    os.symlink(REPO, os.path.join(root, "ansible_collections", "ebpf", "oom"))
    return root


def counted(argv, env):
    """(seconds, changed tasks, tasks that reached a host) of one playbook run, read through
    the tests' results_json callback."""
    env = dict(env, ANSIBLE_STDOUT_CALLBACK="results_json", ANSIBLE_CALLBACK_PLUGINS=CALLBACKS)
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        sys.exit("noop_rerun: %s failed:\n%s%s" % (" ".join(argv), done.stdout, done.stderr))
    played = vmharness.PlayResult(done, argv)
    return elapsed, len(played.changed), len(vmharness.host_tasks(played))


def run(argv, env):
    """(seconds, changed, tasks that ran: ok + changed over all hosts) of one playbook run."""
    start = time.monotonic()
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, env=env, check=False)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        sys.exit("noop_rerun: %s failed:\n%s" % (" ".join(argv), done.stdout))
    recap = RECAP.findall(done.stdout)
    return elapsed, sum(int(m[1]) for m in recap), sum(int(m[0]) for m in recap)


# ---------------------------------------------------------------- payloads

def payloads(collections):
    """[(module, zipped bytes, engine files)] of every module of the collection and of
    ansible.builtin.stat, built with ansible-core's recursive_finder."""
    from ansible._internal._ansiballz import _builder
    from ansible.executor import module_common
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

    _AnsibleCollectionFinder(paths=[collections])._install()
    import ansible.modules.stat
    folder = os.path.join(collections, "ansible_collections", "ebpf", "oom", "plugins", "modules")
    paths = [("ansible.builtin.stat", ansible.modules.stat.__file__)]
    paths += [("ebpf.oom." + f[:-3], os.path.join(folder, f)) for f in sorted(os.listdir(folder))
              if f.endswith(".py") and f != "__init__.py"]
    out = []
    for fqcn, path in paths:
        buf = io.BytesIO()
        with open(path, "rb") as f:
            data = f.read()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            module_common.recursive_finder(fqcn.rsplit(".", 1)[1], module_common._get_ansible_module_fqn(path),
                                           data, zf, datetime.datetime.now(datetime.timezone.utc),
                                           _builder.ExtensionManager.create(task_vars={}))
            zf.writestr("module.py", data)
            names = zf.namelist()
        engine = sorted(os.path.basename(n)[:-3] for n in names
                        if "/ebpf/oom/plugins/module_utils/" in n and not n.endswith("__init__.py"))
        out.append((fqcn, len(buf.getvalue()), engine))
    return out


def print_payloads(collections):
    rows = payloads(collections)
    base = rows[0][1]
    print("payloads (AnsiballZ, zipped, as ansible-core builds them):")
    for fqcn, size, engine in rows:
        print("  %-22s %7d bytes (%+6d vs stat)  engine: %s"
              % (fqcn, size, size - base, " ".join(engine) or "-"))


# ---------------------------------------------------------------- fleet

def host_vars(inventory, hosts, env):
    """The first matching host's connection variables (ansible-inventory)."""
    done = subprocess.run([tool("ansible-inventory"), "-i", inventory, "--list"], stdout=subprocess.PIPE,
                          universal_newlines=True, env=env, check=True)
    data = json.loads(done.stdout)
    pattern = [h for h in data["_meta"]["hostvars"] if hosts in ("all", h) or h.startswith(hosts)]
    if not pattern:
        sys.exit("noop_rerun: no host %r in %s" % (hosts, inventory))
    return data["_meta"]["hostvars"][sorted(pattern)[0]]


def aliases(work, hostvars, count):
    """An inventory of `count` aliases of one host (same address, port and key)."""
    path = os.path.join(work, "fleet-%d.json" % count)
    with open(path, "w") as f:
        json.dump({"all": {"hosts": dict(("alias%03d" % i, hostvars) for i in range(count))}}, f)
    return path


def clang_shim(work):
    """(directory to put first on PATH, log file) of a clang that logs each run."""
    # The clang the engine would pick (payloads() installed the collection loader).
    from ansible_collections.ebpf.oom.plugins.module_utils.compiler import find_clang
    real = find_clang()
    shim_dir, log = os.path.join(work, "clang-shim"), os.path.join(work, "clang-runs.log")
    os.makedirs(shim_dir)
    shim = os.path.join(shim_dir, os.path.basename(real))
    with open(shim, "w") as f:
        f.write(CLANG_SHIM % {"log": log, "real": real})
    os.chmod(shim, 0o755)
    return shim_dir, log


def clang_runs(log):
    """(compiles, preprocessings, version probes) logged since the log was cleared."""
    try:
        with open(log) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    compiles = sum(1 for line in lines if " -c " in " %s " % line)
    pre = sum(1 for line in lines if " -E " in " %s " % line)
    return compiles, pre, len(lines) - compiles - pre


def tool(name):
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.access(beside, os.X_OK) else name


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("-i", "--inventory", help="inventory (default: localhost, connection local)")
    ap.add_argument("--hosts", default="all", help="host pattern with -i (default: all)")
    ap.add_argument("--src", help="BPF C source (default: bpf/testing/counter.bpf.c)")
    ap.add_argument("--global", dest="globals_", action="append", default=[], metavar="NAME=INT",
                    help="a const volatile global of the program (repeatable)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs of each play (default 5)")
    ap.add_argument("--role", nargs="?", const="bpf_oom", metavar="NAME",
                    help="also time a no-op converge of ebpf.oom.NAME (default bpf_oom)")
    ap.add_argument("--no-policy", action="store_true", help="skip the compile + pin + verify play")
    ap.add_argument("--fleet", help="also time the role play over these numbers of aliases (1,10,50)")
    ap.add_argument("--forks", type=int, default=5, help="Ansible forks for --fleet (default 5)")
    args = ap.parse_args()

    collections = collections_path()
    print_payloads(collections)
    work = tempfile.mkdtemp(prefix="ebpf-oom-noop-rerun-")
    src = os.path.abspath(args.src) if args.src else PROGRAM
    globals_ = {k: int(v) for k, v in (g.split("=", 1) for g in args.globals_)}
    if args.inventory:
        hosts, inv = args.hosts, ["-i", args.inventory]
    else:
        hosts, inv = "localhost", ["-i", "localhost,", "-c", "local",
                                   "-e", "ansible_python_interpreter=/usr/bin/python3"]
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_NOCOLOR="1",
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_LOCALHOST_WARNING="False",
               ANSIBLE_PIPELINING="True")
    books = {}

    def book(key, data):
        books[key] = os.path.join(work, key + ".yml")
        with open(books[key], "w") as f:
            json.dump(data, f)  # JSON is YAML

    def cmd(key, inventory=None):
        return [tool("ansible-playbook")] + (["-i", inventory, "-f", str(args.forks)] if inventory else inv) \
            + [books[key]]

    book("policy", play(hosts, policy_tasks(src, globals_)))
    book("ping", play(hosts, [{"name": "ping", "ansible.builtin.ping": {}}]))
    book("ping3", play(hosts, [{"name": "ping%d" % i, "ansible.builtin.ping": {}} for i in range(3)]))
    book("remove", play(hosts, [{"name": "remove", "ebpf.oom.policy": {"name": NAME, "state": "absent"}}]))

    if not args.no_policy:
        try:
            first, changed, _n = run(cmd("policy"), env)
            print("first run (compile, load, pin, verify): %.2f s, %d changed" % (first, changed))
            noop, ping, ping3, noop_changed = [], [], [], 0
            for _i in range(args.runs):
                elapsed, changed, _n = run(cmd("policy"), env)
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

    if not (args.role or args.fleet):
        return
    name = args.role or "bpf_oom"
    book("role", role_play(hosts, role_policies(), name))
    book("role_cleanup", role_cleanup(hosts))
    try:
        first, changed, ran = counted(cmd("role"), env)
        print("role %s, first converge: %.2f s, %d tasks reached the host, %d changed" % (name, first, ran, changed))
        if args.role:
            role_ratio(args, cmd, book, hosts, env)
        if args.fleet:
            fleet(args, cmd, book, hosts, env, work)
    finally:
        run(cmd("role_cleanup"), env)
        shutil.rmtree(work, ignore_errors=True)


def role_ratio(args, cmd, book, hosts, env):
    """The no-op converge against as many ansible.builtin.stat tasks, alternately."""
    noop, stat, changed_total, ran = [], [], 0, None
    for _i in range(args.runs):
        elapsed, changed, tasks = counted(cmd("role"), env)
        noop.append(elapsed)
        changed_total += changed
        if ran is None:
            ran = tasks
            book("stat", play(hosts, [{"name": "stat%d" % i, "ansible.builtin.stat": {"path": "/"}}
                                      for i in range(ran)]))
        stat.append(run(cmd("stat"), env)[0])
    noop_s, stat_s = statistics.median(noop), statistics.median(stat)
    ratio = noop_s / stat_s
    print("role %s, no-op converge: median %.2f s of %d runs, %d tasks reached the host, %d changed in total"
          % (args.role, noop_s, args.runs, ran, changed_total))
    print("%d ansible.builtin.stat tasks: median %.2f s of %d runs" % (ran, stat_s, args.runs))
    print("role ratio: %.2f (goal <= %.2f: %s)" % (ratio, ROLE_GOAL, "met" if ratio <= ROLE_GOAL else "NOT met"))


def fleet(args, cmd, book, hosts, env, work):
    """The role play over N aliases of one host, each with a cold compiler cache."""
    hostvars = host_vars(args.inventory, hosts, env) if args.inventory else \
        {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}
    shim_dir, log = clang_shim(work)
    name = args.role or "bpf_oom"
    book("fleet", role_play("all", role_policies(), name))
    # the policies (the generic program, counter.bpf.c; a host-class role: the generic program)
    # and the observer's two builds
    distinct = (2 if name == "bpf_oom" else 1) + 2
    print("fleet (the role play over N aliases of one host, forks %d, a cold compiler cache each):"
          % args.forks)
    per_host = []
    for count in [int(n) for n in args.fleet.split(",")]:
        cache = os.path.join(work, "cache-%d" % count)
        os.makedirs(cache)
        if os.path.exists(log):
            os.unlink(log)
        fleet_env = dict(env, EBPF_OOM_CACHE=cache, PATH=shim_dir + os.pathsep + env.get("PATH", ""))
        elapsed, changed, ran = run(cmd("fleet", aliases(work, hostvars, count)), fleet_env)
        compiles, pre, probes = clang_runs(log)
        per_host.append(elapsed / count)
        print("  %3d hosts: %7.1f s, %.2f s per host, %d tasks ran, %d changed; clang: %d compiles "
              "(%d distinct objects), %d preprocessings, %d version probes"
              % (count, elapsed, elapsed / count, ran, changed, compiles, distinct, pre, probes))
    spread = (max(per_host) - min(per_host)) / min(per_host)
    print("  per-host time spread: %.0f %% (goal: flat within 15 %%)" % (100 * spread))


if __name__ == "__main__":
    main()
