/*
 * The few syscalls the parent needs that Python lacks, for cffi (build.py).  Everything a
 * container's own processes do is executor.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/nsfs.h>

#include "helpers.h"

/* The CLONE_NEW* type of a namespace file (NS_GET_NSTYPE), or -1 (ENOTTY: not one). */
int corral_ns_type(int fd)
{
    return ioctl(fd, NS_GET_NSTYPE);
}

/* set_mempolicy(2) for the calling thread (glibc has no wrapper without libnuma): corral
 * features probes which modes this host accepts. */
int corral_set_mempolicy(int mode, const unsigned long *nodemask, unsigned long maxnode)
{
    return (int)syscall(SYS_set_mempolicy, mode, nodemask, maxnode);
}

/* A hook (runtime/hooks.py): posix_spawn with `cwd` as its working directory (Python's
 * os.posix_spawn has no chdir action; fork is unsafe in the supervisor's threads), stdin
 * from `stdin_fd`, stdout and stderr to `out_fd`, default SIGPIPE, no blocked signals.
 * Returns 0 with the pid in *pid, or an errno value (posix_spawn's convention). */
int corral_spawn_hook(const char *path, char *const argv[], char *const envp[], int stdin_fd,
                      int out_fd, const char *cwd, int *pid)
{
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    sigset_t none, pipe_only;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc)
        return rc;
    rc = posix_spawnattr_init(&attr);
    if (rc) {
        posix_spawn_file_actions_destroy(&actions);
        return rc;
    }
    sigemptyset(&none);
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    if (!rc)
        rc = posix_spawn_file_actions_addchdir_np(&actions, cwd);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&actions, out_fd, 2);
    if (!rc)
        rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    if (!rc)
        rc = posix_spawnattr_setsigdefault(&attr, &pipe_only);
    if (!rc)
        rc = posix_spawnattr_setsigmask(&attr, &none);
    pid_t child = 0;
    if (!rc)
        rc = posix_spawn(&child, path, &actions, &attr, argv, envp);
    *pid = (int)child;
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    return rc;
}
