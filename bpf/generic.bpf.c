// SPDX-License-Identifier: GPL-2.0-only
/*
 * The generic declarative OOM policy: one program for every policy document.
 *
 * The rules come from maps (layout in generic.h, filled by
 * plugins/module_utils/renderer.py); the policy name from the
 * bpf_metadata_ebpf_oom_policy global, which the loader sets before load.
 * schemas/README.md states the semantics; in short, every task in the scan
 * gets a class from the first rule it matches (or the fallback):
 *
 *   protect        -> BPF_EVAL_NEXT
 *   abort          -> BPF_EVAL_ABORT (memcg OOMs only)
 *   select/prefer  -> ranked by (tier, points): BPF_EVAL_SELECT when it beats
 *                     the choice this program made earlier in the same scan,
 *                     else BPF_EVAL_NEXT
 *   kernel         -> NO_BPF_POLICY while this program has chosen nothing in
 *                     this scan (the kernel's oom_badness() ranks these
 *                     tasks), BPF_EVAL_NEXT afterwards: SELECT does not stop
 *                     the scan, and an unranked task with more points would
 *                     otherwise replace the ranked choice.
 *
 * The per-scan state lives in oom_state; the fentry program on
 * bpf_set_policy_name(), which runs at the start of every out_of_memory(),
 * resets it. OOM scans are serialized by oom_lock. The state also remembers
 * the last task's classification, reused for the next task with the same
 * cgroups, uid and name (not with pid rules).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "ebpf_oom.h"
#include "generic.h"

char LICENSE[] SEC("license") = "GPL";

/* The policy name in the OOM report; the loader sets it (the document's name). */
const volatile char bpf_metadata_ebpf_oom_policy[EBPF_OOM_NAME_LEN] = "generic";

#define OOM_SCORE_ADJ_MIN (-1000)
#define SYSRQ_ORDER (-1)
#define EBPF_OOM_PAGE_SHIFT 12	/* x86-64 */
#define POINTS_MIN (-9223372036854775807L - 1)	/* LONG_MIN: never chosen */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, EBPF_OOM_MAX_RULES);
	__type(key, __u32);
	__type(value, struct ebpf_oom_rule);
} oom_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ebpf_oom_config);
} oom_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ebpf_oom_state);
} oom_state SEC(".maps");

/*
 * ancestor[] slots: a power of two above EBPF_OOM_MAX_CGROUP_LEVEL, indexed
 * with slot(), a mask the compiler cannot drop (it would, knowing the index
 * is in range, and the verifier would then see an unbounded stack offset).
 */
#define ANCESTOR_SLOTS 32
_Static_assert(EBPF_OOM_MAX_CGROUP_LEVEL < ANCESTOR_SLOTS, "ancestor[] too small");

static __always_inline __u32 slot(__u32 level)
{
	barrier_var(level);
	return level & (ANCESTOR_SLOTS - 1);
}

/*
 * What the rules look at, read once per task (only what config.needs asks,
 * and a rule only reads what its match bits name). Not zeroed as a whole:
 * ancestor[] holds levels 0..min(level, EBPF_OOM_MAX_CGROUP_LEVEL).
 */
struct facts {
	__u64 comm[EBPF_OOM_COMM_LEN / 8];
	__u64 ancestor[ANCESTOR_SLOTS];	/* cgroup id by level */
	__s32 level;			/* the task's cgroup level; -1: matches no cgroup rule */
	__u32 tgid;
	__u32 uid;
};

static __always_inline bool in_scope(const struct ebpf_oom_config *cfg, struct oom_control *oc)
{
	return cfg->scope & (oc->memcg ? EBPF_OOM_SCOPE_MEMCG : EBPF_OOM_SCOPE_GLOBAL);
}

/* Linux 6.15 renamed kernfs_node.parent to __parent (an RCU pointer). */
struct kernfs_node___new {
	struct kernfs_node *__parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(kn->parent))
		return kn->parent;
	return ((struct kernfs_node___new *)kn)->__parent;
}

static __always_inline void read_cgroups(struct css_set *css, struct facts *f)
{
	struct cgroup *cgrp = css->dfl_cgrp;
	struct kernfs_node *kn;
	int level, i, l;

	if (!cgrp)
		return;
	level = cgrp->level;
	kn = cgrp->kn;
	for (i = 0; i < EBPF_OOM_CGROUP_WALK; i++) {
		l = level - i;
		if (l < 0 || !kn)
			break;
		if (l <= EBPF_OOM_MAX_CGROUP_LEVEL)
			f->ancestor[slot(l)] = kn->id;
		if (l == 0) {	/* the root reached: every level is known */
			f->level = level;
			break;
		}
		kn = kn_parent(kn);
	}
}

/* The task's pid, uid and name, as far as the rules look at them. */
static __always_inline void read_facts(struct task_struct *task, __u32 needs, struct facts *f)
{
	f->comm[0] = f->comm[1] = 0;
	f->level = -1;
	f->tgid = f->uid = 0;
	if (needs & EBPF_OOM_M_PID)
		f->tgid = task->tgid;
	if (needs & EBPF_OOM_M_UID)
		f->uid = task->real_cred->uid.val;
	if (needs & EBPF_OOM_M_COMM) {	/* two loads inside task->comm[16] */
		f->comm[0] = *(__u64 *)__builtin_preserve_access_index(&task->comm[0]);
		f->comm[1] = *(__u64 *)__builtin_preserve_access_index(&task->comm[8]);
	}
}

