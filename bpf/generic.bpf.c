// SPDX-License-Identifier: GPL-2.0-only
/*
 * The generic declarative OOM policy: one object for every policy document.
 *
 * The rules come from maps (layout in generic.h, filled by
 * plugins/module_utils/renderer.py); the policy name from the
 * bpf_metadata_ebpf_oom_policy global, which the loader sets before load.
 * Every task gets a class from the first rule it matches, or the fallback
 * (bpf/classify.h); schemas/README.md states the semantics. Its programs, of
 * which each user loads the ones it needs:
 *
 *   ebpf_oom_name, ebpf_oom_eval,     the hook backend: name the policy in the
 *   ebpf_oom_done                     OOM report, judge each candidate, and end
 *                                     the OOM (the hand-over, generic.h)
 *   ebpf_oom_cgroup_mkdir, _rmdir     keep oom_rule_cgroups current: a cgroup
 *                                     rule matches whatever cgroup lives at its
 *                                     path now (made before or after the
 *                                     policy, made again by a restart)
 *   ebpf_oom_tasks                    a task iterator: one record per candidate
 *                                     of an imagined OOM (ebpf.oom.explain), and
 *                                     the score_adj agent's sweep
 *   ebpf_oom_adj_exec, _rename,       the score_adj backend: tell its agent when a
 *   _attach, _fork, _creds            process's class may have changed (exec, a
 *                                     new name, another cgroup, a new process,
 *                                     a new uid: _creds is fexit, loaded where
 *                                     the kernel allows it), and keep
 *   ebpf_oom_adj_exit                 oom_adjusted to the live processes
 *
 * The verdicts of ebpf_oom_eval:
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
 * resets it. OOM scans are serialized by oom_lock. A choice the kernel did
 * not keep (it drops a SELECTed task whose badness is LONG_MIN: one that
 * exited or was made unkillable after this program judged it) is forgotten
 * at the next task, so the scan never ends with every later task skipped.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "ebpf_oom.h"
#include "ebpf_oom_task.h"
#include "classify.h"

char LICENSE[] SEC("license") = "GPL";

/* The policy name in the OOM report; the loader sets it (the document's name). */
const volatile char bpf_metadata_ebpf_oom_policy[EBPF_OOM_NAME_LEN] = "generic";

/* This instance's token (generic.h: the hand-over); the loader sets it. */
const volatile __u64 ebpf_oom_token = 0;

/* The OOM the task iterator imagines (generic.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ebpf_oom_imagined);
} oom_imagined SEC(".maps");

/* The task iterator's record, named here so that it is in the object's BTF, where
 * tests/unit/test_renderer.py compares it with the Python side's layout. */
struct ebpf_oom_task ebpf_oom_task_layout;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ebpf_oom_state);
} oom_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} oom_decider SEC(".maps");

/* At the start of an OOM: latch the token of the instance that decides it. Every
 * instance attached does it, in attach order; they latch the same token unless
 * the loader writes a new one in between, and then the last one latched counts. */
static __always_inline bool latch_decider(void)
{
	__u32 next = EBPF_OOM_DECIDER_NEXT, scan = EBPF_OOM_DECIDER_SCAN;
	__u64 *token = bpf_map_lookup_elem(&oom_decider, &next);
	__u64 *latched = bpf_map_lookup_elem(&oom_decider, &scan);

	if (!token || !latched)
		return false;
	*latched = *token;
	return *latched == ebpf_oom_token;
}

/* Does this instance decide the OOM in progress? */
static __always_inline bool deciding(void)
{
	__u32 scan = EBPF_OOM_DECIDER_SCAN;
	__u64 *latched = bpf_map_lookup_elem(&oom_decider, &scan);

	return latched && *latched == ebpf_oom_token;
}

static __always_inline bool in_scope(const struct ebpf_oom_config *cfg, struct oom_control *oc)
{
	return cfg->scope & (oc->memcg ? EBPF_OOM_SCOPE_MEMCG : EBPF_OOM_SCOPE_GLOBAL);
}

/* The kernel chose an oom_task_origin() task (swapoff, KSM unmerge): it stays chosen. */
static __always_inline bool chosen_is_origin(struct oom_control *oc)
{
	struct task_struct *chosen = oc->chosen;

	return chosen && (unsigned long)chosen != -1UL && chosen->signal->oom_flag_origin;
}

