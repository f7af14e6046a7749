/* The kernel's floor for one container: what any runtime must at least pay the kernel.
 *
 *     floor NAMESPACES PROGRAM LEAF...
 *
 * NAMESPACES  comma-separated OCI namespace types (mount,uts,ipc,pid,network,cgroup), the
 *             same list as the benchmark's config.json;
 * PROGRAM     an absolute path, exec'd as is (the bundle's busybox /bin/true);
 * LEAF        the container's cgroup, one absolute path per mounted hierarchy (under the
 *             suite's own parent), created here and removed after.
 *
 * What it does, and nothing more: mkdir the leaf cgroups (a v1 cpuset's cpus and mems copied
 * down from the parent, as runtimes do), clone(2) a child into new namespaces of
 * every listed type but cgroup, write the child's pid into every leaf's cgroup.procs, let the
 * child go; the child makes its mount namespace recursively private, unshares its cgroup
 * namespace (now that it is in its cgroup, as runtimes order it) and execs PROGRAM. The
 * parent waits for it, removes the leaves and exits with its status.
 *
 * What it does not do (each runtime does): no rootfs, no pivot_root, no /proc, /dev or other
 * mounts, no capabilities, seccomp, devices rules, hostname, state on disk or exec fifo.
 * Compiled by the suite: cc -O2 -o floor floor.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char **leaves;
static int n_leaves;
static int gate[2];
static int unshare_cgroup;
static const char *program;

static void die(const char *what) {
	fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
	exit(125);
}

static int ns_flag(const char *type) {
	static const struct { const char *name; int flag; } types[] = {
		{"mount", CLONE_NEWNS}, {"uts", CLONE_NEWUTS}, {"ipc", CLONE_NEWIPC},
		{"pid", CLONE_NEWPID}, {"network", CLONE_NEWNET}, {"cgroup", CLONE_NEWCGROUP},
	};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcmp(type, types[i].name) == 0)
			return types[i].flag;
	fprintf(stderr, "floor: NAMESPACES: unknown type '%s'\n", type);
	exit(125);
}

static void copy_file(const char *from_dir, const char *to_dir, const char *name) {
	char path[PATH_MAX], value[4096];
	snprintf(path, sizeof(path), "%s/%s", from_dir, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die(path);
	ssize_t n = read(fd, value, sizeof(value));
	close(fd);
	if (n < 0)
		die(path);
	snprintf(path, sizeof(path), "%s/%s", to_dir, name);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, value, n) != n)
		die(path);
	close(fd);
}

/* The leaves; their parents (the suite's own) already exist. */
static void make_leaves(void) {
	for (int i = 0; i < n_leaves; i++) {
		char parent[PATH_MAX], path[PATH_MAX];
		if (mkdir(leaves[i], 0755) < 0)
			die(leaves[i]);
		snprintf(parent, sizeof(parent), "%s/..", leaves[i]);
		snprintf(path, sizeof(path), "%s/cgroup.controllers", leaves[i]);
		if (access(path, F_OK) == 0)
			continue; /* cgroup v2: cpuset is inherited */
		snprintf(path, sizeof(path), "%s/cpuset.cpus", leaves[i]);
		if (access(path, F_OK) == 0) {
			copy_file(parent, leaves[i], "cpuset.cpus");
			copy_file(parent, leaves[i], "cpuset.mems");
		}
	}
}

static void join_leaves(pid_t pid) {
	char path[PATH_MAX], text[32];
	int len = snprintf(text, sizeof(text), "%d", pid);
	for (int i = 0; i < n_leaves; i++) {
		snprintf(path, sizeof(path), "%s/cgroup.procs", leaves[i]);
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, text, len) != len)
			die(path);
		close(fd);
	}
}

/* A just-reaped process can keep its cgroup busy for a moment: retry briefly. */
static void remove_leaves(void) {
	for (int i = n_leaves - 1; i >= 0; i--) {
		for (int tries = 0; rmdir(leaves[i]) < 0; tries++) {
			if (errno != EBUSY || tries == 1000)
				die(leaves[i]);
			nanosleep(&(struct timespec){0, 1000000}, NULL);
		}
	}
}

static int child(void *arg) {
	(void)arg;
	char go;
	close(gate[1]);
	if (read(gate[0], &go, 1) != 1)
		_exit(126); /* the parent failed: it reports why */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		die("make / private");
	if (unshare_cgroup && unshare(CLONE_NEWCGROUP) < 0)
		die("unshare cgroup");
	execl(program, program, (char *)NULL);
	die(program);
	return 0;
}

int main(int argc, char **argv) {
	static char stack[64 * 1024] __attribute__((aligned(16)));
	if (argc < 4 || argv[2][0] != '/') {
		fprintf(stderr, "usage: floor NAMESPACES /ABSOLUTE/PROGRAM /CGROUP/LEAF...\n");
		return 125;
	}
	int flags = 0;
	char *list = strdup(argv[1]);
	for (char *type = strtok(list, ","); type; type = strtok(NULL, ","))
		flags |= ns_flag(type);
	if (!(flags & CLONE_NEWNS)) {
		fprintf(stderr, "floor: NAMESPACES: mount is required (the child remounts / private)\n");
		return 125;
	}
	unshare_cgroup = flags & CLONE_NEWCGROUP;
	flags &= ~CLONE_NEWCGROUP;
	program = argv[2];
	leaves = argv + 3;
	n_leaves = argc - 3;

	make_leaves();
	if (pipe2(gate, O_CLOEXEC) < 0)
		die("pipe");
	pid_t pid = clone(child, stack + sizeof(stack), flags | SIGCHLD, NULL);
	if (pid < 0)
		die("clone");
	close(gate[0]);
	join_leaves(pid);
	if (write(gate[1], "g", 1) != 1)
		die("gate");
	close(gate[1]);
	int status;
	if (waitpid(pid, &status, 0) < 0)
		die("waitpid");
	remove_leaves();
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
