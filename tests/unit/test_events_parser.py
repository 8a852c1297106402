"""The OOM event parser, merger and metrics renderer (plugins/module_utils/kmsg.py,
observer.py, events.py, metrics.py, cgroups.py).

The kernel-log samples are the records a 6.18 kernel wrote for a memcg OOM on a
test host (call trace and memory statistics shortened), plus the hook kernel's
`policy_name=`.
"""

import ctypes
import os
import re
import stat

import pytest
from hypothesis import given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.ebpf.oom.plugins.module_utils import cgroups, events, kmsg, metrics, observer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MEMCG_REPORT = [
    b"4,341,490932472,-;python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n",
    b"4,342,490932511,-;CPU: 1 UID: 0 PID: 6684 Comm: python3 Not tainted 6.18.44 #1 PREEMPT(none) \n",
    b"4,343,490932533,-;Call Trace:\n",
    b"4,346,490933602,-; dump_header+0x43/0x1c0\n",
    b"4,349,490933869,-; mem_cgroup_out_of_memory+0xc0/0x110\n",
    b"6,360,490935000,-;memory: usage 65536kB, limit 65536kB, failcnt 37\n",
    b"6,414,490936512,-;Tasks state (memory values in pages):\n",
    b"6,415,490936734,-;[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem "
    b"pgtables_bytes swapents oom_score_adj name\n",
    b"6,416,490936736,-;[   6684]     0  6684    18790    17978    16320     1658         0   "
    b"192512        0             0 python3\n",
    b"6,417,490936747,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
    b"oom_memcg=/obs_probe,task_memcg=/obs_probe,task=python3,pid=6684,uid=0\n",
    b"3,418,490936768,-;Memory cgroup out of memory: Killed process 6684 (python3) total-vm:75160kB, "
    b"anon-rss:65280kB, file-rss:6632kB, shmem-rss:0kB, UID:0 pgtables:188kB oom_score_adj:0\n",
]


def rec(seq, sec, text, prio=6):
    return ("%d,%d,%d,-;%s\n" % (prio, seq, int(sec * 1e6), text)).encode()


def global_report(seq, sec, pid, comm, policy="protect_db", adj=0):
    """A global OOM report of the hook kernel (policy_name= on the header line)."""
    return [
        rec(seq, sec, "stress invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), "
                      "order=0, oom_score_adj=0, policy_name=%s" % policy, 4),
        rec(seq + 1, sec + 0.001, "Mem-Info:"),
        rec(seq + 2, sec + 0.002, "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,"
                                  "mems_allowed=0,global_oom,task_memcg=/system.slice/app.service,"
                                  "task=%s,pid=%d,uid=1000" % (comm, pid)),
        rec(seq + 3, sec + 0.003, "Out of memory: Killed process %d (%s) total-vm:2097152kB, "
                                  "anon-rss:1048576kB, file-rss:512kB, shmem-rss:0kB, UID:1000 "
                                  "pgtables:2100kB oom_score_adj:%d" % (pid, comm, adj), 3),
    ]


def parse(lines):
    return kmsg.parse_oom_reports(kmsg.parse_kmsg_lines(lines))


# ---- the kernel log ----

def test_memcg_report_names_victim_cgroup_and_rss():
    [ev] = parse(MEMCG_REPORT)
    assert (ev["pid"], ev["comm"], ev["uid"]) == (6684, "python3", 0)
    assert ev["constraint"] == "memcg"
    assert ev["memcg"] == ev["oom_memcg"] == "/obs_probe"
    assert (ev["anon_rss_kb"], ev["file_rss_kb"], ev["shmem_rss_kb"]) == (65280, 6632, 0)
    assert ev["rss_kb"] == 65280 + 6632
    assert ev["total_vm_kb"] == 75160 and ev["oom_score_adj"] == 0
    assert ev["invoker"] == "python3" and ev["policy"] is None
    assert ev["sources"] == ["kmsg"] and ev["kmsg_seq"] == 418
    assert ev["monotonic"] == pytest.approx(490.936768)


