// SPDX-License-Identifier: GPL-2.0-only
/*
 * The hook's fixed cost for benchmarks/select_latency: an fmod_ret program
 * on bpf_oom_evaluate_task that has no opinion on any task.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "ebpf_oom.h"

char LICENSE[] SEC("license") = "GPL";

SEC("fmod_ret/bpf_oom_evaluate_task")
int BPF_PROG(bench_floor, struct task_struct *task, struct oom_control *oc)
{
	return NO_BPF_POLICY;
}
