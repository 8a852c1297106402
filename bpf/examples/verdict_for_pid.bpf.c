// SPDX-License-Identifier: GPL-2.0-only
/*
 * Returns `verdict` for the process target_pid and NO_BPF_POLICY (no
 * opinion) for every other candidate. With verdict = BPF_EVAL_NEXT it
 * protects target_pid; with BPF_EVAL_ABORT an OOM that reaches target_pid
 * kills nothing; any value the kernel does not know counts as no opinion.
 * Set target_pid and verdict before load.
 *
 * Build like select_target.bpf.c (vmlinux.h from the hook kernel's BTF).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile int target_pid = 0;
const volatile int verdict = NO_BPF_POLICY;

SEC("fmod_ret/bpf_oom_evaluate_task")
int BPF_PROG(verdict_for_pid, struct task_struct *task, struct oom_control *oc)
{
	if (task->pid == target_pid)
		return verdict;
	return NO_BPF_POLICY;
}

char LICENSE[] SEC("license") = "GPL";
