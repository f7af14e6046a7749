/*
 * corral's namespace stage: the steps that a Python interpreter cannot do safely.
 *
 * Joining a user or mount namespace needs a single-threaded process, entering a new pid
 * namespace needs a fork after the unshare, the process must stay non-dumpable while it can be
 * seen from inside the container, and the last steps (drop capabilities, change user, close
 * descriptors, wait on the exec fifo, exec) must run with no interpreter between them.
 *
 * Two entry points, each a named sequence of stages:
 *
 *   corral_nsenter():   stage_timens_open -> stage_join -> stage_userns -> stage_unshare ->
 *                       stage_timens -> stage_clone -> stage_init_session
 *                       returns 0 in the container's init (the grandchild); the intermediate
 *                       process reports the init's pid and exits.
 *   corral_finalize():  stage_cgroupns -> stage_keyring -> stage_bounding -> stage_user ->
 *                       stage_nondumpable -> stage_caps -> stage_nnp ->
 *                       stage_check_exec -> stage_close_fds -> (report "waiting") ->
 *                       stage_fifo (exec: stage_await_hangup) -> stage_signals ->
 *                       stage_start_hooks -> stage_seccomp (-> the notify fd to the
 *                       seccomp agent) -> execve
 *
 * After "waiting" the parent is gone (create returned): errors from then on go to stderr and
 * the init exits 127 without running the container's process.
 *
 * Every syscall is checked.  Errors go to the parent over the sync socket as one frame:
 * 4-byte big-endian length, then a JSON object {"type":"error","stage":..,"message":..,"errno":..},
 * the same framing corral/supervisor/protocol.py speaks.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/keyctl.h>
#include <linux/mount.h>
#include <linux/nsfs.h>
#include <linux/seccomp.h>

#include "nsenter.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#define SYS_move_mount 429
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef CAP_SYS_ADMIN
#define CAP_SYS_ADMIN 21
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

/* ---- framing ------------------------------------------------------------------------ */

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len); /* SIGPIPE is ignored (inherited from Python) */
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) {
            errno = EPIPE;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_frame(int fd, const char *json)
{
    size_t len = strlen(json);
    unsigned char hdr[4] = {len >> 24, len >> 16, len >> 8, len};
    if (write_all(fd, hdr, 4) < 0)
        return -1;
    return write_all(fd, json, len);
}

/* Reads one frame and checks that it is exactly `expected` (the parent encodes compactly). */
static int expect_frame(int fd, const char *expected)
{
    unsigned char hdr[4];
    char buf[256];
    if (read_all(fd, hdr, 4) < 0)
        return -1;
    size_t len = ((size_t)hdr[0] << 24) | (hdr[1] << 16) | (hdr[2] << 8) | hdr[3];
    if (len >= sizeof(buf) || read_all(fd, buf, len) < 0) {
        errno = EPROTO;
        return -1;
    }
    buf[len] = '\0';
    if (strcmp(buf, expected) != 0) {
        errno = EPROTO;
        return -1;
    }
    return 0;
}

/* JSON-escapes src into dst (always NUL-terminated). */
static void json_escape(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    for (; *src && o + 7 < cap; src++) {
        unsigned char c = (unsigned char)*src;
        if (c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", c);
        } else {
            dst[o++] = (char)c;
        }
    }
    dst[o] = '\0';
}

/* Sends an error frame: "<what>: <strerror(errno)>".  Keeps errno. */
static void send_error(int fd, const char *stage, int err, const char *fmt, ...)
{
    char what[1024], esc[2200], frame[2600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (err) {
        /* lower-case, as Go's (and so runc's) messages are: engines match on them */
        size_t l = strlen(what);
        snprintf(what + l, sizeof(what) - l, ": %s", strerror(err));
        if (what[l + 2] >= 'A' && what[l + 2] <= 'Z')
            what[l + 2] = (char)(what[l + 2] - 'A' + 'a');
    }
    json_escape(esc, sizeof(esc), what);
    snprintf(frame, sizeof(frame),
             "{\"type\":\"error\",\"stage\":\"%s\",\"message\":\"%s\",\"errno\":%d}", stage, esc,
             err);
    send_frame(fd, frame);
    errno = err;
}

/* ---- corral_nsenter ----------------------------------------------------------------- */

static const char *ns_name(int type)
{
    switch (type) {
    case CLONE_NEWUSER: return "user";
    case CLONE_NEWNS: return "mount";
    case CLONE_NEWUTS: return "uts";
    case CLONE_NEWIPC: return "ipc";
    case CLONE_NEWNET: return "network";
    case CLONE_NEWPID: return "pid";
    case CLONE_NEWCGROUP: return "cgroup";
    case CLONE_NEWTIME: return "time";
    default: return "unknown";
    }
}

/* Opens every path first (later setns calls change what paths mean) and checks that each is
 * a namespace of the asked type, then joins the user namespace before the others, as the
 * kernel needs for the others to be permitted. */
static int stage_join(const struct nsenter_config *cfg)
{
    int fds[16];
    if (cfg->njoin > 16) {
        send_error(cfg->sync_fd, "join", EINVAL, "too many namespace paths");
        return -1;
    }
    for (int i = 0; i < cfg->njoin; i++) {
        fds[i] = open(cfg->join_paths[i], O_RDONLY | O_CLOEXEC);
        if (fds[i] < 0) {
            send_error(cfg->sync_fd, "join", errno, "open %s namespace %s",
                       ns_name(cfg->join_types[i]), cfg->join_paths[i]);
            return -1;
        }
        int type = ioctl(fds[i], NS_GET_NSTYPE);
        if (type < 0 && errno != ENOTTY) {
            send_error(cfg->sync_fd, "join", errno, "linux.namespaces: %s", cfg->join_paths[i]);
            return -1;
        }
        if (type != cfg->join_types[i]) { /* ENOTTY: not a namespace file at all */
            send_error(cfg->sync_fd, "join", 0, "linux.namespaces: %s is not a %s namespace",
                       cfg->join_paths[i], ns_name(cfg->join_types[i]));
            errno = EINVAL;
            return -1;
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < cfg->njoin; i++) {
            int is_user = cfg->join_types[i] == CLONE_NEWUSER;
            if (is_user != (pass == 0))
                continue;
            if (setns(fds[i], cfg->join_types[i]) < 0) {
                int err = errno;
                send_error(cfg->sync_fd, "join", err,
                           err == EINVAL ? "setns %s: not a %s namespace" : "setns %s (%s)",
                           cfg->join_paths[i], ns_name(cfg->join_types[i]));
                return -1;
            }
            close(fds[i]);
        }
    }
    return 0;
}

/* A new user namespace: the parent writes uid_map/gid_map (it has the privilege to write
 * mappings we cannot), then we become the namespace's root. */
static int stage_userns(const struct nsenter_config *cfg)
{
    char frame[96];
    if (!cfg->new_user)
        return 0;
    /* Rootless: an unprivileged parent can open /proc/<pid>/{uid_map,gid_map,setgroups} only
     * while they are its own, i.e. while we are dumpable (runc does the same).  Nothing else
     * runs in the new namespace yet; non-dumpable again as soon as the maps are written. */
    int rootless = geteuid() != 0;
    if (unshare(CLONE_NEWUSER) < 0) {
        send_error(cfg->sync_fd, "userns", errno, "unshare user namespace");
        return -1;
    }
    if (rootless && prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0) {
        send_error(cfg->sync_fd, "userns", errno, "prctl(PR_SET_DUMPABLE) for the id maps");
        return -1;
    }
    snprintf(frame, sizeof(frame), "{\"type\":\"usermap_request\",\"pid\":%d}", (int)getpid());
    if (send_frame(cfg->sync_fd, frame) < 0)
        return -1;
    if (expect_frame(cfg->sync_fd, "{\"type\":\"usermap_done\"}") < 0) {
        send_error(cfg->sync_fd, "userns", errno, "waiting for the id maps");
        return -1;
    }
    if (rootless && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
        send_error(cfg->sync_fd, "userns", errno, "prctl(PR_SET_DUMPABLE)");
        return -1;
    }
    return 0;
}

static int stage_unshare(const struct nsenter_config *cfg)
{
    if (cfg->unshare_flags && unshare(cfg->unshare_flags) < 0) {
        send_error(cfg->sync_fd, "unshare", errno, "unshare namespaces 0x%x", cfg->unshare_flags);
        return -1;
    }
    return 0;
}

/* /proc/self/timens_offsets is opened before anything else, with the caller's credentials:
 * the write is checked against the opener's capabilities (CAP_SYS_TIME over the new time
 * namespace's user namespace), and /proc/self may not be ours to open once we are in a new
 * user namespace and non-dumpable. */
static int stage_timens_open(const struct nsenter_config *cfg)
{
    if (!cfg->time_offsets)
        return -2;
    int fd = open("/proc/self/timens_offsets", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        send_error(cfg->sync_fd, "timens", errno, "linux.timeOffsets: open "
                   "/proc/self/timens_offsets");
    return fd;
}

/* After unshare(CLONE_NEWTIME) the new namespace is our time_for_children and holds no task
 * yet: its offsets can be written only now, and the clone (the init) is its first member. */
static int stage_timens(const struct nsenter_config *cfg, int fd)
{
    if (fd == -2)
        return 0;
    size_t len = strlen(cfg->time_offsets);
    ssize_t n = write(fd, cfg->time_offsets, len);
    if (n < 0 || (size_t)n != len) {
        send_error(cfg->sync_fd, "timens", n < 0 ? errno : EIO,
                   "linux.timeOffsets: write /proc/self/timens_offsets");
        close(fd);
        return -1;
    }
    if (close(fd) < 0) {
        send_error(cfg->sync_fd, "timens", errno, "linux.timeOffsets: close");
        return -1;
    }
    return 0;
}

/* The fork that puts init into the new (or joined) pid namespace.  CLONE_PARENT makes init a
 * sibling of the intermediate: a direct child of the runtime (the CLI, or the zygote that keeps
 * the containers), which can wait for it without being a subreaper; once the runtime exits,
 * init goes to the caller's subreaper (conmon, the containerd shim).  The intermediate reports
 * the init's host pid, then lets init go on (so that init's frames never interleave with the
 * Pid frame) and exits. */
static int stage_clone(const struct nsenter_config *cfg)
{
    int gate[2];
    char frame[64], byte = 0;
    if (pipe2(gate, O_CLOEXEC) < 0) {
        send_error(cfg->sync_fd, "clone", errno, "pipe");
        return -1;
    }
    pid_t pid = (pid_t)syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
    if (pid < 0) {
        send_error(cfg->sync_fd, "clone", errno, "fork into the pid namespace");
        return -1;
    }
    if (pid == 0) {
        close(gate[1]);
        if (read_all(gate[0], &byte, 1) < 0)
            _exit(1); /* the intermediate died: the parent has seen its error */
        close(gate[0]);
        return 0;
    }
    close(gate[0]);
    snprintf(frame, sizeof(frame), "{\"type\":\"pid\",\"pid\":%d}", (int)pid);
    if (send_frame(cfg->sync_fd, frame) < 0) {
        kill(pid, SIGKILL);
        _exit(1);
    }
    if (write_all(gate[1], &byte, 1) < 0)
        _exit(1);
    _exit(0);
}

/* The init leads a session of its own (the caller's terminal signals and process-group
 * kills are not the container's), and is root of any user namespace it is in (joined or
 * new), so that what it creates during setup belongs to the container's root. */
static int stage_init_session(const struct nsenter_config *cfg)
{
    if (setsid() < 0) {
        send_error(cfg->sync_fd, "init", errno, "setsid");
        return -1;
    }
    if (!cfg->in_user_ns)
        return 0;
    if (setresgid(0, 0, 0) < 0) {
        send_error(cfg->sync_fd, "init", errno, "setresgid(0) in the user namespace");
        return -1;
    }
    if (setresuid(0, 0, 0) < 0) {
        send_error(cfg->sync_fd, "init", errno, "setresuid(0) in the user namespace");
        return -1;
    }
    if (setgroups(0, NULL) < 0 && errno != EPERM) { /* EPERM: setgroups is denied there */
        send_error(cfg->sync_fd, "init", errno, "setgroups in the user namespace");
        return -1;
    }
    return 0;
}

int corral_nsenter(const struct nsenter_config *cfg)
{
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
        send_error(cfg->sync_fd, "start", errno, "prctl(PR_SET_DUMPABLE)");
        return -1;
    }
    int timens_fd = stage_timens_open(cfg);
    if (timens_fd == -1)
        return -1;
    if (stage_join(cfg) < 0 || stage_userns(cfg) < 0 || stage_unshare(cfg) < 0 ||
        stage_timens(cfg, timens_fd) < 0)
        return -1;
    if (stage_clone(cfg) < 0 || stage_init_session(cfg) < 0)
        return -1;
    return 0;
}

/* ---- corral_finalize ---------------------------------------------------------------- */

static int last_cap(void)
{
    char buf[16] = {0};
    int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return CAP_LAST_CAP;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    return n > 0 ? atoi(buf) : CAP_LAST_CAP;
}

static int stage_cgroupns(const struct finalize_config *cfg)
{
    if (cfg->unshare_cgroupns && unshare(CLONE_NEWCGROUP) < 0) {
        send_error(cfg->sync_fd, "cgroupns", errno, "unshare cgroup namespace");
        return -1;
    }
    return 0;
}

/* A session keyring of the container's own, so that it does not share the caller's
 * (runc does the same unless --no-new-keyring).  Kernels without keyrings: skip. */
static int stage_keyring(const struct finalize_config *cfg)
{
    if (!cfg->session_keyring)
        return 0;
    if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, cfg->session_keyring) < 0 &&
        errno != ENOSYS) {
        send_error(cfg->sync_fd, "keyring", errno, "join session keyring %s",
                   cfg->session_keyring);
        return -1;
    }
    return 0;
}

