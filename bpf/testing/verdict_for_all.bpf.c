// SPDX-License-Identifier: GPL-2.0-only
/*
 * Test program for the kernel patch's rules that no policy can leave a
 * global OOM without a victim (tests/vm/test_hook_smoke.py): returns
 * `verdict` for every candidate task, and BPF_EVAL_SELECT for select_pid
 * when it is set. verdict = BPF_EVAL_NEXT skips every task, BPF_EVAL_ABORT
 * aborts every scan. Set both before load.
 *
 * Build like bpf/examples/select_target.bpf.c (vmlinux.h from the hook
 * kernel's BTF).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile int verdict = NO_BPF_POLICY;
const volatile int select_pid = 0;

SEC("fmod_ret/bpf_oom_evaluate_task")
int BPF_PROG(verdict_for_all, struct task_struct *task, struct oom_control *oc)
{
	if (select_pid && task->pid == select_pid)
		return BPF_EVAL_SELECT;
	return verdict;
}

char LICENSE[] SEC("license") = "GPL";
