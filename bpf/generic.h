/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Map and record layout of the generic declarative policy program
 * (bpf/generic.bpf.c, its classification in bpf/classify.h), shared with
 * plugins/module_utils/renderer.py, whose ctypes structs and constants carry
 * the same names (tests/unit/test_renderer.py checks that sizes, offsets and
 * values agree with the compiled object).
 *
 * Only fixed-width types and explicit padding: the renderer writes the map
 * values byte for byte. schemas/README.md explains the semantics.
 */
#ifndef EBPF_OOM_GENERIC_H
#define EBPF_OOM_GENERIC_H

/* Entries of the oom_rules array map: at most this many rules per policy. */
#define EBPF_OOM_MAX_RULES 64
/* TASK_COMM_LEN: 15 bytes and the NUL. */
#define EBPF_OOM_COMM_LEN 16
/* Deepest cgroup a rule may name (the root is level 0). */
#define EBPF_OOM_MAX_CGROUP_LEVEL 16
/* A cgroup rule's path as the kernel writes it ("/system.slice/x.service"),
 * NUL padded: the key of oom_cgroup_paths. Paths of 255 bytes or more never
 * match (the schema allows 254). */
#define EBPF_OOM_PATH_LEN 256

/* Tiers: lower dies first. `select` rules rank above every `prefer` tier. */
#define EBPF_OOM_TIER_SELECT 0
#define EBPF_OOM_TIER_MIN 1
#define EBPF_OOM_TIER_MAX 1000

/* ebpf_oom_config.scope: bits */
#define EBPF_OOM_SCOPE_GLOBAL 1
#define EBPF_OOM_SCOPE_MEMCG 2

/* ebpf_oom_rule.action and ebpf_oom_config.fallback_action */
#define EBPF_OOM_ACT_KERNEL 0	/* no opinion: the kernel's heuristic (fallback only) */
#define EBPF_OOM_ACT_PROTECT 1	/* BPF_EVAL_NEXT */
#define EBPF_OOM_ACT_PREFER 2	/* ranked by tier, then points */
#define EBPF_OOM_ACT_SELECT 3	/* ranked above every tier */
#define EBPF_OOM_ACT_ABORT 4	/* BPF_EVAL_ABORT (memcg OOMs only) */

/* ebpf_oom_rule.by: the points that order tasks within a tier */
#define EBPF_OOM_BY_BADNESS 0	/* oom_badness(): rss + swap + page tables + oom_score_adj */
#define EBPF_OOM_BY_RSS 1	/* resident pages only */

/* ebpf_oom_rule.match: bits, every condition set must hold */
#define EBPF_OOM_M_PID 1	/* tgid == pid */
#define EBPF_OOM_M_COMM 2	/* comm bytes under comm_mask equal */
#define EBPF_OOM_M_CGROUP 4	/* the live cgroup at the rule's path is the task's
				 * cgroup or an ancestor (oom_rule_cgroups) */
#define EBPF_OOM_M_UID 8	/* real uid == uid */

/* One rule: value of the oom_rules array map, key = its position (__u32). */
struct ebpf_oom_rule {
	char comm[EBPF_OOM_COMM_LEN];	/* NUL padded */
	char comm_mask[EBPF_OOM_COMM_LEN];	/* 0xff for each byte compared:
						 * exact = the name and its NUL, prefix = the name */
	__u32 match;		/* EBPF_OOM_M_* */
	__u32 action;		/* EBPF_OOM_ACT_* except KERNEL */
	__u32 tier;		/* prefer: EBPF_OOM_TIER_MIN..MAX; select: TIER_SELECT */
	__u32 by;		/* EBPF_OOM_BY_* */
	__u32 pid;
	__u32 uid;
	__u32 cgroup_level;	/* depth of the rule's path below the root */
	__u32 pad;
};

/*
 * Cgroup rules match by path, whatever cgroup lives there now. Two maps keep
 * that current, without the controller:
 *   oom_cgroup_paths  hash, key: struct ebpf_oom_path, value: __u64, the bit
 *                     mask of the rules (1 << index) naming that path; written
 *                     by the renderer;
 *   oom_rule_cgroups  array, key: the rule's index, value: __u64, the id of the
 *                     cgroup now at the rule's path, 0 while there is none;
 *                     written by the programs on the cgroup_mkdir and
 *                     cgroup_rmdir tracepoints, and once by the loader for the
 *                     cgroups that exist when the policy is applied.
 */
struct ebpf_oom_path {
	char path[EBPF_OOM_PATH_LEN];
};

/* The single entry (key 0) of the oom_config array map. */
struct ebpf_oom_config {
	__u32 nr_rules;		/* rules 0..nr_rules-1 are evaluated in order */
	__u32 scope;		/* EBPF_OOM_SCOPE_*: the OOMs the policy acts in */
	__u32 fallback_action;	/* KERNEL, PROTECT or PREFER: tasks no rule matches */
	__u32 fallback_tier;
	__u32 fallback_by;
	__u32 needs;		/* union of the rules' match bits: what to read per task */
};