static int stage_bounding(const struct finalize_config *cfg, int last)
{
    for (int c = 0; c <= last; c++) {
        if (cfg->cap_bounding & (1ULL << c))
            continue;
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL) {
            send_error(cfg->sync_fd, "capabilities", errno, "drop capability %d from the bounding set", c);
            return -1;
        }
    }
    return 0;
}

/* Changes user keeping the permitted set, so that stage_caps can set exactly what the config
 * asks for the new user. */
static int stage_user(const struct finalize_config *cfg)
{
    /* EPERM for an empty list: a rootless user namespace has setgroups denied (the kernel
     * requires it for an unprivileged gid_map); there is nothing to drop that we could. */
    if (cfg->set_groups && setgroups((size_t)cfg->ngroups, cfg->groups) < 0 &&
        !(errno == EPERM && cfg->ngroups == 0)) {
        send_error(cfg->sync_fd, "user", errno, "setgroups");
        return -1;
    }
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) {
        send_error(cfg->sync_fd, "user", errno, "prctl(PR_SET_KEEPCAPS)");
        return -1;
    }
    if (setresgid(cfg->gid, cfg->gid, cfg->gid) < 0) {
        send_error(cfg->sync_fd, "user", errno, "setresgid(%u)", cfg->gid);
        return -1;
    }
    if (setresuid(cfg->uid, cfg->uid, cfg->uid) < 0) {
        send_error(cfg->sync_fd, "user", errno, "setresuid(%u)", cfg->uid);
        return -1;
    }
    if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0) {
        send_error(cfg->sync_fd, "user", errno, "prctl(PR_SET_KEEPCAPS)");
        return -1;
    }
    return 0;
}

