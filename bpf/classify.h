/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The classification of a task by a policy document's rules, written once:
 * the victim-selection program (fmod_ret on bpf_oom_evaluate_task), the task
 * iterator that ranks a host's tasks for an imagined OOM (ebpf.oom.explain)
 * and the programs that follow cgroups by path all use it (bpf/generic.bpf.c).
 *
 * A task's class is the first rule it matches (its index, action, tier and
 * `by`), or the document's fallback; points are oom_badness() as the kernel
 * computes it. Layouts and constants: generic.h; semantics: schemas/README.md.
 * Include after vmlinux.h, the libbpf headers and ebpf_oom_task.h.
 */
#ifndef EBPF_OOM_CLASSIFY_H
#define EBPF_OOM_CLASSIFY_H

#include "generic.h"

#define EBPF_OOM_POINTS_MIN (-9223372036854775807L - 1)	/* LONG_MIN: never chosen */

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
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EBPF_OOM_MAX_RULES);
	__type(key, struct ebpf_oom_path);
	__type(value, __u64);
} oom_cgroup_paths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, EBPF_OOM_MAX_RULES);
	__type(key, __u32);
	__type(value, __u64);
} oom_rule_cgroups SEC(".maps");

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

/* The id of cgrp's ancestor at level (0: the root; cgrp->level: cgrp itself;
 * the caller checks the range), or 0. Read through bpf_probe_read_kernel: the
 * index is a variable, which a direct load of a BTF pointer may not have. */
static __always_inline __u64 ebpf_oom_cgroup_ancestor_id(struct cgroup *cgrp, int level)
{
	struct cgroup *ancestor = NULL;

	bpf_probe_read_kernel(&ancestor, sizeof(ancestor), &cgrp->ancestors[level]);
	return ancestor ? BPF_CORE_READ(ancestor, kn, id) : 0;
}

/* The cgroup ids of cgrp and its ancestors, by level, as deep as a rule may
 * name (cgrp->ancestors: no walk, so a task nested however deep is matched). */
static __always_inline void read_cgroups(struct cgroup *cgrp, struct facts *f)
{
	int level, l;

	if (!cgrp)
		return;
	level = cgrp->level;
	for (l = 0; l <= EBPF_OOM_MAX_CGROUP_LEVEL && l <= level; l++)
		f->ancestor[slot(l)] = ebpf_oom_cgroup_ancestor_id(cgrp, l);
	f->level = level;
}

/* The task's pid, uid and name, as far as the rules look at them; comm, when
 * given, is the name the task is about to take (the task_rename tracepoint). */
static __always_inline void read_facts(struct task_struct *task, __u32 needs, const char *comm,
				       struct facts *f)
{
	f->comm[0] = f->comm[1] = 0;
	f->level = -1;
	f->tgid = f->uid = 0;
	if (needs & EBPF_OOM_M_PID)
		f->tgid = task->tgid;
	if (needs & EBPF_OOM_M_UID)
		f->uid = task->real_cred->uid.val;
	if (!(needs & EBPF_OOM_M_COMM))
		return;
	if (comm) {
		bpf_probe_read_kernel_str(f->comm, sizeof(f->comm), comm);
		return;
	}
	/* two loads inside task->comm[16] */
	f->comm[0] = *(__u64 *)__builtin_preserve_access_index(&task->comm[0]);
	f->comm[1] = *(__u64 *)__builtin_preserve_access_index(&task->comm[8]);
}

static __always_inline bool rule_matches(__u32 index, const struct ebpf_oom_rule *r,
					 const struct facts *f)
{
	const __u64 *name = (const __u64 *)r->comm, *mask = (const __u64 *)r->comm_mask;
	__u32 m = r->match, l;
	__u64 *cgroup;

	if ((m & EBPF_OOM_M_PID) && f->tgid != r->pid)
		return false;
	if ((m & EBPF_OOM_M_UID) && f->uid != r->uid)
		return false;
	if ((m & EBPF_OOM_M_COMM) &&
	    (((f->comm[0] ^ name[0]) & mask[0]) | ((f->comm[1] ^ name[1]) & mask[1])))
		return false;
	if (m & EBPF_OOM_M_CGROUP) {
		l = r->cgroup_level;
		cgroup = bpf_map_lookup_elem(&oom_rule_cgroups, &index);
		if (!cgroup || !*cgroup || l > EBPF_OOM_MAX_CGROUP_LEVEL || (int)l > f->level ||
		    f->ancestor[slot(l)] != *cgroup)
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
		if (rule_matches(key, r, f))
			return i;
	}
	return -1;
}