def test_policy_name_on_header_line_names_the_policy():
    [ev] = parse(global_report(10, 100.0, 4242, "stress", policy="protect_db", adj=500))
    assert ev["policy"] == "protect_db"
    assert (ev["pid"], ev["comm"], ev["oom_score_adj"]) == (4242, "stress", 500)
    assert ev["constraint"] == "global" and ev["oom_memcg"] is None
    assert ev["memcg"] == "/system.slice/app.service"


def test_policy_name_is_read_from_the_header_line_only():
    """A process named `policy_name=pwn` shows in the task dump, which ends with the name."""
    lines = list(MEMCG_REPORT)
    lines.insert(-2, b"6,416,490936737,-;[   6690]     0  6690    18790    17978    16320     1658   "
                     b"      0   192512        0             0 policy_name=pwn\n")
    lines.insert(1, b"6,340,490932480,-;policy_name=pwn\n")
    [ev] = parse(lines)
    assert ev["policy"] is None


def test_policy_name_is_what_ends_the_header_line():
    [ev] = parse(global_report(10, 100.0, 4242, "stress", policy="a,b c=d"))
    assert ev["policy"] == "a,b c=d"


FORGED_CGROUP = "/a,constraint=CONSTRAINT_NONE,task_memcg=spoof"


def forged_memcg_report(comm="policy_name=pwn", cgroup=FORGED_CGROUP, pid=6684):
    """A memcg OOM of a process that chose its name and made its cgroup to spoof the report."""
    return [
        rec(1, 1.0, "%s invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0" % comm, 4),
        rec(2, 1.001, "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes "
                      "swapents oom_score_adj name"),
        rec(3, 1.002, "[   %d]     0  %d    18790    17978    16320     1658         0   192512        0"
                      "             0 %s" % (pid, pid, comm)),
        rec(4, 1.003, "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
                      "oom_memcg=%s,task_memcg=%s,task=%s,pid=%d,uid=0" % (cgroup, cgroup, comm, pid)),
        rec(5, 1.004, "Memory cgroup out of memory: Killed process %d (%s) total-vm:75160kB, anon-rss:65280kB, "
                      "file-rss:6632kB, shmem-rss:0kB, UID:0 pgtables:188kB oom_score_adj:0" % (pid, comm), 3),
    ]


def test_forged_name_and_cgroup_are_reported_as_the_kernel_printed_them():
    [ev] = parse(forged_memcg_report())
    assert ev["policy"] is None
    assert (ev["pid"], ev["comm"], ev["invoker"]) == (6684, "policy_name=pwn", "policy_name=pwn")
    assert ev["constraint"] == "memcg"
    assert ev["memcg"] == ev["oom_memcg"] == FORGED_CGROUP


@pytest.mark.parametrize("comm", ["x,task=y", "a,pid=1,uid=0", "z,task_memcg=/", ",oom_memcg=/"])
def test_comm_that_looks_like_summary_fields_does_not_move_them(comm):
    [ev] = parse(forged_memcg_report(comm=comm, cgroup="/b"))
    assert (ev["comm"], ev["memcg"], ev["oom_memcg"], ev["uid"]) == (comm, "/b", "/b", 0)


@pytest.mark.parametrize("cgroup", ["/a,task_memcg=/x", "/a,task=b,pid=1,uid=5", "/a/b,oom_memcg=/c",
                                    "/c,global_oom,task_memcg=/d", "/a,cpuset=/,mems_allowed=0"])
def test_cgroup_that_looks_like_summary_fields_does_not_move_them(cgroup):
    [ev] = parse(forged_memcg_report(comm="hog", cgroup=cgroup))
    assert (ev["memcg"], ev["oom_memcg"], ev["constraint"], ev["uid"]) == (cgroup, cgroup, "memcg", 0)


def test_summary_that_can_be_read_two_ways_names_no_cgroup():
    """The OOM in /x and the task in /x/q,task_memcg=/x,task_memcg=/x/q/r, or the OOM in
    /x,task_memcg=/x/q and the task in /x,task_memcg=/x/q/r: the report cannot say which."""
    text = ("constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/x,"
            "task_memcg=/x/q,task_memcg=/x,task_memcg=/x/q/r,task=hog,pid=7,uid=0")
    fields = kmsg.summary_fields(text, "hog")
    assert fields == {"constraint": "CONSTRAINT_MEMCG", "pid": 7, "uid": 0, "cpuset": "/", "task": "hog"}