/* Shadow mode (generic.h): the mode, the OOM judged in shadow, the verdicts. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} oom_mode SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ebpf_oom_shadow_scan);
} oom_shadow_scan SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, EBPF_OOM_VERDICTS);
	__type(key, __u32);
	__type(value, struct ebpf_oom_verdict);
} oom_shadow_log SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ebpf_oom_shadow_stats);
} oom_shadow_stats SEC(".maps");

static __always_inline void new_scan(struct ebpf_oom_state *st, struct oom_control *oc)
{
	__u32 zero = 0, *mode = bpf_map_lookup_elem(&oom_mode, &zero);

	st->oc = (__u64)oc;
	st->have = 0;
	st->cache_valid = 0;
	st->shadow = mode && *mode == EBPF_OOM_MODE_SHADOW;
}

/* ---- shadow mode (generic.h) ------------------------------------------- */

static __always_inline struct ebpf_oom_shadow_scan *shadow_scan(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&oom_shadow_scan, &zero);
}

/* An OOM this instance judges in shadow begins. */
static __always_inline void shadow_open(struct oom_control *oc)
{
	struct ebpf_oom_shadow_scan *sh = shadow_scan();

	if (!sh)
		return;
	__builtin_memset(sh, 0, sizeof(*sh));
	sh->open = 1;
	sh->ranked.start_ns = bpf_ktime_get_ns();
	if (oc->memcg)
		sh->ranked.flags = EBPF_OOM_V_MEMCG;
}

/* Note task as what the policy would choose, in *v. */
static __always_inline void shadow_note(struct ebpf_oom_verdict *v, struct task_struct *task,
					const struct class *c, long points)
{
	v->pid = task->tgid;
	v->rule = c->rule;
	v->action = c->action;
	v->tier = c->tier;
	v->points = points;
	v->cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	*(__u64 *)&v->comm[0] = *(__u64 *)__builtin_preserve_access_index(&task->comm[0]);
	*(__u64 *)&v->comm[8] = *(__u64 *)__builtin_preserve_access_index(&task->comm[8]);
}

/* *v names no task: the policy would kill none. */
static __always_inline void shadow_none(struct ebpf_oom_verdict *v)
{
	v->pid = 0;
	v->rule = -1;
	v->action = v->tier = 0;
	v->points = 0;
	v->cgroup_id = 0;
	__builtin_memset(v->comm, 0, sizeof(v->comm));
}

/* The task *from names, into *to. */
static __always_inline void shadow_copy(struct ebpf_oom_verdict *to, const struct ebpf_oom_verdict *from)
{
	to->pid = from->pid;
	to->rule = from->rule;
	to->action = from->action;
	to->tier = from->tier;
	to->points = from->points;
	to->cgroup_id = from->cgroup_id;
	__builtin_memcpy(to->comm, from->comm, sizeof(to->comm));
}

/*
 * One candidate, judged as evaluate() below would judge it, with the kernel's
 * part played too: the scan would end on the best ranked task, else on the
 * task with the most badness among those no rule ranks (ties: the later one,
 * as in the kernel's scan and in evaluate()), and an abort rule ends it.
 */
static __always_inline void shadow_judge(struct task_struct *task, struct oom_control *oc,
					 const struct ebpf_oom_config *cfg,
					 struct ebpf_oom_state *st, struct ebpf_oom_shadow_scan *sh)
{
	struct ebpf_oom_verdict *v = &sh->ranked;
	struct ebpf_oom_memory m;
	struct class c;
	__u32 have;
	long points;

	if (sh->have & EBPF_OOM_HAVE_ABORT)
		return;
	sh->judged++;
	classify(task, cfg, st, NULL, &c);
	switch (c.action) {
	case EBPF_OOM_ACT_PROTECT:
		return;
	case EBPF_OOM_ACT_ABORT:
		if (oc->memcg) {
			sh->have |= EBPF_OOM_HAVE_ABORT;
			return;
		}
		c.action = EBPF_OOM_ACT_KERNEL;	/* as evaluate(): the kernel's */
		c.by = EBPF_OOM_BY_BADNESS;
		break;
	case EBPF_OOM_ACT_PREFER:
	case EBPF_OOM_ACT_SELECT:
		break;
	default:
		c.by = EBPF_OOM_BY_BADNESS;
	}
	if (!ebpf_oom_process_memory(task, &m))
		return;
	points = task_points(task, &m, oc->totalpages, c.by);
	if (points == EBPF_OOM_POINTS_MIN)
		return;
	if (c.action == EBPF_OOM_ACT_PREFER || c.action == EBPF_OOM_ACT_SELECT) {
		have = EBPF_OOM_HAVE_RANKED;
		if ((sh->have & have) &&
		    (c.tier > v->tier || (c.tier == v->tier && points < v->points)))
			return;
	} else {
		have = EBPF_OOM_HAVE_KERNEL;
		v = &sh->kernel;
		if ((sh->have & have) && points < v->points)
			return;
	}
	sh->have |= have;
	shadow_note(v, task, &c, points);
}

