// SPDX-License-Identifier: GPL-2.0-only
/*
 * A policy without an opinion: every task goes on to the next policy (the
 * first non-zero return wins), so it changes no OOM decision. The reboot
 * scenario records it beside the batch policy and then damages its stored
 * object, to show that a policy which no longer loads is reported at boot
 * while the others are restored and the host boots on.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "ebpf_oom.h"

char LICENSE[] SEC("license") = "GPL";

SEC("fmod_ret/bpf_oom_evaluate_task")
int BPF_PROG(noop_eval, struct task_struct *task, struct oom_control *oc)
{
	return NO_BPF_POLICY;
}