def test_cpuset_name_that_looks_like_summary_fields_does_not_move_them():
    """The cpuset field names the invoker's cpuset cgroup (a name: no '/')."""
    text = ("constraint=CONSTRAINT_NONE,nodemask=0-1,cpuset=c,mems_allowed=0,oom_memcg=,"
            "mems_allowed=0-1,global_oom,task_memcg=/s/t,task=hog,pid=7,uid=1000")
    assert kmsg.summary_fields(text, "hog") == {
        "constraint": "CONSTRAINT_NONE", "pid": 7, "uid": 1000, "task": "hog",
        "cpuset": "c,mems_allowed=0,oom_memcg=", "oom_memcg": None, "task_memcg": "/s/t"}


def test_summary_of_a_kernel_without_cpusets_is_read():
    text = "constraint=CONSTRAINT_NONE,nodemask=(null),global_oom,task_memcg=/s,task=a,pid=3,uid=2"
    assert kmsg.summary_fields(text) == {"constraint": "CONSTRAINT_NONE", "pid": 3, "uid": 2, "task": "a",
                                         "cpuset": None, "oom_memcg": None, "task_memcg": "/s"}


def test_summary_that_is_no_summary_gives_what_its_ends_say():
    assert kmsg.summary_fields("constraint=CONSTRAINT_MEMCG,nodemask=(null),junk") == \
        {"constraint": "CONSTRAINT_MEMCG"}
    assert kmsg.summary_fields("junk,task=a,pid=3,uid=2") == {"pid": 3, "uid": 2}


def test_summary_split_by_pr_cont_and_interleaved_records_is_joined():
    lines = MEMCG_REPORT[:-2] + [
        b"6,417,490936747,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null)\n",
        b"6,418,490936750,-;e1000e 0000:00:19.0 eth0: NIC Link is Up 1000 Mbps Full Duplex\n",
        b"6,419,490936751,-;,cpuset=/,mems_allowed=0,oom_memcg=/a/b,task_memcg=/a/b/c\n",
        b"6,420,490936752,-;,task=python3,pid=6684,uid=0\n",
        b"6,421,490936760,-;audit: type=1400 apparmor=\"DENIED\"\n",
        MEMCG_REPORT[-1].replace(b"3,418,", b"3,422,"),
    ]
    [ev] = parse(lines)
    assert (ev["oom_memcg"], ev["memcg"]) == ("/a/b", "/a/b/c")
    assert ev["constraint"] == "memcg" and ev["comm"] == "python3"


def test_truncated_killed_line_keeps_pid_and_takes_comm_from_summary():
    lines = MEMCG_REPORT[:-1] + [b"3,418,490936768,-;Memory cgroup out of memory: Killed process 6684 (pyth"]
    [ev] = parse(lines)
    assert ev["pid"] == 6684 and ev["comm"] == "python3"
    assert ev["rss_kb"] is None and ev["oom_score_adj"] is None


def test_truncated_killed_line_fields_are_the_ones_printed():
    [ev] = parse([rec(1, 5, "Out of memory: Killed process 77 (a) total-vm:100kB, anon-rss:40kB, fi", 3)])
    assert (ev["pid"], ev["comm"], ev["total_vm_kb"], ev["anon_rss_kb"]) == (77, "a", 100, 40)
    assert ev["file_rss_kb"] is None and ev["rss_kb"] == 40


def test_comm_with_parentheses_and_spaces_is_kept_whole():
    [ev] = parse(global_report(1, 1.0, 9, "x) (y z"))
    assert ev["comm"] == "x) (y z"


def test_killed_line_without_report_has_no_policy():
    """The kernel rate-limits the report but always prints the kill."""
    lines = global_report(1, 10.0, 100, "first") + [
        rec(20, 100.0, "Out of memory: Killed process 200 (second) total-vm:1kB, anon-rss:1kB, "
                       "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0", 3)]
    first, second = parse(lines)
    assert first["policy"] == "protect_db" and second["policy"] is None
    assert second["pid"] == 200 and second["memcg"] is None and second["invoker"] is None


