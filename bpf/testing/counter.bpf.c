// SPDX-License-Identifier: GPL-2.0-only
/* Host test program: counts OOM kills (tp_btf/mark_victim) and oom_score_adj
 * writes (tp_btf/oom_score_adj_update), the latter only for target_pid when set.
 * Built with -DVARIANT=N to get a different object with the same maps.  Loaded by
 * the engine (tests/host/test_loader.py), by the modules (tests/host/test_modules.py)
 * and by the benchmarks.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#ifndef VARIANT
#define VARIANT 1
#endif

const volatile __u32 target_pid = 0;

/* The compile module's wrapper defines the metadata (and EBPF_OOM_POLICY_NAME, as
 * the host tests and benchmarks give it a policy name); built by clang alone, the
 * program brings its own. */
#ifndef EBPF_OOM_POLICY_NAME
const volatile char bpf_metadata_ebpf_oom_policy[16] = {};
const volatile char bpf_metadata_ebpf_oom_src_sha256[65] = "test-source";
const volatile char bpf_metadata_ebpf_oom_version[16] = "0.0.0-test";
#endif

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} settings SEC(".maps");

#define KILLS 0
#define ADJ_WRITES 1
#define VARIANT_SEEN 2

static void bump(__u32 idx, __u64 by)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		__sync_fetch_and_add(v, by);
}

SEC("tp_btf/mark_victim")
int BPF_PROG(count_kill, struct task_struct *task)
{
	bump(KILLS, 1);
	bump(VARIANT_SEEN, VARIANT);
	return 0;
}

SEC("tp_btf/oom_score_adj_update")
int BPF_PROG(count_adj, struct task_struct *task)
{
	if (target_pid && task->pid != target_pid)
		return 0;
	bump(ADJ_WRITES, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
