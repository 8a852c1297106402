// SPDX-License-Identifier: GPL-2.0-only
/*
 * The seed example (Documentation/bpf/oom.rst of the RFC): in every OOM, kill
 * the process target_pid and nothing else. Set target_pid before load.
 *
 * Build against a vmlinux.h generated from the hook kernel's BTF:
 *   bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h
 *   clang -target bpf -g -O2 -I. -c select_target.bpf.c -o select_target.bpf.o
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile int target_pid = 0;

SEC("fmod_ret/bpf_oom_evaluate_task")
int BPF_PROG(select_target, struct task_struct *task, struct oom_control *oc)
{
	if (task->pid == target_pid)
		return BPF_EVAL_SELECT;
	return BPF_EVAL_NEXT;
}

char LICENSE[] SEC("license") = "GPL";