/* The kernel marked a victim: the first one of an OOM judged in shadow is its choice. */
SEC("tp_btf/mark_victim")
int ebpf_oom_shadow_kill(__u64 *ctx)
{
	struct ebpf_oom_shadow_scan *sh = shadow_scan();

	if (!sh || !sh->open || sh->killed)
		return 0;
	if (ebpf_oom_mark_victim_has_task())	/* else the pid (ebpf_oom_core.h) */
		sh->killed = BPF_CORE_READ((struct task_struct *)ctx[0], tgid);
	else
		sh->killed = (__u32)ctx[0];
	return 0;
}

/* The OOM ends: log the verdict of one judged in shadow, and count it. */
static __always_inline void shadow_close(struct oom_control *oc)
{
	struct ebpf_oom_shadow_scan *sh = shadow_scan();
	struct ebpf_oom_shadow_stats *stats;
	struct ebpf_oom_verdict *v;
	__u32 zero = 0, slot;

	if (!sh || !sh->open)
		return;
	sh->open = 0;
	stats = bpf_map_lookup_elem(&oom_shadow_stats, &zero);
	if (!stats || !sh->judged)	/* no scan: the kernel killed the allocating task at once */
		return;
	v = &sh->ranked;	/* the verdict: the ranked choice, */
	if (sh->have & EBPF_OOM_HAVE_ABORT) {	/* none (an abort), */
		shadow_none(v);
		v->flags |= EBPF_OOM_V_ABORT;
	} else if (sh->have & EBPF_OOM_HAVE_KERNEL && !(sh->have & EBPF_OOM_HAVE_RANKED)) {
		shadow_copy(v, &sh->kernel);	/* the kernel's among the unranked, */
	} else if (!(sh->have & EBPF_OOM_HAVE_RANKED)) {
		shadow_none(v);	/* or none: every candidate protected or unkillable */
	}
	v->killed = sh->killed;
	v->end_ns = bpf_ktime_get_ns();
	v->seq = ++stats->judged;
	if (v->killed) {
		stats->kills++;
		if (v->killed != v->pid)
			stats->disagreements++;
	}
	slot = (v->seq - 1) % EBPF_OOM_VERDICTS;
	bpf_map_update_elem(&oom_shadow_log, &slot, v, BPF_ANY);
}

SEC("fentry/bpf_set_policy_name")
int BPF_PROG(ebpf_oom_name, struct oom_control *oc)
{
	__u32 zero = 0;
	struct ebpf_oom_config *cfg = bpf_map_lookup_elem(&oom_config, &zero);
	struct ebpf_oom_state *st = bpf_map_lookup_elem(&oom_state, &zero);

	if (!cfg || !st)
		return 0;
	new_scan(st, oc);
	if (!latch_decider() || !in_scope(cfg, oc))
		return 0;
	st->scans++;
	if (st->shadow) {	/* judged, not decided: the report keeps the kernel's name */
		shadow_open(oc);
		return 0;
	}
	EBPF_OOM_SET_NAME_FROM(oc, bpf_metadata_ebpf_oom_policy);
	return 0;
}

/* The OOM is over (a kill, or none): no instance is deciding one now; the
 * verdict of an OOM judged in shadow is logged. */
SEC("fexit/out_of_memory")
int BPF_PROG(ebpf_oom_done, struct oom_control *oc, bool ret)
{
	__u32 scan = EBPF_OOM_DECIDER_SCAN;
	__u64 *latched = bpf_map_lookup_elem(&oom_decider, &scan);

	shadow_close(oc);
	if (latched)
		*latched = 0;
	return 0;
}

