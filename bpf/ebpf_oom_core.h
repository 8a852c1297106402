/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * CO-RE compatibility shims, shared by every BPF program of the collection (as
 * the kernel selftests share bpf_misc.h): how to read kernel data whose layout
 * or type changed between the kernels the collection runs on (6.1 to 6.18).
 * Each difference is told apart at load time, by libbpf against the running
 * kernel's BTF. Every `___` flavour type lives here and nowhere else, and no
 * other file reads mm_struct.rss_stat (tests/unit/test_bpf_sources.py).
 *
 * Only CO-RE builtins that clang 14 (Debian 12's default clang) has:
 * bpf_core_type_exists, bpf_core_field_exists, bpf_core_enum_value(_exists),
 * BPF_CORE_READ and __builtin_preserve_access_index; not bpf_core_type_matches
 * (clang 15), which clang 14 crashes on.
 *
 * Every layout that differs is named by a flavour of its own, none read through
 * the type vmlinux.h declares: so the header compiles with the bundled
 * vmlinux.h (bpf/include) and with one bpftool generates from any of those
 * kernels (the observer is compiled either way). Include after vmlinux.h,
 * <bpf/bpf_helpers.h> and <bpf/bpf_core_read.h>.
 */
#ifndef EBPF_OOM_CORE_H
#define EBPF_OOM_CORE_H

/* ---- mm_struct.rss_stat: the RSS counters (get_mm_counter()) ------------ */

/* Before Linux 6.2 the RSS counters were atomics in a struct mm_rss_stat;
 * since, an array of percpu_counter. */
struct mm_rss_stat___atomic {
	atomic_long_t count[NR_MM_COUNTERS];
} __attribute__((preserve_access_index));

struct mm_struct___atomic {
	struct mm_rss_stat___atomic rss_stat;
} __attribute__((preserve_access_index));

struct mm_struct___percpu {
	struct percpu_counter rss_stat[NR_MM_COUNTERS];
} __attribute__((preserve_access_index));

/* True on kernels before 6.2 (the atomic counters). */
#define ebpf_oom_rss_atomic() bpf_core_type_exists(struct mm_rss_stat___atomic)

static __always_inline __u64 ebpf_oom_pages(__s64 count)
{
	/* percpu_counter.count is approximate and may dip below zero */
	return count > 0 ? count : 0;
}

/*
 * get_mm_counter(mm, idx) on either layout, in pages; idx must be a constant.
 * For an mm pointer typed by BTF (fmod_ret, fentry, tp_btf, iter programs): on
 * 6.2 and later a plain load, as the OOM killer's scan is the hot path, its
 * address from __builtin_preserve_access_index rather than a load of
 * mm->rss_stat[idx].count (the compiler would fold the constant index into an
 * offset computed with this header's element size, which CO-RE does not
 * relocate). Before 6.2 (Debian 12's 6.1) through bpf_probe_read_kernel: those
 * verifiers do not follow a load through the atomic_long_t typedef.
 */
#define ebpf_oom_rss(mm, idx)							\
	ebpf_oom_pages(ebpf_oom_rss_atomic() ?					\
		       BPF_CORE_READ((struct mm_struct___atomic *)(mm), rss_stat.count[idx].counter) : \
		       *(long *)__builtin_preserve_access_index(				\
			       &((struct mm_struct___percpu *)(mm))->rss_stat[idx].count))

/*
 * The same counter through bpf_probe_read_kernel on every kernel, for an mm
 * pointer the verifier does not type (a raw_tp argument: the observer's
 * fallback build reads the victim this way).
 */
#define ebpf_oom_rss_read(mm, idx)						\
	ebpf_oom_pages(ebpf_oom_rss_atomic() ?					\
		       BPF_CORE_READ((struct mm_struct___atomic *)(mm), rss_stat.count[idx].counter) : \
		       BPF_CORE_READ((struct mm_struct___percpu *)(mm), rss_stat[idx].count))

/* mm_struct.pgtables_bytes (an atomic_long_t), for a BTF-typed mm: through
 * bpf_probe_read_kernel before 6.2, as ebpf_oom_rss() reads the counters. */
static __always_inline __u64 ebpf_oom_pgtables_bytes(struct mm_struct *mm)
{
	if (ebpf_oom_rss_atomic())
		return ebpf_oom_pages(BPF_CORE_READ(mm, pgtables_bytes.counter));
	return ebpf_oom_pages(mm->pgtables_bytes.counter);
}

/* ---- mm_struct.flags ---------------------------------------------------- */

/* Linux 6.18 made mm_struct.flags, an unsigned long, an mm_flags_t bitmap
 * (same first word). */
struct mm_struct___word {
	unsigned long flags;
} __attribute__((preserve_access_index));

struct mm_struct___bitmap {
	struct {
		unsigned long __mm_flags[1];
	} flags;
} __attribute__((preserve_access_index));

/*
 * The first word of mm->flags (the MMF_* bits), for a BTF-typed mm. The
 * barrier()s in both branches keep the compiler from loading both fields'
 * offsets and picking one: the offset of the field this kernel lacks is an
 * instruction libbpf poisons (its relocation failed), which the verifier
 * refuses once reached.
 */
static __always_inline unsigned long ebpf_oom_mm_flags(struct mm_struct *mm)
{
	if (bpf_core_field_exists(((struct mm_struct___bitmap *)mm)->flags.__mm_flags)) {
		barrier();
		return ((struct mm_struct___bitmap *)mm)->flags.__mm_flags[0];
	}
	barrier();
	return ((struct mm_struct___word *)mm)->flags;
}

/* The same word through bpf_probe_read_kernel, for an mm pointer the verifier
 * does not type (one found by walking a process's threads). */
static __always_inline unsigned long ebpf_oom_mm_flags_read(struct mm_struct *mm)
{
	if (bpf_core_field_exists(((struct mm_struct___bitmap *)mm)->flags.__mm_flags)) {
		barrier();
		return BPF_CORE_READ((struct mm_struct___bitmap *)mm, flags.__mm_flags[0]);
	}
	barrier();
	return BPF_CORE_READ((struct mm_struct___word *)mm, flags);
}

/* ---- The oom/mark_victim tracepoint's arguments ------------------------- */

/*
 * Since Linux 6.9 (and in stable backports such as Debian's 6.1.x) the
 * tracepoint passes (task, uid); before, the pid only. The same kernel change
 * gave the tracepoint's event record (struct trace_event_raw_mark_victim) the
 * victim's uid, comm and RSS; whether its `uid` exists tells which arguments
 * this kernel passes. Every kernel that attaches the observer has the record
 * (CONFIG_BPF_EVENTS needs kprobe or uprobe events; they select TRACING,
 * and it EVENT_TRACING). Matching the type of the tracepoint itself,
 * btf_trace_mark_victim, would need bpf_core_type_matches: clang 15.
 */
struct trace_event_raw_mark_victim___task {
	uid_t uid;
} __attribute__((preserve_access_index));

/* True when the tracepoint's arguments are (struct task_struct *task, uid_t uid). */
#define ebpf_oom_mark_victim_has_task()						\
	bpf_core_field_exists(struct trace_event_raw_mark_victim___task, uid)

#endif /* EBPF_OOM_CORE_H */
