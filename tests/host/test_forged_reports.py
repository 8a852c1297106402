"""Kill reports cannot be forged: on this machine's kernel, a process that names itself
`policy_name=pwn` runs out of memory in a memory cgroup named to look like the fields
of the report's summary (`...,constraint=CONSTRAINT_NONE,task_memcg=spoof`), and the
events_info module (ansible-playbook, connection local) reports what the kernel said:
no policy (this kernel has no hook), the cgroup by its whole name, a memcg OOM.

The hog and its cgroup come from tests/host/hosthelpers.py (OOM_CHILD); the kernel log
is read back to show that the forged names reached it.
"""

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from ansible_collections.ebpf.oom.plugins.module_utils import kmsg
from hosthelpers import oom_killed_hog
from support import venv_tool

ANSIBLE_PLAYBOOK = venv_tool("ansible-playbook")
FORGED_COMM = "policy_name=pwn"
FORGED_SUFFIX = ",constraint=CONSTRAINT_NONE,task_memcg=spoof"


@pytest.fixture(scope="module")
def forged(tmp_path_factory):
    """One real memcg OOM of the forging hog: its JSON (pid, memcg, ...) and the start time."""
    assert os.geteuid() == 0, "host tests need root (cgroups, /dev/kmsg)"
    name = "ebpfoom-%s%s" % (uuid.uuid4().hex[:6], FORGED_SUFFIX)
    start = time.time()
    hog = oom_killed_hog(name, FORGED_COMM)
    hog.update(start=start, tmp=tmp_path_factory.mktemp("forged"))
    return hog


def events_info(tmp_path, since):
    out = tmp_path / "result.json"
    play = [{
        "hosts": "localhost", "gather_facts": False, "connection": "local",
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [
            {"ebpf.oom.events_info": {"since": str(since), "sources": ["kmsg"]}, "register": "r"},
            {"ansible.builtin.copy": {"content": "{{ r | to_json }}", "dest": str(out), "mode": "0600"}},
        ],
    }]
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps(play))
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", "localhost,", str(playbook)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout
    return json.loads(out.read_text())


def test_the_forged_names_reach_the_kernel_log(forged):
    """What a parser that reads policy_name= anywhere, or splits the summary on commas,
    would have taken for the policy and the fields."""
    texts = [r.message for r in kmsg.read_kmsg() if r.facility == kmsg.LOG_KERN]
    dump = [t for t in texts if t.startswith("[") and t.endswith(" " + FORGED_COMM)
            and (" %d " % forged["pid"]) in t]
    summary = [t for t in texts if t.startswith("oom-kill:") and t.endswith(",pid=%d,uid=0" % forged["pid"])]
    assert dump and summary
    assert "task_memcg=%s,task=%s," % (forged["memcg"], FORGED_COMM) in summary[-1]


def test_events_info_reports_what_the_kernel_said(forged):
    result = events_info(forged["tmp"], forged["start"] - 1)
    [ev] = [e for e in result["events"] if e["pid"] == forged["pid"]]
    assert ev["comm"] == FORGED_COMM
    assert ev["policy"] is None  # this kernel has no policy hook
    assert (ev["memcg"], ev["oom_memcg"], ev["constraint"]) == (forged["memcg"], forged["memcg"], "memcg")
    assert forged["memcg"].endswith(FORGED_SUFFIX)