/* The config's effective, permitted and inheritable sets, plus `extra` in the first two. */
static int set_caps(const struct finalize_config *cfg, int last, uint64_t extra)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    /* Capabilities this kernel does not know are left out, as runc does. */
    uint64_t known = last >= 63 ? ~0ULL : (1ULL << (last + 1)) - 1;
    for (int i = 0; i < 2; i++) {
        data[i].effective = (uint32_t)(((cfg->cap_effective | extra) & known) >> (32 * i));
        data[i].permitted = (uint32_t)(((cfg->cap_permitted | extra) & known) >> (32 * i));
        data[i].inheritable = (uint32_t)((cfg->cap_inheritable & known) >> (32 * i));
    }
    return (int)syscall(SYS_capset, &hdr, data);
}

/* Without no_new_privs, loading a seccomp filter needs CAP_SYS_ADMIN: it is kept (effective
 * and permitted) until stage_seccomp has loaded the filter, then dropped there. */
static int stage_caps(const struct finalize_config *cfg, int last)
{
    uint64_t extra = cfg->seccomp_sysadmin ? 1ULL << CAP_SYS_ADMIN : 0;
    if (set_caps(cfg, last, extra) < 0) {
        send_error(cfg->sync_fd, "capabilities", errno, "capset");
        return -1;
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) {
        send_error(cfg->sync_fd, "capabilities", errno, "clear ambient capabilities");
        return -1;
    }
    for (int c = 0; c <= last; c++) {
        if (!(cfg->cap_ambient & (1ULL << c)))
            continue;
        /* EPERM: the capability is not also inheritable and permitted, so it cannot be
         * ambient.  runc and crun skip it too (runc's own default spec asks for this). */
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0 && errno != EPERM) {
            send_error(cfg->sync_fd, "capabilities", errno, "raise ambient capability %d", c);
            return -1;
        }
    }
    return 0;
}