static __always_inline bool rule_matches(const struct ebpf_oom_rule *r, const struct facts *f)
{
	__u32 m = r->match, l;
	const __u64 *name = (const __u64 *)r->comm, *mask = (const __u64 *)r->comm_mask;

	if ((m & EBPF_OOM_M_PID) && f->tgid != r->pid)
		return false;
	if ((m & EBPF_OOM_M_UID) && f->uid != r->uid)
		return false;
	if ((m & EBPF_OOM_M_COMM) &&
	    (((f->comm[0] ^ name[0]) & mask[0]) | ((f->comm[1] ^ name[1]) & mask[1])))
		return false;
	if (m & EBPF_OOM_M_CGROUP) {
		l = r->cgroup_level;
		if (l > EBPF_OOM_MAX_CGROUP_LEVEL || (int)l > f->level ||
		    f->ancestor[slot(l)] != r->cgroup_id)
			return false;
	}
	return true;
}

/*
 * The index of the first of the n rules that matches, or -1. A global
 * function: the verifier checks it once, on its own, so the loop's many
 * exits do not multiply the paths of the caller.
 */
__noinline int first_match(const struct facts *f, __u32 n)
{
	const struct ebpf_oom_rule *r;
	__u32 i, key;

	if (!f)
		return -1;
	for (i = 0; i < EBPF_OOM_MAX_RULES; i++) {
		if (i >= n)
			break;
		key = i;	/* the loop counter stays in a register the verifier tracks */
		r = bpf_map_lookup_elem(&oom_rules, &key);
		if (!r)
			break;
		if (rule_matches(r, f))
			return i;
	}
	return -1;
}

/*
 * The first rule the task matches, or -1. Without pid rules, the answer
 * depends only on the task's css_set (its cgroups), uid and name, and the
 * kernel scans a memory cgroup's tasks cgroup by cgroup: the state keeps the
 * last answer of this scan, so a run of similar tasks skips the cgroup walk
 * and the rules.
 */
static __always_inline int rule_of(struct task_struct *task, const struct ebpf_oom_config *cfg,
				   struct ebpf_oom_state *st)
{
	__u32 needs = cfg->needs;
	struct css_set *css = NULL;
	struct facts f;
	int rule;

	read_facts(task, needs, &f);
	if (needs & EBPF_OOM_M_CGROUP)
		css = task->cgroups;
	if (!(needs & EBPF_OOM_M_PID) && st->cache_valid && st->cache_css == (__u64)css &&
	    st->cache_comm[0] == f.comm[0] && st->cache_comm[1] == f.comm[1] && st->cache_uid == f.uid)
		return st->cache_rule;
	if (css)
		read_cgroups(css, &f);
	rule = cfg->nr_rules ? first_match(&f, cfg->nr_rules) : -1;
	st->cache_valid = 1;
	st->cache_css = (__u64)css;
	st->cache_comm[0] = f.comm[0];
	st->cache_comm[1] = f.comm[1];
	st->cache_uid = f.uid;
	st->cache_rule = rule;
	return rule;
}

/* The action (tier, by) of the task's rule, or of the fallback. */
static __always_inline __u32 classify(struct task_struct *task, const struct ebpf_oom_config *cfg,
				      struct ebpf_oom_state *st, __u32 *tier, __u32 *by)
{
	const struct ebpf_oom_rule *r;
	int i = rule_of(task, cfg, st);
	__u32 key = i;

	r = i >= 0 ? bpf_map_lookup_elem(&oom_rules, &key) : NULL;
	if (r) {
		*tier = r->tier;
		*by = r->by;
		return r->action;
	}
	*tier = cfg->fallback_tier;
	*by = cfg->fallback_by;
	return cfg->fallback_action;
}

/* Linux 6.18 made mm_struct.flags an mm_flags_t bitmap (same first word). */
struct mm_struct___bitmap {
	struct {
		unsigned long __mm_flags[1];
	} flags;
} __attribute__((preserve_access_index));

static __always_inline bool mm_oom_skip(struct mm_struct *mm)
{
	unsigned long flags;

	if (bpf_core_field_exists(mm->flags))
		flags = mm->flags;
	else
		flags = ((struct mm_struct___bitmap *)mm)->flags.__mm_flags[0];
	return flags & (1UL << MMF_OOM_SKIP);
}

/*
 * get_mm_counter(): percpu_counter_read_positive(&mm->rss_stat[i]).
 * The address comes from __builtin_preserve_access_index, not from
 * mm->rss_stat[i].count: the compiler would fold the constant index into an
 * offset computed with this header's element size, which CO-RE does not
 * relocate.
 */
