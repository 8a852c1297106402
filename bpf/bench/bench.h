/* SPDX-License-Identifier: GPL-2.0-only */
/* Map layout of bench.bpf.c, read by guest.py. */
#ifndef EBPF_OOM_BENCH_H
#define EBPF_OOM_BENCH_H

#define BENCH_SAMPLES 256	/* ring of the last selection times, ns */

struct bench_start {
	__u64 oc;		/* the oom_control of the OOM in progress */
	__u64 ns;		/* bpf_ktime_get_ns() at out_of_memory() entry; 0: none */
};

#endif
