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

/* MMF_OOM_SKIP: the OOM reaper is done with this mm (the task cannot free more). */
static __always_inline bool ebpf_oom_mm_skip(struct mm_struct *mm)
{
	return ebpf_oom_mm_flags(mm) & (1UL << MMF_OOM_SKIP);
}

/* A vfork child shares its parent's mm until exec: the kernel never kills it. */
static __always_inline bool ebpf_oom_in_vfork(struct task_struct *task)
{
	return task->vfork_done && task->real_parent->mm == task->mm;
}

/* The pages oom_badness() counts, before oom_score_adj: rss (file, anon,
 * shmem), swap entries and page-table pages; *rss gets the first part. */
static __always_inline __u64 ebpf_oom_mm_pages(struct mm_struct *mm, __u64 *rss, __u64 *swap,
					      __u64 *pgtables)
{
	*rss = ebpf_oom_rss(mm, MM_FILEPAGES) + ebpf_oom_rss(mm, MM_ANONPAGES) +
	       ebpf_oom_rss(mm, MM_SHMEMPAGES);
	*swap = ebpf_oom_rss(mm, MM_SWAPENTS);
	*pgtables = ebpf_oom_pgtables_bytes(mm) >> EBPF_OOM_PAGE_SHIFT;
	return *rss + *swap + *pgtables;
}

#endif /* EBPF_OOM_TASK_H */
