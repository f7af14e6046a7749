/* Times one command and reports its peak RSS:
 *
 *     timer PROGRAM [ARG...]     (fd 3: where the result goes)
 *
 * forks, execs PROGRAM (absolute path), waits for it with wait4 and writes
 * "<wall seconds> <ru_maxrss KiB> <exit code, or 128+signal>\n" to fd 3.
 *
 * Why C and not the Python helper itself: ru_maxrss is kept across exec, and a process starts
 * with the memory of whoever forked it (vfork's shared memory counts the same), so a command
 * spawned by a 10 MiB Python process reports at least 10 MiB. Forked from this program, a
 * command's peak RSS is its own (this program's ~1 MiB is the floor).
 * Compiled by the suite: cc -O2 -o timer timer.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 2 || argv[1][0] != '/' || fcntl(3, F_SETFD, FD_CLOEXEC) < 0) {
		fprintf(stderr, "usage: timer /ABSOLUTE/PROGRAM [ARG...]  (with fd 3 open)\n");
		return 125;
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid_t pid = fork();
	if (pid < 0) {
		perror("timer: fork");
		return 125;
	}
	if (pid == 0) {
		execv(argv[1], argv + 1);
		fprintf(stderr, "timer: %s: %s\n", argv[1], strerror(errno));
		_exit(127);
	}
	int status;
	struct rusage usage;
	if (wait4(pid, &status, 0, &usage) < 0) {
		perror("timer: wait4");
		return 125;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double wall = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	dprintf(3, "%.6f %ld %d\n", wall, usage.ru_maxrss, code);
	return 0;
}