def test_report_without_kill_does_not_lend_its_policy():
    lines = [rec(1, 1.0, "a invoked oom-killer: gfp_mask=0x0(), order=0, oom_score_adj=0, policy_name=nextall", 4),
             rec(2, 1.1, "Out of memory and no killable processes...", 4),
             rec(3, 1.2, "Memory cgroup out of memory: Killed process 5 (b) total-vm:1kB, anon-rss:1kB, "
                         "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0", 3)]
    [ev] = parse(lines)
    assert ev["pid"] == 5 and ev["policy"] is None


def test_report_whose_kill_line_was_lost_does_not_name_a_much_later_kill():
    lines = global_report(1, 10.0, 100, "first")[:-1] + [
        rec(20, 10.0 + kmsg.REPORT_SPAN_S + 1, "Out of memory: Killed process 200 (second) total-vm:1kB", 3)]
    [ev] = parse(lines)
    assert (ev["pid"], ev["policy"], ev["memcg"], ev["invoker"]) == (200, None, None, None)


def test_oom_group_kills_share_the_report():
    lines = MEMCG_REPORT[:-1] + [
        b"6,418,490936760,-;Tasks in /obs_probe are going to be killed due to memory.oom.group set\n",
        MEMCG_REPORT[-1].replace(b"3,418,", b"3,419,"),
        b"3,420,490936800,-;Memory cgroup out of memory: Killed process 6690 (worker) total-vm:10kB, "
        b"anon-rss:5kB, file-rss:1kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0\n",
    ]
    first, second = parse(lines)
    assert (first["pid"], first["memcg"]) == (6684, "/obs_probe")
    assert (second["pid"], second["comm"], second["oom_memcg"]) == (6690, "worker", "/obs_probe")
    assert second["memcg"] is None  # the summary named the first victim only
    assert second["invoker"] == "python3"


def test_user_space_records_cannot_fake_kills():
    """Facility 1 (user): `echo ... > /dev/kmsg` from a process."""
    fake = "Out of memory: Killed process 1 (init) total-vm:1kB, anon-rss:1kB"
    assert parse([rec(1, 1.0, fake, prio=(1 << 3) | 3)]) == []


def test_kmsg_record_text_stops_before_continuation_lines():
    r = kmsg.parse_kmsg_record(b"3,7,1500000,-;usb 1-1: reset\n SUBSYSTEM=usb\n DEVICE=c189:1\n")
    assert (r.facility, r.level, r.seq, r.usec, r.message) == (0, 3, 7, 1500000, "usb 1-1: reset")


@pytest.mark.parametrize("line", [b"", b"no header", b"x,1,2,-;text", b"6,1;text", b"6,-1,5,-;t", b"\xff\xfe;"])
def test_malformed_kmsg_records_are_dropped(line):
    assert kmsg.parse_kmsg_record(line) is None


KNOWN_LINES = [r.decode() for r in MEMCG_REPORT] + [r.decode() for r in global_report(500, 600.0, 42, "s")]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=30))
def test_arbitrary_bytes_never_crash_the_parser(chunks):
    for ev in parse(chunks):
        assert isinstance(ev["pid"], int)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KNOWN_LINES), st.integers(0, 400), st.text(max_size=20)),
                max_size=40))
def test_cut_and_shuffled_report_lines_never_crash_the_parser(pieces):
    """Real report lines, cut anywhere, with junk appended, in any order."""
    lines = [line[:cut] + junk for line, cut, junk in pieces]
    for ev in parse(lines):
        assert isinstance(ev["pid"], int) and set(ev) == set(kmsg.EVENT_KEYS)


# ---- the observer's records ----

def observer_victim(seq, pid, comm, mono_s, flags=observer.OBSERVER_F_TASK, memcg_id=55):
    return observer.ObserverVictim(seq=seq, mono_ns=int(mono_s * 1e9), memcg_id=memcg_id, anon_rss=10,
                                   file_rss=2, shmem_rss=0, pid=pid, tgid=pid, uid=1000, oom_score_adj=300,
                                   flags=flags, comm=comm.encode())


