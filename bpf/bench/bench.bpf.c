// SPDX-License-Identifier: GPL-2.0-only
/*
 * Victim-selection latency probe for benchmarks/select_latency: the time from
 * out_of_memory() entry to oom_kill_process() entry, for memory-cgroup OOMs.
 * Both functions run under oom_lock, so one start slot is enough.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "bench.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_start);
} bench_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BENCH_SAMPLES);
	__type(key, __u32);
	__type(value, __u64);
} bench_samples SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bench_count SEC(".maps");

SEC("fentry/out_of_memory")
int BPF_PROG(bench_oom_enter, struct oom_control *oc)
{
	__u32 zero = 0;
	struct bench_start *st = bpf_map_lookup_elem(&bench_start, &zero);

	if (st && oc->memcg) {
		st->oc = (__u64)oc;
		st->ns = bpf_ktime_get_ns();
	}
	return 0;
}

SEC("fentry/oom_kill_process")
int BPF_PROG(bench_oom_kill, struct oom_control *oc, const char *message)
{
	__u64 now = bpf_ktime_get_ns(), *count, *slot;
	__u32 zero = 0, i;
	struct bench_start *st = bpf_map_lookup_elem(&bench_start, &zero);

	count = bpf_map_lookup_elem(&bench_count, &zero);
	if (!st || !count || !st->ns || st->oc != (__u64)oc)
		return 0;
	i = *count % BENCH_SAMPLES;
	slot = bpf_map_lookup_elem(&bench_samples, &i);
	if (slot)
		*slot = now - st->ns;
	*count += 1;
	st->ns = 0;
	return 0;
}