/* Python ignores SIGPIPE (and may block or catch others); ignored dispositions and the
 * mask survive execve, so the container would inherit them.  Start it with defaults. */
static int stage_signals(void)
{
    sigset_t none;
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL); /* fails only for the reserved and uncatchable ones */
    }
    sigemptyset(&none);
    return sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Changing uids resets the dumpable flag to fs.suid_dumpable: clear it again, the init
 * waits on the fifo as the container's user and must stay hidden until exec. */
static int stage_nondumpable(const struct finalize_config *cfg)
{
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
        send_error(cfg->sync_fd, "user", errno, "prctl(PR_SET_DUMPABLE)");
        return -1;
    }
    return 0;
}

static int stage_nnp(const struct finalize_config *cfg)
{
    if (cfg->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        send_error(cfg->sync_fd, "no_new_privs", errno, "prctl(PR_SET_NO_NEW_PRIVS)");
        return -1;
    }
    return 0;
}

/* Checked as the final user, so that `create` fails rather than `start`. */
static int stage_check_exec(const struct finalize_config *cfg)
{
    if (access(cfg->path, X_OK) < 0) {
        send_error(cfg->sync_fd, "exec", errno, "exec: \"%s\"", cfg->path);
        return -1;
    }
    return 0;
}

/* No descriptor of the runtime crosses exec: everything from first_cloexec_fd up (the sync
 * socket and the fifo's O_PATH descriptor included) is marked close-on-exec. */