def test_observer_victim_becomes_event_in_kib():
    ev = observer.victim_event(observer_victim(3, 321, "hog", 12.5), page_kb=4)
    assert (ev["pid"], ev["comm"], ev["uid"], ev["oom_score_adj"]) == (321, "hog", 1000, 300)
    assert (ev["anon_rss_kb"], ev["file_rss_kb"], ev["rss_kb"]) == (40, 8, 48)
    assert (ev["memcg_id"], ev["observer_seq"], ev["sources"]) == (55, 3, ["observer"])
    assert ev["monotonic"] == 12.5


def test_pid_only_observer_victim_claims_nothing_else():
    """Kernels before 6.9 pass the pid only: the rest of the slot is not data."""
    ev = observer.victim_event(observer_victim(1, 321, "", 1.0, flags=0), page_kb=4)
    assert ev["pid"] == 321
    assert ev["comm"] is None and ev["rss_kb"] is None and ev["memcg_id"] is None


def test_merge_pairs_observer_and_kernel_log_records_of_one_kill():
    [kev] = parse(MEMCG_REPORT)
    obs = observer.victim_event(observer_victim(1, 6684, "python3", 490.9367), page_kb=4)
    other = observer.victim_event(observer_victim(2, 6684, "python3", 900.0), page_kb=4)
    merged = events.merge([kev], [obs, other])
    assert [e["sources"] for e in merged] == [["kmsg", "observer"], ["observer"]]
    assert merged[0]["memcg"] == "/obs_probe" and merged[0]["memcg_id"] == 55
    assert merged[0]["observer_seq"] == 1 and merged[0]["kmsg_seq"] == 418
    assert merged[0]["rss_kb"] == 65280 + 6632  # the kernel log's figure wins


def test_since_and_policy_filters():
    evs = parse(global_report(1, 100.0, 1, "a", policy="p1") + global_report(10, 200.0, 2, "b", policy="p2"))
    events.set_wall_time(evs, now=10000.0, mono_now=300.0)
    assert [e["timestamp"] for e in evs] == [pytest.approx(9800.003), pytest.approx(9900.003)]
    assert evs[0]["time"] == "1970-01-01T02:43:20.003000Z"
    assert [e["pid"] for e in events.filter_events(evs, since=9850.0)] == [2]
    assert [e["pid"] for e in events.filter_events(evs, policies=["p1"])] == [1]
    assert events.filter_events(evs, since=9850.0, policies=["p1"]) == []


@pytest.mark.parametrize("since,expected", [
    ("90s", 910.0), ("15m", 100.0), ("0.5h", -800.0), ("1d", 1000.0 - 86400), (500, 500.0), ("750.5", 750.5),
    ("1970-01-01T00:05:00Z", 300.0), ("1970-01-01T01:05:00+01:00", 300.0), ("1970-01-01 00:05:00", 300.0),
])
def test_since_accepts_durations_unix_seconds_and_iso_times(since, expected):
    assert events.parse_since(since, now=1000.0) == pytest.approx(expected)


def test_since_rejects_garbage_with_the_accepted_forms():
    with pytest.raises(ValueError, match="duration .*ISO 8601"):
        events.parse_since("yesterday")


# ---- metrics ----

def samples_of(text):
    return dict(((s.name, tuple(sorted(s.labels.items()))), s.value)
                for family in text_string_to_metric_families(text) for s in family.samples)


def kills_of(samples):
    return dict((labels, v) for (name, labels), v in samples.items() if name == "ebpf_oom_kills_total")


