// SPDX-License-Identifier: GPL-2.0-only
/*
 * Workload for benchmarks/select_latency (built static, copied into the guest):
 *   tasks sleep N   fork N processes that wait forever, print "ready", wait
 *   tasks hog       allocate and touch memory 1 MiB at a time until killed
 * Every process is named lang-idle or lang-hog.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define MIB (1 << 20)

static void idle(void)
{
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "sleep")) {
		long n = strtol(argv[2], NULL, 10);

		prctl(PR_SET_NAME, "lang-idle");
		for (long i = 0; i < n; i++) {
			pid_t pid = fork();

			if (pid < 0) {
				perror("fork");
				return 1;
			}
			if (pid == 0)
				idle();
		}
		printf("ready\n");
		fflush(stdout);
		idle();
	}
	if (argc == 2 && !strcmp(argv[1], "hog")) {
		prctl(PR_SET_NAME, "lang-hog");
		for (;;) {
			char *p = malloc(MIB);

			if (p)
				memset(p, 1, MIB);
		}
	}
	fprintf(stderr, "usage: tasks sleep N | tasks hog\n");
	return 2;
}