/*
 * The hand-over between two instances of a policy (a new document, a new
 * object): the new one is loaded with its own rule maps and attached beside
 * the old one, which keeps deciding until the loader writes the new one's
 * token (the global ebpf_oom_token) into the oom_decider array map, which
 * both share. Each OOM is decided by the instance whose token was there when
 * it started: the name program latches it, the program at out_of_memory()'s
 * exit clears it. So one OOM is judged by one rule set, never a mixture, and
 * the loader waits for an OOM still judged by the old one before it unpins it.
 */
#define EBPF_OOM_DECIDER_NEXT 0	/* key: the token of the instance that decides the
				 * OOMs that start from now on (written by the loader) */
#define EBPF_OOM_DECIDER_SCAN 1	/* key: the token of the instance deciding the OOM in
				 * progress, 0: none in progress */

/* The single entry (key 0) of the oom_state array map: the scan in progress.
 * OOM scans are serialized by the kernel's oom_lock. */
struct ebpf_oom_state {
	__u64 oc;		/* address of the scan's oom_control */
	__s64 points;		/* the ranked choice's points */
	__u64 scans;		/* OOMs in the policy's scope since load */
	__u64 evaluated;	/* tasks evaluated since load */
	__u64 cache_css;	/* the last classified task: css_set (0: rules ignore cgroups), */
	__u64 cache_comm[2];	/* name (0: rules ignore names), */
	__u64 chosen;		/* the task it SELECTed (oc->chosen, unless the kernel dropped it) */
	__u32 cache_uid;	/* uid (0: rules ignore uids), */
	__s32 cache_rule;	/* and its first matching rule, -1: none */
	__u32 cache_valid;	/* the cache_ fields hold a task of this scan */
	__u32 have;		/* this program SELECTed a task in this scan */
	__u32 tier;		/* the ranked choice's tier */
	__u32 shadow;		/* this OOM is judged in shadow mode (oom_mode, latched) */
};

/*
 * Shadow mode: a policy that judges every OOM and decides none. The same
 * programs run both modes; oom_mode (key 0, a __u32) says which, the name
 * program latches it at the start of each OOM (oom_state.shadow), so one OOM
 * is judged in one mode, and the loader switches it with one write, in place.
 * In shadow mode the name program does not name the policy and the
 * evaluation program answers NO_BPF_POLICY; an fentry program on the same hook
 * (ebpf_oom_shadow) judges each candidate as the policy would, and ranks the
 * choice the whole scan would end with (the best ranked task, else the task
 * with the most badness among those left to the kernel); a program on the
 * oom/mark_victim tracepoint notes the task the kernel killed, and the end of
 * out_of_memory() logs the verdict in oom_shadow_log and counts it.
 */
#define EBPF_OOM_MODE_ENFORCE 0
#define EBPF_OOM_MODE_SHADOW 1

/* Slots of oom_shadow_log: the verdicts of the last EBPF_OOM_VERDICTS OOMs. */
#define EBPF_OOM_VERDICTS 64

/* ebpf_oom_verdict.flags */
#define EBPF_OOM_V_ABORT 1	/* the policy would have aborted this (memcg) OOM */
#define EBPF_OOM_V_MEMCG 2	/* a memory cgroup OOM */

/* One OOM judged in shadow: slot (seq - 1) % EBPF_OOM_VERDICTS of oom_shadow_log. */
struct ebpf_oom_verdict {
	__u64 seq;		/* OOMs judged since load, from 1; 0: an empty slot */
	__u64 start_ns;		/* bpf_ktime_get_ns() (CLOCK_MONOTONIC) when the OOM began */
	__u64 end_ns;		/* ... and when it ended */
	__u64 cgroup_id;	/* the task it would kill: its cgroup v2 id, */
	__s64 points;		/* its points (by its rule's `by`), */
	__u32 pid;		/* its tgid, 0: it would kill none, */
	__s32 rule;		/* its rule, -1: the fallback, */
	__u32 action;		/* EBPF_OOM_ACT_*, */
	__u32 tier;
	__u32 killed;		/* the tgid the kernel marked first in this OOM, 0: none */
	__u32 flags;		/* EBPF_OOM_V_* */
	char comm[EBPF_OOM_COMM_LEN];	/* and its name */
};

/* The single entry (key 0) of oom_shadow_scan: the OOM being judged in shadow. */
struct ebpf_oom_shadow_scan {
	struct ebpf_oom_verdict ranked;	/* the best select/prefer task so far */
	struct ebpf_oom_verdict kernel;	/* the most badness among the tasks left to the kernel */
	__u32 open;		/* the name program opened this OOM in shadow mode */
	__u32 have;		/* EBPF_OOM_HAVE_* */
	__u32 judged;		/* candidates judged */
	__u32 killed;		/* the first tgid the kernel marked */
};

#define EBPF_OOM_HAVE_RANKED 1
#define EBPF_OOM_HAVE_KERNEL 2
#define EBPF_OOM_HAVE_ABORT 4

/* The single entry (key 0) of oom_shadow_stats: counters since load. */
struct ebpf_oom_shadow_stats {
	__u64 judged;		/* OOMs judged in shadow (the verdicts logged) */
	__u64 kills;		/* of those, the ones the kernel ended with a kill */
	__u64 disagreements;	/* of those, the ones whose victim is not the task it would kill */
};