def test_metrics_count_kills_by_policy_rule_and_cut_cgroup_for_prometheus():
    evs = (parse(global_report(1, 1.0, 1, "a", policy="p1")) + parse(global_report(10, 2.0, 2, "b", policy="p1"))
           + parse(MEMCG_REPORT))
    evs.append(observer.victim_event(observer_victim(9, 9, "x", 3.0, flags=0), page_kb=4))
    events.set_wall_time(evs, now=1000.0, mono_now=1000.0)
    rules = {"p1": {"/system.slice": 1, "/batch.slice": 0}}
    state = metrics.count_kills(evs, None, "boot1", rules)
    samples = samples_of(metrics.metrics_text(state, {"loaded": True, "kills": 7}))
    assert kills_of(samples) == {
        (("cgroup", "/system.slice"), ("policy", "p1"), ("rule", "/system.slice")): 2,
        (("cgroup", "/obs_probe"), ("policy", "unknown"), ("rule", "unknown")): 1,
        (("cgroup", "unknown"), ("policy", "unknown"), ("rule", "unknown")): 1,
    }
    assert samples[("ebpf_oom_observer_kills_total", ())] == 7
    assert samples[("ebpf_oom_observer_loaded", ())] == 1
    last = samples[("ebpf_oom_last_kill_timestamp_seconds",
                    (("cgroup", "/system.slice"), ("policy", "p1"), ("rule", "/system.slice")))]
    assert last == pytest.approx(2.003, abs=1e-3)


def test_a_pod_per_cgroup_adds_no_series():
    """1000 kills in 1000 pods' cgroups: one series (the QoS slice), whatever the depth of
    the pods' paths; the deepest rule that holds the victim names it."""
    pods = []
    for i in range(1000):
        ev = parse(global_report(1 + 10 * i, 1.0 + i, 100 + i, "app", policy="k8s"))[0]
        ev["memcg"] = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod%04x.slice/cri-%d.scope" % (i, i)
        pods.append(ev)
    events.set_wall_time(pods, now=5000.0, mono_now=5000.0)
    rules = {"k8s": {"/kubepods.slice": 1, "/kubepods.slice/kubepods-burstable.slice": 1}}
    state = metrics.count_kills(pods, None, "boot1", rules)
    assert state["totals"] == {'["k8s", "/kubepods.slice/kubepods-burstable.slice", "/kubepods.slice"]': 1000}
    deeper = metrics.count_kills(pods, None, "boot1", rules, depth=2)
    assert list(deeper["totals"].values()) == [1000]


@pytest.mark.parametrize("path,depth,cut", [
    ("/a/b/c", 1, "/a"), ("/a/b/c", 2, "/a/b"), ("/a/b/c", 0, "/"), ("/a", 5, "/a"), ("/", 1, "/"),
    (None, 1, "unknown")])
def test_cgroup_labels_are_cut_to_the_depth(path, depth, cut):
    assert metrics.cut(path, depth) == cut


@pytest.mark.parametrize("memcg,rule", [
    ("/batch.slice/job-1.scope", "/batch.slice"), ("/batch.slice", "/batch.slice"),
    ("/batch.slice/low/job", "/batch.slice/low"), ("/batch.slicex", "/"), ("/other", "/"),
    (None, "unknown")])
def test_the_deepest_rule_that_holds_the_victim_names_it(memcg, rule):
    assert metrics.covering_rule(memcg, ["/", "/batch.slice", "/batch.slice/low"]) == rule
    assert metrics.covering_rule("/other", ["/batch.slice"]) == "none"


def test_kill_counts_survive_the_kernel_log_scrolling_away():
    first = parse(global_report(1, 10.0, 1, "a", policy="p1"))
    second = parse(global_report(10, 20.0, 2, "b", policy="p1"))
    state = metrics.count_kills(first + second, None, "boot1")
    state = metrics.count_kills(second, state, "boot1")  # the first report is gone
    state = metrics.count_kills([], state, "boot1")      # and the second
    third = parse(global_report(20, 30.0, 3, "c", policy="p1"))
    state = metrics.count_kills(third, state, "boot1")
    assert state["totals"] == {'["p1", "none", "/system.slice"]': 3}


def test_a_kill_counts_once_whichever_source_still_has_it():
    [kev] = parse(MEMCG_REPORT)
    obs = observer.victim_event(observer_victim(1, 6684, "python3", 490.9367), page_kb=4)
    state = metrics.count_kills([kev], None, "boot1")                   # the log only, first
    state = metrics.count_kills(events.merge([kev], [obs]), state, "boot1")  # then both
    state = metrics.count_kills([obs], state, "boot1")                  # then the observer only
    assert state["totals"] == {'["unknown", "unknown", "/obs_probe"]': 1}