/* The verdict on one candidate task of the scan described by oc. */
static __always_inline int evaluate(struct task_struct *task, struct oom_control *oc)
{
	__u32 zero = 0;
	struct ebpf_oom_config *cfg = bpf_map_lookup_elem(&oom_config, &zero);
	struct ebpf_oom_state *st = bpf_map_lookup_elem(&oom_state, &zero);
	struct ebpf_oom_memory m;
	struct class c;
	long points;

	if (!cfg || !st || !in_scope(cfg, oc) || !deciding())
		return NO_BPF_POLICY;
	if (st->oc != (__u64)oc)	/* a scan the name program did not see start */
		new_scan(st, oc);
	if (st->shadow)		/* judged by ebpf_oom_shadow, decided by the kernel */
		return NO_BPF_POLICY;
	if (st->have && st->chosen != (__u64)oc->chosen)
		st->have = 0;	/* the kernel did not keep the last choice */
	st->evaluated++;

	/* An earlier victim still exiting: the kernel waited for it before asking. */
	classify(task, cfg, st, NULL, &c);
	switch (c.action) {
	case EBPF_OOM_ACT_PROTECT:
		return BPF_EVAL_NEXT;
	case EBPF_OOM_ACT_ABORT:
		if (oc->memcg)
			return BPF_EVAL_ABORT;
		break;	/* the renderer allows abort with scope memcg only */
	case EBPF_OOM_ACT_PREFER:
	case EBPF_OOM_ACT_SELECT:
		if (!ebpf_oom_process_memory(task, &m))
			return BPF_EVAL_NEXT;
		points = task_points(task, &m, oc->totalpages, c.by);
		if (points == EBPF_OOM_POINTS_MIN)
			return BPF_EVAL_NEXT;
		if (st->have && (c.tier > st->tier || (c.tier == st->tier && points < st->points)))
			return BPF_EVAL_NEXT;
		if (chosen_is_origin(oc))
			return BPF_EVAL_NEXT;
		st->have = 1;
		st->chosen = (__u64)task;
		st->tier = c.tier;
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

/* Shadow mode: the same hook, seen and not decided (fentry runs before the
 * fmod_ret programs and cannot change their verdict). */
SEC("fentry/bpf_oom_evaluate_task")
int BPF_PROG(ebpf_oom_shadow, struct task_struct *task, struct oom_control *oc)
{
	struct ebpf_oom_shadow_scan *sh = shadow_scan();
	struct ebpf_oom_config *cfg;
	struct ebpf_oom_state *st;
	__u32 zero = 0;

	if (!sh || !sh->open)	/* enforce mode: the only cost, on every candidate */
		return 0;
	cfg = bpf_map_lookup_elem(&oom_config, &zero);
	st = bpf_map_lookup_elem(&oom_state, &zero);
	if (!cfg || !st || st->oc != (__u64)oc || !deciding())
		return 0;
	st->evaluated++;
	shadow_judge(task, oc, cfg, st, sh);
	return 0;
}

/* ---- cgroup rules by path --------------------------------------------- */

/*
 * A cgroup v2 directory was made (add) or removed: the rules naming its
 * path now match it (add), or match nothing until it comes back. Cgroups
 * of v1 hierarchies (their paths mean something else) are left alone.
 */
static __always_inline void follow_cgroup(struct cgroup *cgrp, const char *path, bool add)
{
	struct task_struct *current = bpf_get_current_task_btf();
	struct ebpf_oom_path key = {};
	__u64 *mask, *live, id;
	__u32 i, index;

	if (cgrp->root != current->cgroups->dfl_cgrp->root)
		return;
	if (bpf_probe_read_kernel_str(key.path, sizeof(key.path), path) < 0)
		return;
	mask = bpf_map_lookup_elem(&oom_cgroup_paths, &key);
	if (!mask)
		return;
	id = cgrp->kn->id;
	for (i = 0; i < EBPF_OOM_MAX_RULES; i++) {
		if (!(*mask & (1ULL << i)))
			continue;
		index = i;
		live = bpf_map_lookup_elem(&oom_rule_cgroups, &index);
		if (!live)
			continue;
		if (add)
			*live = id;
		else if (*live == id)
			*live = 0;
	}
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(ebpf_oom_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	follow_cgroup(cgrp, path, true);
	return 0;
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(ebpf_oom_cgroup_rmdir, struct cgroup *cgrp, const char *path)
{
	follow_cgroup(cgrp, path, false);
	return 0;
}

/* ---- the candidates of an imagined OOM --------------------------------- */

/* Is the task's cgroup the imagined OOM's memory cgroup or below it? */
static __always_inline bool in_memcg(struct cgroup *cgrp, const struct ebpf_oom_imagined *oom)
{
	__u32 level = oom->memcg_level;	/* a path explain takes: at most the deepest rule's */

	if (level > EBPF_OOM_MAX_CGROUP_LEVEL || cgrp->level < (int)level)
		return false;
	return ebpf_oom_cgroup_ancestor_id(cgrp, slot(level)) == oom->memcg_id;
}

SEC("iter/task")
int ebpf_oom_tasks(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct ebpf_oom_imagined *oom;
	struct ebpf_oom_config *cfg;
	struct cgroup *cgrp;
	struct ebpf_oom_task rec = {};
	struct ebpf_oom_memory m;
	struct class c;
	__u32 zero = 0;

	/* oom_unkillable_task(): kernel threads and init; and the leaders only */
	if (!task || task->pid != task->tgid || (task->flags & PF_KTHREAD) || task->tgid == 1)
		return 0;
	cfg = bpf_map_lookup_elem(&oom_config, &zero);
	oom = bpf_map_lookup_elem(&oom_imagined, &zero);
	if (!cfg || !oom || !ebpf_oom_process_memory(task, &m))
		return 0;
	classify(task, cfg, NULL, NULL, &c);
	rec.pid = task->tgid;
	rec.uid = task->real_cred->uid.val;
	rec.rule = c.rule;
	rec.action = c.action;
	rec.tier = c.tier;
	rec.by = c.by;
	rec.oom_score_adj = task->signal->oom_score_adj;
	cgrp = task->cgroups->dfl_cgrp;
	rec.cgroup_id = cgrp->kn->id;
	rec.rss = m.rss;
	rec.swap = m.swap;
	rec.pgtables = m.pgtables;
	rec.points = task_points(task, &m, oom->totalpages, EBPF_OOM_BY_BADNESS);
	if (m.reaped)
		rec.flags |= EBPF_OOM_T_REAPED;
	if (ebpf_oom_in_vfork(task))
		rec.flags |= EBPF_OOM_T_VFORK;
	if (task->signal->oom_mm)
		rec.flags |= EBPF_OOM_T_VICTIM;
	if (oom->memcg_id && in_memcg(cgrp, oom))
		rec.flags |= EBPF_OOM_T_IN_MEMCG;
	*(__u64 *)&rec.comm[0] = *(__u64 *)__builtin_preserve_access_index(&task->comm[0]);
	*(__u64 *)&rec.comm[8] = *(__u64 *)__builtin_preserve_access_index(&task->comm[8]);
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}

/* ---- the score_adj backend: events that can change a process's class ---- */

/* Its event record, named here so that it is in the object's BTF. */
struct ebpf_oom_adj_event ebpf_oom_adj_event_layout;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EBPF_OOM_EVENTS_BYTES);
} oom_adj_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EBPF_OOM_ADJUSTED_MAX);
	__type(key, __u32);
	__type(value, struct ebpf_oom_adjusted);
} oom_adjusted SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} oom_adj_lost SEC(".maps");

