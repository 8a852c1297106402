// SPDX-License-Identifier: GPL-2.0-only
/*
 * Names the policy in the OOM report: dump_header() prints
 * `policy_name=<policy_name>`. Set policy_name (16 bytes) before load; the
 * kernel keeps at most 15 of them and always terminates the name.
 *
 * Build like select_target.bpf.c (vmlinux.h from the hook kernel's BTF).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

extern void set_oom_policy_name(struct oom_control *oc, const char *src, size_t sz) __ksym;

const volatile char policy_name[16] = "my_policy";

SEC("fentry/bpf_set_policy_name")
int BPF_PROG(name_policy, struct oom_control *oc)
{
	char name[sizeof(policy_name)];

	/* The verifier wants kfunc memory writable: copy the read-only global. */
	for (int i = 0; i < sizeof(name); i++)
		name[i] = policy_name[i];
	set_oom_policy_name(oc, name, sizeof(name));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
