/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The collection's bundled minimal CO-RE type header.
 *
 * A stand-in for the vmlinux.h that `bpftool btf dump file
 * /sys/kernel/btf/vmlinux format c` generates: only the kernel types and
 * fields the collection's BPF programs read, so they compile on a machine
 * without the target kernel's BTF (the controller).  Every struct carries
 * __attribute__((preserve_access_index)) (the pragma below), so field offsets
 * are relocated by libbpf against the running kernel's BTF at load time: a
 * field's position here does not matter, only its name and type.  Structs
 * are deliberately incomplete; never take their sizeof.
 *
 * Values that CO-RE does not relocate (enum bpf_map_type, the BPF_* flags,
 * pt_regs on x86-64) are the stable UAPI/ABI values.
 */
#ifndef __VMLINUX_H__
#define __VMLINUX_H__

/* ---- Basic types ------------------------------------------------------ */

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __s8 s8;
typedef __u8 u8;
typedef __s16 s16;
typedef __u16 u16;
typedef __s32 s32;
typedef __u32 u32;
typedef __s64 s64;
typedef __u64 u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

typedef _Bool bool;
enum {
	false = 0,
	true = 1,
};

typedef unsigned long size_t;
typedef long ssize_t;
typedef int pid_t;
typedef unsigned int uid_t;
typedef unsigned int gid_t;
typedef unsigned int gfp_t;

#ifndef NULL
#define NULL ((void *)0)
#endif

/* ---- UAPI values used by libbpf's bpf_helpers.h ------------------------- */

enum bpf_map_type {
	BPF_MAP_TYPE_UNSPEC = 0,
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PROG_ARRAY = 3,
	BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_STACK_TRACE = 7,
	BPF_MAP_TYPE_CGROUP_ARRAY = 8,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_LRU_PERCPU_HASH = 10,
	BPF_MAP_TYPE_LPM_TRIE = 11,
	BPF_MAP_TYPE_ARRAY_OF_MAPS = 12,
	BPF_MAP_TYPE_HASH_OF_MAPS = 13,
	BPF_MAP_TYPE_QUEUE = 22,
	BPF_MAP_TYPE_STACK = 23,
	BPF_MAP_TYPE_RINGBUF = 27,
	BPF_MAP_TYPE_TASK_STORAGE = 29,
	BPF_MAP_TYPE_BLOOM_FILTER = 30,
};

/* bpf_map_update_elem() flags */
enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
	BPF_F_LOCK = 4,
};

/* bpf_ringbuf_output() and friends */
enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

/* Argument block of raw_tp programs (include/uapi/linux/bpf.h). */
struct bpf_raw_tracepoint_args {
	__u64 args[0];
};

/* x86-64 register frame, as bpf_tracing.h's PT_REGS_* macros read it. */
struct pt_regs {
	unsigned long r15;
	unsigned long r14;
	unsigned long r13;
	unsigned long r12;
	unsigned long bp;
	unsigned long bx;
	unsigned long r11;
	unsigned long r10;
	unsigned long r9;
	unsigned long r8;
	unsigned long ax;
	unsigned long cx;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
	unsigned long ip;
	unsigned long cs;
	unsigned long flags;
	unsigned long sp;
	unsigned long ss;
};

/* ---- Atomics and counters ----------------------------------------------- */

typedef struct {
	int counter;
} atomic_t;

typedef struct {
	s64 counter;
} atomic64_t;

typedef atomic64_t atomic_long_t;

typedef struct {
	uid_t val;
} kuid_t;

typedef struct {
	gid_t val;
} kgid_t;

/* include/linux/percpu_counter.h: `count` is what get_mm_counter() reads
 * (percpu_counter_read_positive: approximate, may dip below zero). */
struct percpu_counter {
	s64 count;
};

/* ---- Tasks ------------------------------------------------------------- */

struct cred {
	kuid_t uid;
	kgid_t gid;
	kuid_t euid;
	kgid_t egid;
};

/* include/linux/sched/coredump.h: bits of mm_struct.flags */
#define MMF_OOM_SKIP 21

/*
 * Indexes of mm_struct.rss_stat[]: an anonymous enum in
 * linux/mm_types_task.h (so CO-RE cannot relocate it by name), unchanged
 * since it was introduced.
 */
#define MM_FILEPAGES 0
#define MM_ANONPAGES 1
#define MM_SWAPENTS 2
#define MM_SHMEMPAGES 3
#define NR_MM_COUNTERS 4