static __always_inline bool adjusted(__u32 tgid)
{
	return bpf_map_lookup_elem(&oom_adjusted, &tgid) != NULL;
}

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *lost = bpf_map_lookup_elem(&oom_adj_lost, &zero);

	if (lost)
		__sync_fetch_and_add(lost, 1);
}

/*
 * The process whose leader is task may have a new class: push it to the agent
 * when it matches a rule, or when the agent wrote its value or its parent's
 * (the value a child inherits). comm: the name it is taking (task_rename), or
 * NULL. Threads other than the leader, kernel threads and init are left out,
 * as the OOM killer's scan leaves them out.
 */
static __always_inline void report(struct task_struct *task, const char *comm, __u32 reason)
{
	struct ebpf_oom_adj_event *ev;
	struct ebpf_oom_config *cfg;
	__u32 zero = 0, parent;
	struct class c;

	if (task->pid != task->tgid || (task->flags & PF_KTHREAD) || task->tgid == 1)
		return;
	cfg = bpf_map_lookup_elem(&oom_config, &zero);
	if (!cfg)
		return;
	parent = task->real_parent->tgid;
	classify(task, cfg, NULL, comm, &c);
	if (c.rule < 0 && !adjusted(task->tgid) && !adjusted(parent))
		return;
	ev = bpf_ringbuf_reserve(&oom_adj_events, sizeof(*ev), 0);
	if (!ev) {
		count_lost();
		return;
	}
	ev->pid = task->tgid;
	ev->parent = parent;
	ev->rule = c.rule;
	ev->action = c.action;
	ev->tier = c.tier;
	ev->reason = reason;
	ev->oom_score_adj = task->signal->oom_score_adj;
	ev->pad = 0;
	ev->start_ns = task->start_boottime;
	if (comm) {
		__builtin_memset(ev->comm, 0, sizeof(ev->comm));
		bpf_probe_read_kernel_str(ev->comm, sizeof(ev->comm), comm);
	} else {
		*(__u64 *)&ev->comm[0] = *(__u64 *)__builtin_preserve_access_index(&task->comm[0]);
		*(__u64 *)&ev->comm[8] = *(__u64 *)__builtin_preserve_access_index(&task->comm[8]);
	}
	bpf_ringbuf_submit(ev, 0);
}

