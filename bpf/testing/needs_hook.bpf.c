// SPDX-License-Identifier: GPL-2.0-only
/* Host test program shaped like a real policy: it needs the OOM hook, the
 * policy-name function and the kfunc, which a stock kernel does not have. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct oom_control;

extern void set_oom_policy_name(struct oom_control *oc, const char *src, __u64 sz) __ksym;

#ifndef EBPF_OOM_POLICY_NAME	/* else the compile module's wrapper defines it */
const volatile char bpf_metadata_ebpf_oom_policy[16] = {};
#endif

SEC("fmod_ret/bpf_oom_evaluate_task")
int BPF_PROG(pick, struct task_struct *task, struct oom_control *oc)
{
	return 0;
}

SEC("fentry/bpf_set_policy_name")
int BPF_PROG(name_it, struct oom_control *oc)
{
	set_oom_policy_name(oc, (const char *)bpf_metadata_ebpf_oom_policy,
			    sizeof(bpf_metadata_ebpf_oom_policy));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