def test_kill_counts_restart_at_boot_from_a_broken_state_and_at_another_depth():
    evs = parse(global_report(1, 10.0, 1, "a", policy="p1"))
    state = metrics.count_kills(evs, None, "boot1")
    assert metrics.count_kills(evs, state, "boot1")["totals"] == state["totals"]
    assert metrics.count_kills([], state, "boot2")["totals"] == {}
    assert metrics.count_kills(evs, "garbage", "boot1")["totals"] == state["totals"]
    assert metrics.count_kills([], state, "boot1", depth=2)["totals"] == {}


def test_metric_label_values_are_escaped():
    ev = parse(global_report(1, 1.0, 1, "a"))[0]
    ev.update(memcg='/we"ird\\path\nx', timestamp=1.0)
    text = metrics.metrics_text(metrics.count_kills([ev], None, "b"), {"loaded": False})
    [family] = [f for f in text_string_to_metric_families(text) if f.name == "ebpf_oom_kills"]
    assert family.samples[0].labels["cgroup"] == '/we"ird\\path\nx'


def test_metrics_say_which_policies_are_loaded_and_what_their_rules_match():
    status = {"loaded": {"batch": 1, "gone": 0}, "rules": {"batch": {"/batch.slice": 1, "/never": 0}}}
    samples = samples_of(metrics.metrics_text(metrics.count_kills([], None, "b"), {"loaded": False}, status))
    assert samples[("ebpf_oom_policy_loaded", (("policy", "batch"),))] == 1
    assert samples[("ebpf_oom_policy_loaded", (("policy", "gone"),))] == 0
    assert samples[("ebpf_oom_rule_matches", (("policy", "batch"), ("rule", "/batch.slice")))] == 1
    assert samples[("ebpf_oom_rule_matches", (("policy", "batch"), ("rule", "/never")))] == 0
    assert ("ebpf_oom_observer_kills_total", ()) not in samples


NO_POLICIES = {"loaded": {}, "rules": {}}


def test_metrics_update_keeps_its_state_private_and_writes_nothing_in_check_mode(tmp_path):
    prom, state_dir = str(tmp_path / "ebpf_oom.prom"), tmp_path / "state"
    evs = parse(global_report(1, 10.0, 1, "a", policy="p1"))
    events.set_wall_time(evs)
    found = {"all_events": evs, "observer": {"loaded": False}}
    changed, before, text = metrics.update_metrics(prom, found, check_mode=True, state_dir=str(state_dir),
                                                   status=NO_POLICIES)
    assert (changed, before) == (True, None) and not os.path.exists(prom) and not state_dir.exists()
    assert metrics.update_metrics(prom, found, state_dir=str(state_dir), status=NO_POLICIES)[0]
    assert stat.S_IMODE(os.stat(str(state_dir / metrics.METRICS_STATE)).st_mode) == 0o600
    found["all_events"] = []
    changed, before, text = metrics.update_metrics(prom, found, state_dir=str(state_dir), status=NO_POLICIES)
    assert not changed  # the kill is gone from both sources, not from the counters
    samples = samples_of(text)
    labels = (("cgroup", "/system.slice"), ("policy", "p1"), ("rule", "none"))
    assert kills_of(samples) == {labels: 1}
    assert samples[("ebpf_oom_last_kill_timestamp_seconds", labels)] == pytest.approx(evs[0]["timestamp"], abs=1e-3)


def test_metrics_file_is_replaced_atomically_and_only_when_changed(tmp_path):
    path = str(tmp_path / "ebpf_oom.prom")
    assert metrics.write_metrics(path, "a 1\n", check_mode=True) == (True, None)
    assert not os.path.exists(path)
    assert metrics.write_metrics(path, "a 1\n") == (True, None)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    inode = os.stat(path).st_ino
    assert metrics.write_metrics(path, "a 1\n") == (False, "a 1\n")
    assert os.stat(path).st_ino == inode
    assert metrics.write_metrics(path, "a 2\n") == (True, "a 1\n")
    assert os.stat(path).st_ino != inode  # renamed over, never written in place
    assert sorted(os.listdir(str(tmp_path))) == ["ebpf_oom.prom"]


# ---- the shared layout and the cgroup lookup ----