struct linux_binprm;

SEC("tp_btf/sched_process_exec")
int BPF_PROG(ebpf_oom_adj_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	report(task, NULL, EBPF_OOM_EV_EXEC);
	return 0;
}

/* Runs before the name changes: the task is classified by the name it takes. */
SEC("tp_btf/task_rename")
int BPF_PROG(ebpf_oom_adj_rename, struct task_struct *task, const char *comm)
{
	report(task, comm, EBPF_OOM_EV_RENAME);
	return 0;
}

/* After the move; only moves in the cgroup v2 hierarchy, and only when rules name cgroups. */
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(ebpf_oom_adj_attach, struct cgroup *dst, const char *path, struct task_struct *task,
	     bool threadgroup)
{
	struct ebpf_oom_config *cfg;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&oom_config, &zero);
	if (!cfg || !(cfg->needs & EBPF_OOM_M_CGROUP) ||
	    dst->root != task->cgroups->dfl_cgrp->root)
		return 0;
	report(task, NULL, EBPF_OOM_EV_ATTACH);
	return 0;
}

/*
 * A new process (not a thread): it inherited its parent's value. When that is
 * one the agent wrote, the child is noted in oom_adjusted before anything is
 * reported, so that the sweep finds it even when every event about it is lost.
 */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(ebpf_oom_adj_fork, struct task_struct *parent, struct task_struct *child)
{
	struct ebpf_oom_adjusted *mark, note;
	__u32 tgid = parent->tgid, pid = child->tgid;

	mark = bpf_map_lookup_elem(&oom_adjusted, &tgid);
	if (mark && child->pid == child->tgid &&
	    mark->start_ns / EBPF_OOM_NS_PER_TICK ==
		    parent->group_leader->start_boottime / EBPF_OOM_NS_PER_TICK &&
	    mark->written == child->signal->oom_score_adj) {
		note.start_ns = child->start_boottime;
		note.original = mark->original;
		note.written = mark->written;
		if (bpf_map_update_elem(&oom_adjusted, &pid, &note, BPF_ANY))
			count_lost();	/* full: the agent sweeps, and finds it by its parent */
	}
	report(child, NULL, EBPF_OOM_EV_FORK);
	return 0;
}

/* The last thread of a process exits: it carries nothing any more. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(ebpf_oom_adj_exit, struct task_struct *task)
{
	__u32 tgid = task->tgid;

	if (!task->signal->live.counter)
		bpf_map_delete_elem(&oom_adjusted, &tgid);
	return 0;
}

/*
 * New credentials (setuid(), setresuid() and the like, also exec): a uid rule
 * may match the process now, or no longer. After the change, so that the task
 * is classified by its new uid; only when rules name uids. fexit: loaded only
 * where the kernel allows tracing programs (else the sweep finds the change).
 */
SEC("fexit/commit_creds")
int BPF_PROG(ebpf_oom_adj_creds, struct cred *new, int ret)
{
	struct ebpf_oom_config *cfg;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&oom_config, &zero);
	if (!cfg || !(cfg->needs & EBPF_OOM_M_UID))
		return 0;
	report(bpf_get_current_task_btf(), NULL, EBPF_OOM_EV_CREDS);
	return 0;
}
