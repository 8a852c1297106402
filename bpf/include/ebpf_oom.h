/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The OOM policy hook interface, for BPF programs (include after vmlinux.h
 * and <bpf/bpf_helpers.h>).
 *
 *   SEC("fmod_ret/bpf_oom_evaluate_task")
 *   int BPF_PROG(my_eval, struct task_struct *task, struct oom_control *oc)
 *   {
 *           return task->tgid == target ? BPF_EVAL_SELECT : NO_BPF_POLICY;
 *   }
 *
 *   SEC("fentry/bpf_set_policy_name")
 *   int BPF_PROG(my_name, struct oom_control *oc)
 *   {
 *           EBPF_OOM_SET_NAME(oc, "my_policy");
 *           return 0;
 *   }
 *
 * plugins/module_utils/common.py holds the same return values for Python.
 */
#ifndef EBPF_OOM_H
#define EBPF_OOM_H

/*
 * Return values of bpf_oom_evaluate_task(): what oom_evaluate_task() does
 * with the task. Several fmod_ret programs: the first non-zero return wins.
 * The hook kernel's BTF (and so a vmlinux.h generated from it, and the
 * bundled one) has them as enum bpf_oom_eval_ret; macros here, so that this
 * header also works after a vmlinux.h of a kernel without the hook.
 */
#ifndef NO_BPF_POLICY
#define NO_BPF_POLICY 0		/* no opinion: the kernel's heuristic (oom_badness) judges */
#define BPF_EVAL_ABORT 1	/* stop the scan; this selection kills nothing */
#define BPF_EVAL_NEXT 2		/* skip the task */
#define BPF_EVAL_SELECT 3	/* make it the current choice; the scan goes on and a
				 * later task may replace it (compare with oc->chosen) */
#endif

/* The kernel's policy-name buffer: 15 bytes and the terminating NUL. */
#define EBPF_OOM_NAME_LEN 16

/*
 * Names the policy in the OOM report (`policy_name=` in dump_header()).
 * Callable from the fentry program on bpf_set_policy_name(), which every
 * out_of_memory() runs after resetting the name to "default". Weak: an
 * object whose other programs run on kernels without the hook (the generic
 * program's task iterator) still loads there, with this one not loaded.
 */
extern void set_oom_policy_name(struct oom_control *oc, const char *src, size_t sz) __ksym __weak;

/* Set the policy name from a string literal (at most 15 bytes). */
#define EBPF_OOM_SET_NAME(oc, literal)                                        \
	do {                                                                  \
		char ___name[EBPF_OOM_NAME_LEN] = literal;                    \
		set_oom_policy_name((oc), ___name, sizeof(___name));          \
	} while (0)

/* Set the policy name from a char array (e.g. a `const volatile char[16]`
 * global set by the loader); copied to the stack, always NUL-terminated. */
#define EBPF_OOM_SET_NAME_FROM(oc, array)                                     \
	do {                                                                  \
		char ___name[EBPF_OOM_NAME_LEN] = {};                         \
		for (int ___i = 0; ___i < EBPF_OOM_NAME_LEN - 1; ___i++)      \
			___name[___i] = (array)[___i];                        \
		set_oom_policy_name((oc), ___name, sizeof(___name));          \
	} while (0)

#endif /* EBPF_OOM_H */