#define counter(mm, i)                                                                 \
	({                                                                             \
		long ___v = *(long *)__builtin_preserve_access_index(&(mm)->rss_stat[i].count); \
		___v > 0 ? ___v : 0;                                                   \
	})

static __always_inline bool in_vfork(struct task_struct *task)
{
	return task->vfork_done && task->real_parent->mm == task->mm;
}

/*
 * oom_badness() as the kernel computes it (rss + swap entries + page-table
 * pages + oom_score_adj * totalpages / 1000), or the resident pages only for
 * EBPF_OOM_BY_RSS; POINTS_MIN for a task the kernel never kills
 * (oom_score_adj -1000, already reaped, in vfork). The caller checked that
 * the task has an mm.
 */
static __always_inline long task_points(struct task_struct *task, struct mm_struct *mm,
					struct oom_control *oc, __u32 by)
{
	long adj, points;

	adj = task->signal->oom_score_adj;
	if (adj == OOM_SCORE_ADJ_MIN || mm_oom_skip(mm) || in_vfork(task))
		return POINTS_MIN;
	points = counter(mm, MM_FILEPAGES) + counter(mm, MM_ANONPAGES) + counter(mm, MM_SHMEMPAGES);
	if (by == EBPF_OOM_BY_RSS)
		return points;
	points += counter(mm, MM_SWAPENTS) + (mm->pgtables_bytes.counter >> EBPF_OOM_PAGE_SHIFT);
	if (adj)	/* spares the common case a load and a division */
		points += adj * (long)(oc->totalpages / 1000);
	return points;
}

/* The kernel chose an oom_task_origin() task (swapoff, KSM unmerge): it stays chosen. */
static __always_inline bool chosen_is_origin(struct oom_control *oc)
{
	struct task_struct *chosen = oc->chosen;

	return chosen && (unsigned long)chosen != -1UL && chosen->signal->oom_flag_origin;
}

SEC("fentry/bpf_set_policy_name")
int BPF_PROG(ebpf_oom_name, struct oom_control *oc)
{
	__u32 zero = 0;
	struct ebpf_oom_config *cfg = bpf_map_lookup_elem(&oom_config, &zero);
	struct ebpf_oom_state *st = bpf_map_lookup_elem(&oom_state, &zero);

	if (!cfg || !st)
		return 0;
	st->oc = (__u64)oc;
	st->have = 0;
	st->cache_valid = 0;
	if (!in_scope(cfg, oc))
		return 0;
	st->scans++;
	EBPF_OOM_SET_NAME_FROM(oc, bpf_metadata_ebpf_oom_policy);
	return 0;
}

/* The verdict on one candidate task of the scan described by oc. */
static __always_inline int evaluate(struct task_struct *task, struct oom_control *oc)
{
	__u32 zero = 0, action, tier = 0, by = 0;
	struct ebpf_oom_config *cfg = bpf_map_lookup_elem(&oom_config, &zero);
	struct ebpf_oom_state *st = bpf_map_lookup_elem(&oom_state, &zero);
	struct mm_struct *victim_mm, *mm;
	long points;

	if (!cfg || !st || !in_scope(cfg, oc))
		return NO_BPF_POLICY;
	if (st->oc != (__u64)oc) {	/* a scan the name program did not see start */
		st->oc = (__u64)oc;
		st->have = 0;
		st->cache_valid = 0;
	}
	st->evaluated++;

	/*
	 * The kernel's check that follows the hook, applied to every task:
	 * while an earlier victim is still exiting, wait for it rather than
	 * kill another task (unless it was reaped already, or this is sysrq).
	 */
	victim_mm = task->signal->oom_mm;
	if (victim_mm && oc->order != SYSRQ_ORDER)
		return mm_oom_skip(victim_mm) ? BPF_EVAL_NEXT : BPF_EVAL_ABORT;

	action = classify(task, cfg, st, &tier, &by);
	switch (action) {
	case EBPF_OOM_ACT_PROTECT:
		return BPF_EVAL_NEXT;
	case EBPF_OOM_ACT_ABORT:
		if (oc->memcg)
			return BPF_EVAL_ABORT;
		break;	/* the renderer allows abort with scope memcg only */
	case EBPF_OOM_ACT_PREFER:
	case EBPF_OOM_ACT_SELECT:
		mm = task->mm;
		if (!mm)
			return BPF_EVAL_NEXT;
		points = task_points(task, mm, oc, by);
		if (points == POINTS_MIN)
			return BPF_EVAL_NEXT;
		if (st->have && (tier > st->tier || (tier == st->tier && points < st->points)))
			return BPF_EVAL_NEXT;
		if (chosen_is_origin(oc))
			return BPF_EVAL_NEXT;
		st->have = 1;
		st->tier = tier;
		st->points = points;
		return BPF_EVAL_SELECT;
	}
	/* EBPF_OOM_ACT_KERNEL: no opinion, unless a ranked task is chosen already */
	return st->have ? BPF_EVAL_NEXT : NO_BPF_POLICY;
}

SEC("fmod_ret/bpf_oom_evaluate_task")
int BPF_PROG(ebpf_oom_eval, struct task_struct *task, struct oom_control *oc)
{
	return evaluate(task, oc);
}