static int cloexec_from_proc(int first)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *entry;
    if (!dir)
        return -1;
    int self = dirfd(dir);
    while ((entry = readdir(dir)) != NULL) {
        int fd = atoi(entry->d_name);
        if (entry->d_name[0] < '0' || entry->d_name[0] > '9' || fd < first || fd == self)
            continue;
        if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 && errno != EBADF) {
            closedir(dir);
            return -1;
        }
    }
    return closedir(dir);
}

/* No descriptor of the runtime crosses exec: everything from first_cloexec_fd up (the sync
 * socket and the fifo's O_PATH descriptor included) is marked close-on-exec.  close_range
 * needs Linux 5.11; older kernels walk /proc/self/fd. */
static int stage_close_fds(const struct finalize_config *cfg)
{
    if (syscall(SYS_close_range, (unsigned)cfg->first_cloexec_fd, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
        return 0;
    if ((errno == ENOSYS || errno == EINVAL) && cloexec_from_proc(cfg->first_cloexec_fd) == 0)
        return 0;
    send_error(cfg->sync_fd, "close_fds", errno, "mark descriptors close-on-exec");
    return -1;
}

/* An exec'd process has no fifo: it waits for its parent to hang up the sync socket instead,
 * so that the parent's last host-side step comes before the process runs (`exec
 * --ignore-paused` joins the frozen cgroup here: the process freezes before its first
 * instruction, still non-dumpable).  A byte, EOF or an error all let it go: a parent that died
 * cannot hold it back. */
static void stage_await_hangup(int sync_fd)
{
    char byte;
    while (read(sync_fd, &byte, 1) < 0 && errno == EINTR)
        ;
}

/* Blocks until `start` opens the fifo for reading. */
static int stage_fifo(const struct finalize_config *cfg)
{
    char path[64];
    if (cfg->fifo_fd < 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/self/fd/%d", cfg->fifo_fd);
    int fd;
    do {
        fd = open(path, O_WRONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -1;
    if (write_all(fd, "0", 1) < 0 && errno != EPIPE) /* EPIPE: start went away; run anyway */
        return -1;
    close(fd);
    return 0;
}

/* One startContainer hook: in the container, as its user, the state JSON on stdin, the
 * container's stdout and stderr; killed when its timeout passes. */
static int run_start_hook(const struct finalize_config *cfg, int i)
{
    const struct corral_hook *h = &cfg->start_hooks[i];
    int status, rc;
    if (lseek(cfg->hook_state_fd, 0, SEEK_SET) < 0) {
        dprintf(2, "corral: startContainer hook #%d %s: rewind the state: %s\n", i, h->path,
                strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        dprintf(2, "corral: startContainer hook #%d %s: fork: %s\n", i, h->path, strerror(errno));
        return -1;
    }
    if (pid == 0) {
        if (dup2(cfg->hook_state_fd, 0) < 0)
            _exit(127);
        execve(h->path, h->argv, h->envp);
        dprintf(2, "corral: error running startContainer hook #%d %s: exec: %s\n", i, h->path,
                strerror(errno));
        _exit(127);
    }
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        dprintf(2, "corral: startContainer hook #%d %s: pidfd_open: %s\n", i, h->path,
                strerror(errno));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    struct pollfd pfd = {pidfd, POLLIN, 0};
    do {
        rc = poll(&pfd, 1, h->timeout > 0 ? h->timeout * 1000 : -1);
    } while (rc < 0 && errno == EINTR);
    close(pidfd);
    if (rc <= 0) {
        int err = rc < 0 ? errno : 0;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        if (err)
            dprintf(2, "corral: startContainer hook #%d %s: poll: %s\n", i, h->path, strerror(err));
        else
            dprintf(2, "corral: error running startContainer hook #%d %s: timed out after %ds "
                       "(killed)\n", i, h->path, h->timeout);
        return -1;
    }
    while ((rc = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
        ;
    if (rc < 0) {
        dprintf(2, "corral: startContainer hook #%d %s: waitpid: %s\n", i, h->path, strerror(errno));
        return -1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        dprintf(2, "corral: error running startContainer hook #%d %s: %s %d\n", i, h->path,
                WIFEXITED(status) ? "exit status" : "killed by signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        return -1;
    }
    return 0;
}

static int stage_start_hooks(const struct finalize_config *cfg)
{
    for (int i = 0; i < cfg->nstart_hooks; i++) {
        if (run_start_hook(cfg, i) < 0)
            return -1;
    }
    if (cfg->hook_state_fd >= 0 && close(cfg->hook_state_fd) < 0) {
        dprintf(2, "corral: close the hooks' state: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

/* SCMP_ACT_NOTIFY: hands the notify fd to the agent in one sendmsg whose SCM_RIGHTS travels
 * with the containerProcessState JSON (a long state's rest follows without it).  MSG_NOSIGNAL:
 * SIGPIPE has its default disposition again by now. */
static int send_listener(const struct finalize_config *cfg, int notify_fd)
{
    const char *data = cfg->seccomp_listener_state;
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {(void *)data, strlen(data)};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    memset(&control, 0, sizeof(control));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &notify_fd, sizeof(int));
    while (iov.iov_len > 0) {
        ssize_t n = sendmsg(cfg->seccomp_listener_fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue; /* nothing went: the fd is sent again with the retry */
            return -1;
        }
        iov.iov_base = (char *)iov.iov_base + n;
        iov.iov_len -= (size_t)n;
        msg.msg_control = NULL; /* the fd went with the first bytes */
        msg.msg_controllen = 0;
    }
    return 0;
}

/* The seccomp filter (BPF compiled by libseccomp in the init, corral/init/seccomp.py) is the
 * last step before execve, so that it filters as little of the runtime's own work as
 * possible: the profile need allow only execve (and capset when CAP_SYS_ADMIN was kept for
 * the load).  seccomp(2) when flags are asked for (LOG, SPEC_ALLOW, ...), else prctl.
 *
 * With a listener (SCMP_ACT_NOTIFY rules, linux.seccomp.listenerPath) the filter is loaded
 * with SECCOMP_FILTER_FLAG_NEW_LISTENER, which returns the notify fd; it can exist only once
 * the filter is loaded, so the hand-over necessarily runs under the filter.  The order is
 * crun's (runc does the same with its parent as the go-between): the runtime connected to
 * the agent before create returned (corral/init/seccomp.py, connect_listener), and here,
 * right after the load: sendmsg(JSON + SCM_RIGHTS) -> close(notify fd) -> close(socket) ->
 * [capset dropping CAP_SYS_ADMIN] -> execve.  So the notify rules apply from the load, not
 * only after exec: config.py refuses SCMP_ACT_NOTIFY as the default action and for sendmsg
 * (runc refuses it for the write it uses): nobody holds the fd yet to answer them; close,
 * capset and execve, when the profile sends them to the agent, are the agent's to answer
 * (it has the fd by then).  On a failure the notify fd is closed first: with no listener
 * left, notified syscalls (our error message's write) fail with ENOSYS instead of waiting. */
static int stage_seccomp(const struct finalize_config *cfg, int last)
{
    struct sock_fprog prog;
    int rc;
    if (!cfg->seccomp_filter)
        return 0;
    prog.len = (unsigned short)cfg->seccomp_len;
    prog.filter = (struct sock_filter *)cfg->seccomp_filter;
    if (cfg->seccomp_listener_fd >= 0) {
        /* TSYNC and NEW_LISTENER exclude each other (without TSYNC_ESRCH); this process has
         * one thread, TSYNC has nothing to do. */
        unsigned int flags = (cfg->seccomp_flags & ~(unsigned int)SECCOMP_FILTER_FLAG_TSYNC) |
                             SECCOMP_FILTER_FLAG_NEW_LISTENER;
        rc = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
    } else if (cfg->seccomp_flags)
        rc = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, cfg->seccomp_flags, &prog);
    else
        rc = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
    if (rc < 0) {
        dprintf(2, "corral: linux.seccomp: load the filter: %s\n", strerror(errno));
        return -1;
    }
    if (cfg->seccomp_listener_fd >= 0) {
        int notify_fd = rc;
        if (send_listener(cfg, notify_fd) < 0) {
            int err = errno;
            close(notify_fd);
            dprintf(2, "corral: linux.seccomp.listenerPath: send the notify fd to the seccomp "
                       "agent: %s\n", strerror(err));
            return -1;
        }
        close(notify_fd);
        close(cfg->seccomp_listener_fd);
    }
    if (cfg->seccomp_sysadmin && set_caps(cfg, last, 0) < 0) {
        dprintf(2, "corral: linux.seccomp: drop CAP_SYS_ADMIN after loading the filter "
                   "(the profile must allow capset): %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

int corral_finalize(const struct finalize_config *cfg)
{
    int last = last_cap();
    if (stage_cgroupns(cfg) < 0 || stage_keyring(cfg) < 0 || stage_bounding(cfg, last) < 0 ||
        stage_user(cfg) < 0 || stage_nondumpable(cfg) < 0 || stage_caps(cfg, last) < 0 ||
        stage_nnp(cfg) < 0 || stage_check_exec(cfg) < 0 || stage_close_fds(cfg) < 0)
        return -1;
    /* Everything that can fail before exec has passed: create may return. */
    if (send_frame(cfg->sync_fd, "{\"type\":\"waiting\"}") < 0)
        return -1;
    if (cfg->fifo_fd < 0)
        stage_await_hangup(cfg->sync_fd);
    close(cfg->sync_fd);
    if (stage_fifo(cfg) < 0) {
        dprintf(2, "corral: exec fifo: %s\n", strerror(errno));
        _exit(127);
    }
    /* Only now: SIGPIPE stayed ignored through the fifo write (`start` may close early). */
    if (stage_signals() < 0) {
        dprintf(2, "corral: reset signals: %s\n", strerror(errno));
        _exit(127);
    }
    if (stage_start_hooks(cfg) < 0 || stage_seccomp(cfg, last) < 0)
        _exit(127);
    execve(cfg->path, cfg->argv, cfg->envp);
    dprintf(2, "corral: exec %s: %s\n", cfg->path, strerror(errno));
    _exit(127);
}

/* ---- small syscalls Python lacks ---------------------------------------------------- */

int corral_pivot_root(const char *new_root, const char *put_old)
{
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}

/* Loopback up with one ioctl: an interface flag does not justify importing a netlink
 * library into every container's init (pyroute2's import alone costs ~120 ms). */
int corral_loopback_up(void)
{
    struct ifreq ifr;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (rc == 0 && !(ifr.ifr_flags & IFF_UP)) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        rc = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    int err = errno;
    close(s);
    errno = err;
    return rc;
}


/* The CLONE_NEW* type of a namespace file (NS_GET_NSTYPE), or -1 (ENOTTY: not one). */
int corral_ns_type(int fd)
{
    return ioctl(fd, NS_GET_NSTYPE);
}

/* process.scheduler: sched_setattr(2) on the calling thread (glibc has no wrapper). */
struct corral_sched_attr {
    uint32_t size, sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime, sched_deadline, sched_period;
};

int corral_sched_setattr(uint32_t policy, uint64_t flags, int32_t nice, uint32_t priority,
                         uint64_t runtime, uint64_t deadline, uint64_t period)
{
    struct corral_sched_attr attr = {sizeof(attr), policy, flags, nice, priority,
                                     runtime, deadline, period};
    return (int)syscall(SYS_sched_setattr, 0, &attr, 0);
}

/* process.ioPriority: ioprio_set(IOPRIO_WHO_PROCESS, self, class << 13 | level). */
int corral_ioprio_set(int ioprio)
{
    return (int)syscall(SYS_ioprio_set, 1, 0, ioprio);
}

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    int err = n < 0 ? errno : (size_t)n != len ? EIO : 0;
    if (close(fd) < 0 && !err)
        err = errno;
    errno = err;
    return err ? -1 : 0;
}

/* An idmapped mount (mounts[i] with uidMappings/gidMappings, or the idmap/ridmap options):
 * a detached copy of the host tree `source` (open_tree(OPEN_TREE_CLONE), recursive for
 * rbind) idmapped with mount_setattr(MOUNT_ATTR_IDMAP) (to every mount of the copy for
 * ridmap), made with the host's privileges before the namespaces; the init moves it into
 * place (corral_move_mount).  The idmap is the user namespace at `userns_path` (a container
 * joining one by path) or else that of a helper child holding `uid_map`/`gid_map`, which
 * exits once the tree is made.  Returns the tree's descriptor, or -1 with errno and the
 * failed step in `what`. */
int corral_idmapped_tree(const char *source, int clone_recursive, int idmap_recursive,
                         const char *uid_map, const char *gid_map, const char *userns_path,
                         char *what, size_t what_len)
{
    int gate[2] = {-1, -1}, userns = -1, tree = -1, err = 0;
    pid_t pid = -1;
    char path[64], byte = 0;
    if (userns_path) {
        userns = open(userns_path, O_RDONLY | O_CLOEXEC);
        if (userns < 0) {
            err = errno;
            snprintf(what, what_len, "open the user namespace %s", userns_path);
            goto out;
        }
        goto make_tree;
    }
    if (pipe2(gate, O_CLOEXEC) < 0) {
        err = errno;
        snprintf(what, what_len, "pipe");
        goto out;
    }
    pid = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid < 0) {
        err = errno;
        snprintf(what, what_len, "create a user namespace for the idmap");
        goto out;
    }
    if (pid == 0) { /* holds the namespace until the parent is done with it */
        close(gate[1]);
        while (read(gate[0], &byte, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
    if (write_file(path, uid_map) < 0) {
        err = errno;
        snprintf(what, what_len, "write the idmap's uid_map");
        goto out;
    }
    snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
    if (write_file(path, gid_map) < 0) {
        err = errno;
        snprintf(what, what_len, "write the idmap's gid_map");
        goto out;
    }
    snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
    userns = open(path, O_RDONLY | O_CLOEXEC);
    if (userns < 0) {
        err = errno;
        snprintf(what, what_len, "open the idmap's user namespace");
        goto out;
    }
make_tree:
    tree = (int)syscall(SYS_open_tree, AT_FDCWD, source,
                        OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC |
                        (clone_recursive ? AT_RECURSIVE : 0));
    if (tree < 0) {
        err = errno;
        snprintf(what, what_len, "open_tree %s", source);
        goto out;
    }
    struct mount_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.attr_set = MOUNT_ATTR_IDMAP;
    attr.userns_fd = (uint64_t)userns;
    if (syscall(SYS_mount_setattr, tree, "",
                AT_EMPTY_PATH | (idmap_recursive ? AT_RECURSIVE : 0), &attr, sizeof(attr)) < 0) {
        err = errno;
        snprintf(what, what_len, "idmap %s (mount_setattr)", source);
        close(tree);
        tree = -1;
    }
out:
    if (userns >= 0)
        close(userns);
    if (gate[1] >= 0)
        close(gate[1]); /* lets the helper exit */
    if (pid > 0)
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    if (gate[0] >= 0)
        close(gate[0]);
    errno = err;
    return err ? -1 : tree;
}

/* The recursive mount options (rro, rnosuid, ...): mount_setattr(AT_RECURSIVE) on the
 * mount at the (O_PATH) descriptor `fd` and every mount under it, as runc and crun do. */
int corral_mount_setattr_recursive(int fd, uint64_t attr_set, uint64_t attr_clr)
{
    struct mount_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.attr_set = attr_set;
    attr.attr_clr = attr_clr;
    return (int)syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr,
                        sizeof(attr));
}

/* linux.memoryPolicy: set_mempolicy(2) for the calling thread (kept across execve; glibc
 * has no wrapper without libnuma).  `nodemask` holds `maxnode` bits. */
int corral_set_mempolicy(int mode, const unsigned long *nodemask, unsigned long maxnode)
{
    return (int)syscall(SYS_set_mempolicy, mode, nodemask, maxnode);
}

/* A hook (supervisor/hooks.py): posix_spawn with `cwd` as its working directory (Python's
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

/* Attaches a detached tree (corral_idmapped_tree) on the (O_PATH) descriptor `to_fd`. */
int corral_move_mount(int from_fd, int to_fd)
{
    return (int)syscall(SYS_move_mount, from_fd, "", to_fd, "",
                        MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
}
