// SPDX-License-Identifier: GPL-2.0-only
/* Host test program the verifier refuses: it reads past the end of a map value. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

SEC("tp_btf/mark_victim")
int BPF_PROG(count_kill, struct task_struct *task)
{
	__u32 idx = 0;
	volatile __u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		return v[5];	/* value_size is 8: out of bounds */
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
