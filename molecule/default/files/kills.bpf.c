// SPDX-License-Identifier: GPL-2.0-only
/*
 * A C policy that decides nothing: it counts OOM kills (tp_btf/mark_victim). The
 * default scenario records it on the batch worker beside the batch policy, then
 * damages its stored object, to show that a policy which no longer loads is
 * reported at boot while the others are restored and the host boots on.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} kills SEC(".maps");

SEC("tp_btf/mark_victim")
int BPF_PROG(count_kill)
{
	__u32 zero = 0;
	__u64 *count = bpf_map_lookup_elem(&kills, &zero);

	if (count)
		__sync_fetch_and_add(count, 1);
	return 0;
}
