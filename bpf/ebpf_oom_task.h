/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * What the OOM killer reads of a task, written once for every kernel the
 * collection runs on (CO-RE: the layouts that changed between 6.1 and 6.18
 * are told apart at load time), for the generic program (classify.h). For
 * programs whose task pointers are typed by BTF (fmod_ret, fentry, tp_btf,
 * iter): plain loads, no helper calls, as the OOM killer's scan is the hot
 * path. Written against the bundled vmlinux.h (bpf/include), which the
 * generic program is always compiled with. Include after vmlinux.h and
 * <bpf/bpf_core_read.h>.
 */
#ifndef EBPF_OOM_TASK_H
#define EBPF_OOM_TASK_H

#define EBPF_OOM_PAGE_SHIFT 12	/* x86-64 */
#define EBPF_OOM_SCORE_ADJ_MIN (-1000)

/* Before Linux 6.2 the RSS counters were atomics in a struct mm_rss_stat. */
struct mm_rss_stat___atomic {
	atomic_long_t count[NR_MM_COUNTERS];
} __attribute__((preserve_access_index));

struct mm_struct___atomic {
	struct mm_rss_stat___atomic rss_stat;
} __attribute__((preserve_access_index));

static __always_inline __u64 ebpf_oom_pages(__s64 count)
{
	/* percpu_counter.count is approximate and may dip below zero */
	return count > 0 ? count : 0;
}

/*
 * get_mm_counter(mm, idx) on either layout; idx must be a constant. On 6.2 and
 * later a plain load, its address from __builtin_preserve_access_index rather
 * than mm->rss_stat[idx].count (the compiler would fold the constant index into
 * an offset computed with this header's element size, which CO-RE does not
 * relocate). Before 6.2 (Debian 12's 6.1) through bpf_probe_read_kernel: those
 * verifiers do not follow a load through the atomic_long_t typedef.
 */
#define ebpf_oom_rss(mm, idx)							\
	ebpf_oom_pages(bpf_core_type_exists(struct mm_rss_stat___atomic) ?	\
		       BPF_CORE_READ((struct mm_struct___atomic *)(mm), rss_stat.count[idx].counter) : \
		       *(long *)__builtin_preserve_access_index(&(mm)->rss_stat[idx].count))

/* Linux 6.18 made mm_struct.flags an mm_flags_t bitmap (same first word). */
struct mm_struct___bitmap {
	struct {
		unsigned long __mm_flags[1];
	} flags;
} __attribute__((preserve_access_index));

/* MMF_OOM_SKIP: the OOM reaper is done with this mm (the task cannot free more). */
static __always_inline bool ebpf_oom_mm_skip(struct mm_struct *mm)
{
	unsigned long flags;

	if (bpf_core_field_exists(((struct mm_struct___bitmap *)mm)->flags.__mm_flags)) {
		barrier();	/* see ebpf_oom_kn_parent() */
		flags = ((struct mm_struct___bitmap *)mm)->flags.__mm_flags[0];
	} else {
		barrier();
		flags = mm->flags;
	}
	return flags & (1UL << MMF_OOM_SKIP);
}

/* Linux 6.15 renamed kernfs_node.parent to __parent (an RCU pointer). */
struct kernfs_node___new {
	struct kernfs_node *__parent;
} __attribute__((preserve_access_index));

/*
 * Not inlined, and barrier()s in both branches: the compiler would otherwise
 * hoist both fields' offsets out of the caller's loop (or load both and pick
 * one), and the offset of the field this kernel lacks is an instruction libbpf
 * poisons (its relocation failed), which the verifier refuses once reached.
 */
static __noinline struct kernfs_node *ebpf_oom_kn_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(kn->parent)) {
		barrier();
		return kn->parent;
	}
	barrier();
	return ((struct kernfs_node___new *)kn)->__parent;
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
	if (bpf_core_type_exists(struct mm_rss_stat___atomic))	/* before 6.2: see ebpf_oom_rss() */
		*pgtables = ebpf_oom_pages(BPF_CORE_READ(mm, pgtables_bytes.counter)) >> EBPF_OOM_PAGE_SHIFT;
	else
		*pgtables = ebpf_oom_pages(mm->pgtables_bytes.counter) >> EBPF_OOM_PAGE_SHIFT;
	return *rss + *swap + *pgtables;
}

#endif /* EBPF_OOM_TASK_H */