CTYPES = {"__u64": ctypes.c_uint64, "__u32": ctypes.c_uint32, "__s32": ctypes.c_int32}


def header_structs():
    with open(os.path.join(REPO, "bpf", "observer.h")) as f:
        text = re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)
    defines = dict((m.group(1), m.group(2)) for m in re.finditer(r"#define (\w+) (\w+)", text))
    structs = {}
    for m in re.finditer(r"struct (\w+) \{(.*?)\};", text, re.S):
        fields = []
        for decl in m.group(2).split(";"):
            decl = decl.strip()
            if decl:
                fm = re.match(r"(\w+) (\w+)(?:\[(\w+)\])?$", decl)
                ctype, name, dim = fm.groups()
                fields.append((name, ctypes.c_char * int(defines[dim]) if ctype == "char" else CTYPES[ctype]))
        structs[m.group(1)] = fields
    return defines, structs


def test_python_structs_mirror_observer_h():
    defines, structs = header_structs()
    for cname, pystruct in (("observer_victim", observer.ObserverVictim), ("observer_stats", observer.ObserverStats)):
        assert [(n, ctypes.sizeof(t)) for n, t in structs[cname]] == \
            [(n, ctypes.sizeof(t)) for n, t in pystruct._fields_]
        assert [n for n, _t in structs[cname]] == [n for n, _t in pystruct._fields_]
    assert ctypes.sizeof(observer.ObserverVictim) == sum(ctypes.sizeof(t) for _n, t in structs["observer_victim"])
    for name in ("OBSERVER_VICTIMS", "OBSERVER_COMM_LEN", "OBSERVER_F_TASK", "OBSERVER_F_RAW_TP"):
        assert int(defines[name]) == getattr(observer, name)


def test_memory_cgroup_hierarchy_prefers_v1_memory_controller(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        "24 30 0:21 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755\n"
        "33 24 0:28 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n"
        "36 24 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
        "37 24 0:32 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory\n")
    assert cgroups.memcg_mount(str(info)) == ("/sys/fs/cgroup/memory", "/")
    info.write_text("29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n")
    assert cgroups.memcg_mount(str(info)) == ("/sys/fs/cgroup", "/")


def test_memcg_ids_resolve_to_paths_by_inode(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    ino = os.stat(str(tmp_path / "a" / "b")).st_ino
    root_ino = os.stat(str(tmp_path)).st_ino
    assert cgroups.memcg_paths([ino, root_ino, 0], mount=(str(tmp_path), "/")) == {ino: "/a/b", root_ino: "/"}


# ---------------------------------------------------------------- score_adj kills: the ledger names the policy

def ledger_with(tasks=None, exited=()):
    from ansible_collections.ebpf.oom.plugins.module_utils import scoreadj
    return scoreadj.Ledger({"policy": "steer", "tasks": tasks or {}, "exited": list(exited)}, "/nonexistent")


def kill(pid, adj, policy=None, timestamp=1000.0):
    return {"pid": pid, "oom_score_adj": adj, "policy": policy, "timestamp": timestamp}


def test_a_stock_kill_is_the_policy_whose_agent_wrote_the_victims_value():
    ledger = ledger_with(tasks={"11": [5, 0, 1000]}, exited=[[12, 6, 500, "steer", 1001]])
    found = events.attribute([kill(11, 1000), kill(12, 500)], ledger)
    assert [e["policy"] for e in found] == ["steer", "steer"]


@pytest.mark.parametrize("event,why", [
    (kill(12, 300), "the victim carried another value than the one written"),
    (kill(13, 500), "the agent never wrote that pid"),
    (kill(12, 500, timestamp=2000.0), "that pid's process was gone before the kill: a reused pid"),
])
def test_a_kill_the_agent_did_not_steer_stays_unknown(event, why):
    ledger = ledger_with(exited=[[12, 6, 500, "steer", 1001]])
    assert events.attribute([event], ledger)[0]["policy"] is None, why


def test_a_kill_the_hook_reported_keeps_its_policy():
    ledger = ledger_with(tasks={"11": [5, 0, 1000]})
    assert events.attribute([kill(11, 1000, policy="db")], ledger)[0]["policy"] == "db"
