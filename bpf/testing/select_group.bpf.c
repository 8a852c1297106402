// SPDX-License-Identifier: GPL-2.0-only
/*
 * Test program for the kernel patch's rule that a policy cannot make one OOM
 * kill twice (tests/vm/test_hook_smoke.py): a naive group policy. It returns
 * BPF_EVAL_SELECT for every candidate task whose name (comm) starts with
 * GROUP_PREFIX and NO_BPF_POLICY for every other task. It neither compares
 * against oc->chosen nor asks whether an earlier victim is still exiting, so
 * while the first member it chose frees its memory it chooses a member again:
 * the kernel has to wait for the exiting victim before it asks the program.
 *
 * Build like bpf/examples/select_target.bpf.c (vmlinux.h from the hook
 * kernel's BTF).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/* The group: every task whose comm starts with this. */
#define GROUP_PREFIX "job"
#define GROUP_PREFIX_LEN (sizeof(GROUP_PREFIX) - 1)

static __always_inline bool in_group(const struct task_struct *task)
{
	const char prefix[] = GROUP_PREFIX;
	unsigned int i;

	for (i = 0; i < GROUP_PREFIX_LEN; i++)
		if (task->comm[i] != prefix[i])
			return false;
	return true;
}

SEC("fmod_ret/bpf_oom_evaluate_task")
int BPF_PROG(select_group, struct task_struct *task, struct oom_control *oc)
{
	if (in_group(task))
		return BPF_EVAL_SELECT;
	return NO_BPF_POLICY;
}

char LICENSE[] SEC("license") = "GPL";
