/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * What the OOM killer reads of a task, written once for every kernel the
 * collection runs on, for the generic program (classify.h). The layouts that
 * changed between 6.1 and 6.18 are read through the CO-RE shims of
 * ebpf_oom_core.h. For programs whose task pointers are typed by BTF
 * (fmod_ret, fentry, tp_btf, iter): plain loads where the kernel allows them,
 * as the OOM killer's scan is the hot path. Written against the bundled
 * vmlinux.h (bpf/include), which the generic program is always compiled with.
 * Include after vmlinux.h, <bpf/bpf_helpers.h> and <bpf/bpf_core_read.h>.
 */
#ifndef EBPF_OOM_TASK_H
#define EBPF_OOM_TASK_H

#include "ebpf_oom_core.h"

#define EBPF_OOM_PAGE_SHIFT 12	/* x86-64 */
#define EBPF_OOM_SCORE_ADJ_MIN (-1000)

#define EBPF_OOM_THREAD_WALK 16	/* threads looked at for the mm of a process whose leader exited */

/* A vfork child shares its parent's mm until exec: the kernel never kills it. */
static __always_inline bool ebpf_oom_in_vfork(struct task_struct *task)
{
	return task->vfork_done && task->real_parent->mm == task->mm;
}

/*
 * The mm of the first thread of task's process that has one, as
 * find_lock_task_mm() finds it once the leader exited (pthread_exit() while
 * its threads run on), or NULL. A pointer the verifier does not type: read
 * through bpf_probe_read_kernel.
 */
static __always_inline struct mm_struct *ebpf_oom_thread_mm(struct task_struct *task)
{
	struct signal_struct *sig = task->signal;
	struct list_head *head = &sig->thread_head;
	struct list_head *pos = BPF_CORE_READ(sig, thread_head.next);
	__u64 offset = bpf_core_field_offset(struct task_struct, thread_node);
	struct mm_struct *mm;
	int i;

	for (i = 0; i < EBPF_OOM_THREAD_WALK && pos && pos != head; i++) {
		mm = BPF_CORE_READ((struct task_struct *)((void *)pos - offset), mm);
		if (mm)
			return mm;
		pos = BPF_CORE_READ(pos, next);
	}
	return NULL;
}

/* What oom_badness() reads of a process's memory. */
struct ebpf_oom_memory {
	__u64 rss;		/* resident pages: file + anon + shmem */
	__u64 swap;		/* swap entries */
	__u64 pgtables;		/* page-table pages */
	bool reaped;		/* MMF_OOM_SKIP: the reaper is done, the kernel skips it */
};

/*
 * The memory of task's process, from its mm or, once the leader exited, from
 * a live thread's (as oom_badness() reads it); false when no thread has one
 * (a kernel thread, or the process is exiting).
 */
static __always_inline bool ebpf_oom_process_memory(struct task_struct *task,
						    struct ebpf_oom_memory *m)
{
	struct mm_struct *mm = task->mm;

	if (mm) {	/* the hot path: plain loads where the kernel allows them */
		m->rss = ebpf_oom_rss(mm, MM_FILEPAGES) + ebpf_oom_rss(mm, MM_ANONPAGES) +
			 ebpf_oom_rss(mm, MM_SHMEMPAGES);
		m->swap = ebpf_oom_rss(mm, MM_SWAPENTS);
		m->pgtables = ebpf_oom_pgtables_bytes(mm) >> EBPF_OOM_PAGE_SHIFT;
		m->reaped = ebpf_oom_mm_flags(mm) & (1UL << MMF_OOM_SKIP);
		return true;
	}
	mm = ebpf_oom_thread_mm(task);
	if (!mm)
		return false;
	m->rss = ebpf_oom_rss_read(mm, MM_FILEPAGES) + ebpf_oom_rss_read(mm, MM_ANONPAGES) +
		 ebpf_oom_rss_read(mm, MM_SHMEMPAGES);
	m->swap = ebpf_oom_rss_read(mm, MM_SWAPENTS);
	m->pgtables = ebpf_oom_pages(BPF_CORE_READ(mm, pgtables_bytes.counter)) >> EBPF_OOM_PAGE_SHIFT;
	m->reaped = ebpf_oom_mm_flags_read(mm) & (1UL << MMF_OOM_SKIP);
	return true;
}

#endif /* EBPF_OOM_TASK_H */
