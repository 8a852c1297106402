// SPDX-License-Identifier: GPL-2.0-only
/*
 * OOM observer: counts OOM kills and keeps the last OBSERVER_VICTIMS victims.
 *
 * Attached to the oom/mark_victim tracepoint, which every kernel fires when
 * the OOM killer marks its victim (with or without the policy hook), as
 * tp_btf; built with -DOBSERVER_RAW_TP it is the raw_tp fallback for kernels
 * that refuse tp_btf. Deployed by the engine like a policy (name "observer");
 * plugins/module_utils/events.py reads the pinned maps.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "ebpf_oom_core.h"
#include "observer.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, OBSERVER_VICTIMS);
	__type(key, __u32);
	__type(value, struct observer_victim);
} victims SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct observer_stats);
} stats SEC(".maps");

static __always_inline void read_task(struct observer_victim *v, struct task_struct *task)
{
	struct mm_struct *mm = BPF_CORE_READ(task, mm);

	v->pid = BPF_CORE_READ(task, pid);
	v->tgid = BPF_CORE_READ(task, tgid);
	BPF_CORE_READ_STR_INTO(&v->comm, task, comm);
	v->oom_score_adj = BPF_CORE_READ(task, signal, oom_score_adj);
	if (bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id))
		v->memcg_id = BPF_CORE_READ(task, cgroups,
			subsys[bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id)],
			cgroup, kn, id);
	if (mm) {
		v->file_rss = ebpf_oom_rss_read(mm, MM_FILEPAGES);
		v->anon_rss = ebpf_oom_rss_read(mm, MM_ANONPAGES);
		v->shmem_rss = ebpf_oom_rss_read(mm, MM_SHMEMPAGES);
	}
}

static __always_inline int observe(__u64 *ctx, __u32 flags)
{
	struct observer_victim v = {};
	struct observer_stats *st;
	__u32 zero = 0, slot;

	st = bpf_map_lookup_elem(&stats, &zero);
	if (!st)
		return 0;
	/* The kernel marks victims under oom_lock, so kills do not race here. */
	__sync_fetch_and_add(&st->kills, 1);
	v.seq = st->kills;
	v.mono_ns = bpf_ktime_get_ns();
	v.flags = flags;
	if (ebpf_oom_mark_victim_has_task()) {	/* else the pid only (ebpf_oom_core.h) */
		read_task(&v, (struct task_struct *)ctx[0]);
		v.uid = (__u32)ctx[1];
		v.flags |= OBSERVER_F_TASK;
	} else {
		v.pid = v.tgid = (__u32)ctx[0];
	}
	slot = (v.seq - 1) % OBSERVER_VICTIMS;
	bpf_map_update_elem(&victims, &slot, &v, BPF_ANY);
	return 0;
}

#ifdef OBSERVER_RAW_TP
SEC("raw_tp/mark_victim")
int observe_victim(struct bpf_raw_tracepoint_args *ctx)
{
	return observe(ctx->args, OBSERVER_F_RAW_TP);
}
#else
SEC("tp_btf/mark_victim")
int observe_victim(__u64 *ctx)
{
	return observe(ctx, 0);
}
#endif