/*
 * The first rule the task matches, or -1. Without pid rules, the answer
 * depends only on the task's css_set (its cgroups), uid and name, and the
 * kernel scans a memory cgroup's tasks cgroup by cgroup: the victim-selection
 * program passes its per-scan state, which keeps the last answer, so a run of
 * similar tasks skips the cgroup walk and the rules. Others pass no state.
 */
static __always_inline int rule_of(struct task_struct *task, const struct ebpf_oom_config *cfg,
				   struct ebpf_oom_state *st, const char *comm)
{
	__u32 needs = cfg->needs;
	struct css_set *css = NULL;
	struct facts f;
	int rule;

	read_facts(task, needs, comm, &f);
	if (needs & EBPF_OOM_M_CGROUP)
		css = task->cgroups;
	if (st && !(needs & EBPF_OOM_M_PID) && st->cache_valid && st->cache_css == (__u64)css &&
	    st->cache_comm[0] == f.comm[0] && st->cache_comm[1] == f.comm[1] && st->cache_uid == f.uid)
		return st->cache_rule;
	if (css)
		read_cgroups(css->dfl_cgrp, &f);
	rule = cfg->nr_rules ? first_match(&f, cfg->nr_rules) : -1;
	if (st) {
		st->cache_valid = 1;
		st->cache_css = (__u64)css;
		st->cache_comm[0] = f.comm[0];
		st->cache_comm[1] = f.comm[1];
		st->cache_uid = f.uid;
		st->cache_rule = rule;
	}
	return rule;
}

struct class {
	int rule;	/* -1: the fallback */
	__u32 action;	/* EBPF_OOM_ACT_* */
	__u32 tier;
	__u32 by;
};

/* The class of the task: its first rule's action (tier, by), or the fallback's. */
static __always_inline void classify(struct task_struct *task, const struct ebpf_oom_config *cfg,
				     struct ebpf_oom_state *st, const char *comm, struct class *c)
{
	const struct ebpf_oom_rule *r;
	__u32 key;

	c->rule = rule_of(task, cfg, st, comm);
	key = c->rule;
	r = c->rule >= 0 ? bpf_map_lookup_elem(&oom_rules, &key) : NULL;
	if (r) {
		c->action = r->action;
		c->tier = r->tier;
		c->by = r->by;
		return;
	}
	c->rule = -1;
	c->action = cfg->fallback_action;
	c->tier = cfg->fallback_tier;
	c->by = cfg->fallback_by;
}

/*
 * oom_badness() as the kernel computes it (rss + swap entries + page-table
 * pages + oom_score_adj * totalpages / 1000), or the resident pages only for
 * EBPF_OOM_BY_RSS, from the process's memory m; EBPF_OOM_POINTS_MIN for a
 * task the kernel never kills (oom_score_adj -1000, reaped, in vfork).
 */
static __always_inline long task_points(struct task_struct *task, const struct ebpf_oom_memory *m,
					__u64 totalpages, __u32 by)
{
	long adj = task->signal->oom_score_adj;
	__u64 pages;

	if (adj == EBPF_OOM_SCORE_ADJ_MIN || m->reaped || ebpf_oom_in_vfork(task))
		return EBPF_OOM_POINTS_MIN;
	if (by == EBPF_OOM_BY_RSS)
		return m->rss;
	pages = m->rss + m->swap + m->pgtables;
	if (adj)	/* spares the common case a division */
		pages += adj * (long)(totalpages / 1000);
	return pages;
}

#endif /* EBPF_OOM_CLASSIFY_H */
