/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The OOM observer's map layout, shared by bpf/observer.bpf.c and
 * plugins/module_utils/events.py (which derives its ctypes structs from the
 * names below; tests/unit/test_events_parser.py checks that they agree).
 *
 * Only fixed-width types, no implicit padding: the Python side reads the
 * values byte for byte.
 */
#ifndef EBPF_OOM_OBSERVER_H
#define EBPF_OOM_OBSERVER_H

/* Slots of the victims ring: the last OBSERVER_VICTIMS kills are kept. */
#define OBSERVER_VICTIMS 64
/* TASK_COMM_LEN */
#define OBSERVER_COMM_LEN 16

/* observer_victim.flags */
/* The tracepoint passed the task (kernels >= 6.9): comm, uid, memcg_id,
 * oom_score_adj and the RSS fields are valid. Older kernels pass the pid only. */
#define OBSERVER_F_TASK 1
/* Recorded by the raw_tp fallback program rather than tp_btf. */
#define OBSERVER_F_RAW_TP 2

/* One killed task; slot (seq - 1) % OBSERVER_VICTIMS of the victims map. */
struct observer_victim {
	__u64 seq;		/* kill number since load, from 1; 0: empty slot */
	__u64 mono_ns;		/* bpf_ktime_get_ns() (CLOCK_MONOTONIC) at the kill */
	__u64 memcg_id;		/* the victim's memory cgroup id (kernfs node id = inode) */
	__u64 anon_rss;		/* resident pages, as get_mm_counter() reads them */
	__u64 file_rss;
	__u64 shmem_rss;
	__u32 pid;
	__u32 tgid;
	__u32 uid;
	__s32 oom_score_adj;
	__u32 flags;		/* OBSERVER_F_* */
	char comm[OBSERVER_COMM_LEN];
	__u32 pad;
};

/* The single entry of the stats map. */
struct observer_stats {
	__u64 kills;		/* every mark_victim since the observer was loaded */
};

#endif /* EBPF_OOM_OBSERVER_H */