struct mm_struct {
	atomic_long_t pgtables_bytes;
	struct percpu_counter rss_stat[NR_MM_COUNTERS];
	unsigned long flags;
	unsigned long total_vm;
};

struct list_head {
	struct list_head *next;
	struct list_head *prev;
};

struct signal_struct {
	atomic_t live;
	struct list_head thread_head;	/* the threads, by task_struct.thread_node */
	bool oom_flag_origin;
	short oom_score_adj;
	short oom_score_adj_min;
	struct mm_struct *oom_mm;
};

struct completion;
struct css_set;

/* include/linux/sched.h: task_struct.flags */
#define PF_KTHREAD 0x00200000

struct task_struct {
	unsigned int __state;
	unsigned int flags;
	pid_t pid;
	pid_t tgid;
	char comm[16];
	struct mm_struct *mm;
	struct signal_struct *signal;
	const struct cred *real_cred;
	const struct cred *cred;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct completion *vfork_done;
	struct css_set *cgroups;
	u64 start_boottime;
	struct list_head thread_node;
};

/* ---- Control groups ---------------------------------------------------- */

/* The order depends on the kernel's configuration: read values with
 * bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id). */
enum cgroup_subsys_id {
	cpuset_cgrp_id = 0,
	cpu_cgrp_id = 1,
	cpuacct_cgrp_id = 2,
	io_cgrp_id = 3,
	memory_cgrp_id = 4,
	devices_cgrp_id = 5,
	freezer_cgrp_id = 6,
	net_cls_cgrp_id = 7,
	perf_event_cgrp_id = 8,
	net_prio_cgrp_id = 9,
	hugetlb_cgrp_id = 10,
	pids_cgrp_id = 11,
	rdma_cgrp_id = 12,
	misc_cgrp_id = 13,
	CGROUP_SUBSYS_COUNT = 14,
};

/* A cgroup directory's kernfs node: `id` is the cgroup id, which on 64-bit
 * kernels is also the directory's inode number. */
struct kernfs_node {
	struct kernfs_node *parent;
	const char *name;
	u64 id;
};

struct cgroup;

/* A hierarchy: the cgroup v2 one, or one of the v1 ones. */
struct cgroup_root {
	int hierarchy_id;
};

struct cgroup_subsys_state {
	struct cgroup *cgroup;
	struct cgroup_subsys_state *parent;
	int id;
};

struct cgroup {
	struct cgroup_subsys_state self;
	int level;
	struct kernfs_node *kn;
	struct cgroup_root *root;
	struct cgroup *ancestors[];	/* by level, itself at its own (Linux 6.0) */
};

struct css_set {
	struct cgroup_subsys_state *subsys[CGROUP_SUBSYS_COUNT];
	struct cgroup *dfl_cgrp;
};

struct page_counter {
	atomic_long_t usage;
	unsigned long max;
};

struct mem_cgroup {
	struct cgroup_subsys_state css;
	struct page_counter memory;
};

/* ---- The OOM killer (include/linux/oom.h) ------------------------------ */

/* The hook kernel's return values of bpf_oom_evaluate_task() (its patch puts
 * them into BTF; bpf/include/ebpf_oom.h explains them). */
enum bpf_oom_eval_ret {
	NO_BPF_POLICY = 0,
	BPF_EVAL_ABORT = 1,
	BPF_EVAL_NEXT = 2,
	BPF_EVAL_SELECT = 3,
};

enum oom_constraint {
	CONSTRAINT_NONE = 0,
	CONSTRAINT_CPUSET = 1,
	CONSTRAINT_MEMORY_POLICY = 2,
	CONSTRAINT_MEMCG = 3,
};

struct zonelist;

typedef struct {
	unsigned long bits[1];
} nodemask_t;

struct oom_control {
	struct zonelist *zonelist;
	nodemask_t *nodemask;
	struct mem_cgroup *memcg;	/* NULL for a global OOM */
	const gfp_t gfp_mask;
	const int order;		/* -1: requested by sysrq */
	unsigned long totalpages;
	struct task_struct *chosen;	/* the current choice, or NULL */
	long chosen_points;
	enum oom_constraint constraint;
};

/* ---- Task iterators (include/linux/bpf.h, kernel/bpf/task_iter.c) ------- */

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
	u64 session_id;
	u64 seq_num;
};

struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
};

#pragma clang attribute pop

#endif /* __VMLINUX_H__ */