/* The single entry (key 0) of the oom_imagined array map: the OOM the task
 * iterator imagines, written before each run (ebpf.oom.explain). A pinned
 * iterator is run again with new values, nothing loaded. */
struct ebpf_oom_imagined {
	__u64 totalpages;	/* machine RAM + swap, or the memory cgroup's limit */
	__u64 memcg_id;		/* a memcg OOM: the memory cgroup's id; 0: a global OOM */
	__u32 memcg_level;	/* its level */
	__u32 pad;
};

/* ebpf_oom_task.flags */
#define EBPF_OOM_T_IN_MEMCG 1	/* in the subtree of the imagined OOM's memory cgroup */
#define EBPF_OOM_T_REAPED 2	/* MMF_OOM_SKIP: reaped already, the kernel skips it */
#define EBPF_OOM_T_VFORK 4	/* a vfork child sharing its parent's mm: never killed */
#define EBPF_OOM_T_VICTIM 8	/* an OOM victim still exiting */

/*
 * One candidate of an imagined OOM: a record the task iterator writes for
 * every thread-group leader the OOM killer would consider (not a kernel
 * thread, not init, with an mm), classified by the policy's rules.
 */
struct ebpf_oom_task {
	__u64 cgroup_id;	/* the task's cgroup v2 id */
	__u64 rss;		/* resident pages: file + anon + shmem */
	__u64 swap;		/* swap entries */
	__u64 pgtables;		/* page-table pages */
	__s64 points;		/* oom_badness() with the imagined OOM's totalpages */
	__u32 pid;		/* tgid */
	__u32 uid;		/* real uid */
	__s32 rule;		/* the first rule it matches, -1: the fallback */
	__u32 action;		/* EBPF_OOM_ACT_* of that rule or of the fallback */
	__u32 tier;
	__u32 by;
	__s32 oom_score_adj;
	__u32 flags;		/* EBPF_OOM_T_* */
	char comm[EBPF_OOM_COMM_LEN];
};

/*
 * The score_adj backend: where the kernel has no hook, a policy steers the
 * kernel's own heuristic through /proc/PID/oom_score_adj. Programs on the
 * events that can change a process's class (exec, a new name, a move to
 * another cgroup, new credentials, fork) tell the agent
 * (plugins/module_utils/agent.py) through the oom_adj_events ring buffer,
 * when the class may need a write: the process matches a rule, or carries a
 * value the agent wrote, or its parent does (a child inherits the value).
 * Events the ring buffer had no room for are counted in oom_adj_lost (key 0,
 * a __u64): the agent then sweeps every process with the task iterator.
 *
 * oom_adjusted holds the live processes that carry a value the agent wrote:
 * the agent notes the ones it writes, the fork program notes a child that
 * inherited one (at once, so that no lost event hides it from the sweep), the
 * exit program drops a process when its last thread exits.
 */
#define EBPF_OOM_EVENTS_BYTES 262144	/* the ring buffer: thousands of events */
#define EBPF_OOM_ADJUSTED_MAX 65536	/* live processes in oom_adjusted */
#define EBPF_OOM_NS_PER_TICK 10000000	/* NSEC_PER_SEC / USER_HZ: /proc/PID/stat's starttime unit */

/* A value of oom_adjusted (key: the process's tgid). */
struct ebpf_oom_adjusted {
	__u64 start_ns;		/* its start_boottime (the agent's notes: in whole ticks),
				 * so that a pid reused since is another process */
	__s32 original;		/* the value it carried before the agent wrote (a child:
				 * its parent's) */
	__s32 written;		/* the value the agent wrote, which a child inherits */
};

/* ebpf_oom_adj_event.reason */
#define EBPF_OOM_EV_EXEC 1	/* sched_process_exec: a new program, a new name */
#define EBPF_OOM_EV_RENAME 2	/* task_rename: a new name (prctl, or exec) */
#define EBPF_OOM_EV_ATTACH 3	/* cgroup_attach_task: moved to another cgroup */
#define EBPF_OOM_EV_FORK 4	/* sched_process_fork: a new process */
#define EBPF_OOM_EV_CREDS 5	/* commit_creds: another uid (setuid and the like) */

/* One record of the oom_adj_events ring buffer. */
struct ebpf_oom_adj_event {
	__u32 pid;		/* the process (tgid) */
	__u32 parent;		/* its parent's tgid */
	__s32 rule;		/* the first rule it matches, -1: none */
	__u32 action;		/* EBPF_OOM_ACT_* of that rule or of the fallback */
	__u32 tier;
	__u32 reason;		/* EBPF_OOM_EV_* */
	__s32 oom_score_adj;	/* its value at the event */
	__u32 pad;
	char comm[EBPF_OOM_COMM_LEN];	/* the name it was classified by */
	__u64 start_ns;		/* its start_boottime: /proc/PID/stat's starttime in ns, so
				 * that an event of a pid reused since is not applied */
};

#endif /* EBPF_OOM_GENERIC_H */
