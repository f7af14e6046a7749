/*
 * corral-exec: runs a container's plan, from fork to exec.  No Python runs in a container's
 * processes: the parent compiled the config into a plan (corral/plan/), a flat list of steps
 * with every decision made, and this program carries the steps out in order.  It has no
 * policy and parses nothing but the plan's framing (plan_ops.h).
 *
 *   corral-exec launch FD     read a plan from the sync socket FD and run it (the command
 *                             line spawns this for each container)
 *   corral-exec spawner FD    the keeper's spawner: for each request on FD (a sync socket and
 *                             stdio, SCM_RIGHTS) fork a launcher with CLONE_PARENT, so that
 *                             every container process is the keeper's child; answer with the
 *                             launcher's pid and a pidfd
 *
 * A plan runs in two processes.  The launcher, in the runtime's namespaces and with its
 * credentials, opens what only the host can reach (the exec fifo, bind-mount sources, the
 * console socket), joins namespaces by path, then clones the init (CLONE_PARENT, with every
 * new namespace in the one clone, the user namespace first), reports its pid and exits.  The
 * init runs every later step: the rootfs, the sync points with the parent (Ready, Run), the
 * process's identity and capabilities, seccomp, and exec.
 *
 * Every syscall is checked.  Until the init reports Waiting, an error goes to the parent as an
 * Error frame (errno, the failed step's name, "<what>: <reason>"); after it (the parent is
 * gone: create returned) it goes to stderr and the init exits 1.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/keyctl.h>
#include <linux/magic.h>
#include <linux/mount.h>
#include <linux/nsfs.h>
#include <linux/openat2.h>
#include <linux/sched.h>
#include <linux/seccomp.h>

#include "plan_ops.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif
#define CAP_SYS_ADMIN_BIT 21
#define TIOCSPTLCK_ 0x40045431
#define TIOCGPTN_ 0x80045430
#define HOOK_OUTPUT_KEPT 2048
#define MAX_FDS_PER_SPAWN 4

/* ---- the plan's operations ------------------------------------------------------------ */

enum op {
#define OP_ENUM(name, args) OP_##name,
    CORRAL_PLAN_OPS(OP_ENUM)
#undef OP_ENUM
    OP_COUNT
};

static const char *const op_names[] = {
#define OP_NAME(name, args) #name,
    CORRAL_PLAN_OPS(OP_NAME)
#undef OP_NAME
};

static const char *const op_args[] = {
#define OP_ARGS(name, args) args,
    CORRAL_PLAN_OPS(OP_ARGS)
#undef OP_ARGS
};

/* What a running plan holds: descriptors by register, blobs the parent sent, and the
 * choices earlier steps made for later ones. */
struct run {
    int sync_fd;
    int late;                       /* Waiting was reported: errors go to stderr */
    int regs[CORRAL_PLAN_REGS];
    unsigned char made[CORRAL_PLAN_REGS]; /* RESOLVE created the path (it covered nothing) */
    const char *blob[CORRAL_PLAN_BLOBS];
    uint32_t blob_len[CORRAL_PLAN_BLOBS];
    const char *stage;              /* the running step's name, for Error frames */
    char exec_path[PATH_MAX];
    int null_fd;                    /* the container's checked /dev/null, for masks */
    int mask_fs;                    /* an empty read-only tmpfs, for masked directories */
    int last_cap;
    uint64_t cap_eff, cap_perm, cap_inh; /* what CAPS set, for SECCOMP's CAP_SYS_ADMIN drop */
};

/* ---- I/O ------------------------------------------------------------------------------ */

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
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

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A frame being built: header, then arguments in the plan's encoding. */
struct frame {
    unsigned char buf[4096];
    size_t len;
};

static void frame_start(struct frame *f, int type)
{
    f->len = 8;
    f->buf[4] = (unsigned char)type;
    f->buf[5] = (unsigned char)(type >> 8);
    f->buf[6] = f->buf[7] = 0;
}

static void frame_int(struct frame *f, int64_t v)
{
    if (f->len + 9 > sizeof(f->buf))
        return;
    f->buf[f->len++] = 'i';
    for (int i = 0; i < 8; i++)
        f->buf[f->len++] = (unsigned char)((uint64_t)v >> (8 * i));
}

static void frame_str(struct frame *f, const char *s)
{
    size_t n = strlen(s);
    if (n > sizeof(f->buf) - f->len - 6)
        n = sizeof(f->buf) - f->len - 6;
    f->buf[f->len++] = 's';
    put_u32(f->buf + f->len, (uint32_t)n);
    f->len += 4;
    memcpy(f->buf + f->len, s, n);
    f->len += n;
    f->buf[f->len++] = '\0';
}

static int frame_send(int fd, struct frame *f)
{
    put_u32(f->buf, (uint32_t)(f->len - 4));
    return write_all(fd, f->buf, f->len);
}

static int send_empty(int fd, int type)
{
    struct frame f;
    frame_start(&f, type);
    return frame_send(fd, &f);
}

/* Reads one frame of the expected type into a buffer of its own (kept: blobs point into it).
 * Returns its argument bytes, or NULL: EOF (the parent went away) or another type. */
static unsigned char *read_frame(int fd, int want, uint32_t *len)
{
    unsigned char hdr[8];
    if (read_all(fd, hdr, 8) < 0)
        return NULL;
    uint32_t size = get_u32(hdr);
    int type = hdr[4] | hdr[5] << 8;
    if (size < 4 || size > (256u << 20) || type != want) {
        errno = EPROTO;
        return NULL;
    }
    unsigned char *body = malloc(size - 4 + 1);
    if (!body)
        return NULL;
    if (read_all(fd, body, size - 4) < 0) {
        free(body);
        return NULL;
    }
    *len = size - 4;
    return body;
}

/* ---- errors --------------------------------------------------------------------------- */

/* "<what>: <reason>" (the reason lower-cased, as Go's and so runc's messages are: engines
 * match on them) to the parent while it listens, else to stderr.  Keeps errno; returns -1. */
static int fail(struct run *r, int err, const char *fmt, ...)
{
    char text[3000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (err) {
        size_t l = strlen(text);
        snprintf(text + l, sizeof(text) - l, ": %s", strerror(err));
        if (text[l + 2] >= 'A' && text[l + 2] <= 'Z')
            text[l + 2] = (char)(text[l + 2] - 'A' + 'a');
    }
    if (r->late) {
        dprintf(2, "corral: %s\n", text);
    } else {
        struct frame f;
        frame_start(&f, CORRAL_MSG_ERROR);
        frame_int(&f, err);
        frame_str(&f, r->stage ? r->stage : "");
        frame_str(&f, text);
        frame_send(r->sync_fd, &f);
    }
    errno = err;
    return -1;
}

/* The name of a kernel feature a step needs, for the ENOSYS of an old kernel. */
static const char *feature(const char *call)
{
    static char text[160];
    snprintf(text, sizeof(text), " (this kernel has no %s: the new mount API needs Linux 5.12 or "
             "later)", call);
    return errno == ENOSYS ? text : "";
}

/* ---- reading a step's arguments ------------------------------------------------------- */

struct args {
    const unsigned char *p, *end;
    int bad;
};

static int take(struct args *a, char tag, size_t need)
{
    if (a->bad || a->p >= a->end || *a->p != (unsigned char)tag ||
        (size_t)(a->end - a->p) < 1 + need) {
        a->bad = 1;
        return 0;
    }
    a->p++;
    return 1;
}

static int64_t arg_int(struct args *a)
{
    if (!take(a, 'i', 8))
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)a->p[i] << (8 * i);
    a->p += 8;
    return (int64_t)v;
}

static const char *arg_bytes(struct args *a, char tag, uint32_t *len)
{
    if (!take(a, tag, 4))
        return "";
    uint32_t n = get_u32(a->p);
    a->p += 4;
    size_t extra = tag == 's' ? 1 : 0;
    if ((size_t)(a->end - a->p) < n + extra || (tag == 's' && a->p[n] != '\0')) {
        a->bad = 1;
        return "";
    }
    const char *s = (const char *)a->p;
    a->p += n + extra;
    if (len)
        *len = n;
    return s;
}

static const char *arg_str(struct args *a)
{
    return arg_bytes(a, 's', NULL);
}

/* A list of strings as a NULL-terminated array (malloc'd: the process is short-lived). */
static char **arg_list(struct args *a)
{
    if (!take(a, 'l', 4))
        return NULL;
    uint32_t n = get_u32(a->p);
    a->p += 4;
    if (n > 1u << 20) {
        a->bad = 1;
        return NULL;
    }
    char **items = calloc(n + 1, sizeof(char *));
    if (!items) {
        a->bad = 1;
        return NULL;
    }
    for (uint32_t i = 0; i < n; i++)
        items[i] = (char *)arg_bytes(a, 's', NULL);
    return items;
}

static int reg_index(struct args *a, int64_t v)
{
    if (v < -1 || v >= CORRAL_PLAN_REGS) {
        a->bad = 1;
        return -1;
    }
    return (int)v;
}

/* ---- paths inside the rootfs ---------------------------------------------------------- */

/* openat2 confined to the root.  With RESOLVE_IN_ROOT the kernel fails a walk that took a
 * ".." step while any rename or mount happened on the system (EAGAIN: it cannot tell that
 * the step stayed inside); a busy host (a Kubernetes node mounting volumes) makes that
 * happen, so retry, as runc's securejoin does. */
#define OPENAT2_TRIES 128

static int open_in_root_flags(int root, const char *path, uint64_t flags, uint64_t resolve)
{
    struct open_how how;
    memset(&how, 0, sizeof(how));
    how.flags = flags | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | resolve;
    while (*path == '/')
        path++;
    int fd = -1;
    for (int i = 0; i < OPENAT2_TRIES; i++) {
        fd = (int)syscall(SYS_openat2, root, *path ? path : ".", &how, sizeof(how));
        if (fd >= 0 || errno != EAGAIN)
            break;
    }
    return fd;
}

static int open_in_root(int root, const char *path, uint64_t flags)
{
    return open_in_root_flags(root, path, flags, 0);
}

/* Where fd is, as the runtime's mount namespace sees it; "" when /proc says nothing. */
static void fd_path(int fd, char *out, size_t cap)
{
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, cap - 1);
    out[n > 0 ? n : 0] = '\0';
}

/* The path of fd below the root (e.g. "/proc/sys"), or "" when it cannot be told. */
static void path_in_root(int root, int fd, char *out, size_t cap)
{
    char top[PATH_MAX], here[PATH_MAX];
    fd_path(root, top, sizeof(top));
    fd_path(fd, here, sizeof(here));
    size_t n = strlen(top);
    if (!*top || !*here || strncmp(top, here, n) != 0 || (here[n] != '/' && here[n] != '\0')) {
        *out = '\0';
        return;
    }
    if (strcmp(top, "/") == 0)
        n = 0;
    snprintf(out, cap, "%s", here[n] ? here + n : "/");
}

/* The directory `path` inside the root, made (0755) where missing: resolved component by
 * component from the root, so that a symlink in the rootfs is followed inside it only.  A
 * dangling symlink is followed to where it points, which is then made. */
static int mkdirs_in_root(int root, const char *path, int depth)
{
    int fd = open_in_root(root, path, O_PATH | O_DIRECTORY);
    if (fd >= 0 || errno != ENOENT)
        return fd;
    if (depth > 40) {
        errno = ELOOP;
        return -1;
    }
    char prefix[PATH_MAX];
    size_t plen = 0;
    const char *p = path;
    prefix[0] = '\0';
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (plen + n + 2 >= sizeof(prefix)) {
            errno = ENAMETOOLONG;
            return -1;
        }
        char name[NAME_MAX + 1];
        if (n > NAME_MAX) {
            errno = ENAMETOOLONG;
            return -1;
        }
        memcpy(name, p, n);
        name[n] = '\0';
        char parent[PATH_MAX];
        memcpy(parent, prefix, plen + 1);
        prefix[plen++] = '/';
        memcpy(prefix + plen, p, n);
        plen += n;
        prefix[plen] = '\0';
        p += n;
        fd = open_in_root(root, prefix, O_PATH | O_DIRECTORY);
        if (fd >= 0) {
            close(fd);
            continue;
        }
        if (errno != ENOENT)
            return -1;
        int dir = open_in_root(root, parent, O_PATH | O_DIRECTORY);
        if (dir < 0)
            return -1;
        if (mkdirat(dir, name, 0755) < 0 && errno != EEXIST) {
            int err = errno;
            close(dir);
            errno = err;
            return -1;
        }
        fd = open_in_root(root, prefix, O_PATH | O_DIRECTORY);
        if (fd >= 0) {
            close(dir);
            close(fd);
            continue;
        }
        /* EEXIST and still ENOENT: a dangling symlink; make where it points, then go on */
        char target[PATH_MAX], next[PATH_MAX * 2];
        ssize_t tl = readlinkat(dir, name, target, sizeof(target) - 1);
        close(dir);
        if (tl < 0) {
            errno = ENOENT;
            return -1;
        }
        target[tl] = '\0';
        if (target[0] == '/')
            snprintf(next, sizeof(next), "%s%s", target, p);
        else
            snprintf(next, sizeof(next), "%s/%s%s", parent, target, p);
        return mkdirs_in_root(root, next, depth + 1);
    }
    return open_in_root(root, path, O_PATH | O_DIRECTORY);
}

/* An empty file at `path` inside the root unless something is there (any type); its
 * parent directories made.  A symlink there is followed inside the root. */
static int mkfile_in_root(int root, const char *path, int depth)
{
    int fd = open_in_root(root, path, O_PATH);
    if (fd >= 0 || errno != ENOENT)
        return fd;
    if (depth > 40) {
        errno = ELOOP;
        return -1;
    }
    const char *slash = strrchr(path, '/');
    char parent[PATH_MAX];
    const char *name = slash ? slash + 1 : path;
    size_t plen = slash ? (size_t)(slash - path) : 0;
    if (plen >= sizeof(parent) || !*name) {
        errno = EINVAL;
        return -1;
    }
    memcpy(parent, path, plen);
    parent[plen] = '\0';
    int dir = mkdirs_in_root(root, parent, 0);
    if (dir < 0)
        return -1;
    int made = openat(dir, name, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (made >= 0) {
        close(made);
    } else if (errno == ELOOP) { /* a dangling symlink: create its target, in the root */
        char target[PATH_MAX], next[PATH_MAX * 2];
        ssize_t tl = readlinkat(dir, name, target, sizeof(target) - 1);
        close(dir);
        if (tl < 0)
            return -1;
        target[tl] = '\0';
        if (target[0] == '/')
            snprintf(next, sizeof(next), "%s", target);
        else
            snprintf(next, sizeof(next), "%s/%s", parent, target);
        return mkfile_in_root(root, next, depth + 1);
    } else if (errno != EISDIR && errno != EEXIST) {
        int err = errno;
        close(dir);
        errno = err;
        return -1;
    }
    close(dir);
    return open_in_root(root, path, O_PATH);
}

/* ---- the launcher's steps ------------------------------------------------------------- */

static int do_open(struct run *r, struct args *a)
{
    int reg = reg_index(a, arg_int(a));
    const char *path = arg_str(a);
    int flags = (int)arg_int(a), mode = (int)arg_int(a);
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    r->regs[reg] = open(path, flags | O_CLOEXEC, mode);
    return r->regs[reg] < 0 ? fail(r, errno, "%s", what) : 0;
}

static int do_connect(struct run *r, struct args *a)
{
    int reg = reg_index(a, arg_int(a));
    const char *path = arg_str(a), *what = arg_str(a);
    if (a->bad)
        return 0;
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    int dir = -1;
    if (strlen(path) >= sizeof(addr.sun_path)) {
        /* too long for sun_path: reach it through its directory */
        char parent[PATH_MAX];
        const char *slash = strrchr(path, '/');
        size_t plen = slash ? (size_t)(slash - path) : 0;
        if (!slash || plen >= sizeof(parent))
            return fail(r, ENAMETOOLONG, "%s", what);
        memcpy(parent, path, plen);
        parent[plen] = '\0';
        dir = open(plen ? parent : "/", O_PATH | O_CLOEXEC);
        if (dir < 0)
            return fail(r, errno, "%s", what);
        snprintf(addr.sun_path, sizeof(addr.sun_path), "/proc/self/fd/%d/%s", dir, slash + 1);
        if (strlen(addr.sun_path) >= sizeof(addr.sun_path) - 1) {
            close(dir);
            return fail(r, ENAMETOOLONG, "%s", what);
        }
    } else {
        strcpy(addr.sun_path, path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = fd < 0 ? -1 : connect(fd, (struct sockaddr *)&addr, sizeof(addr));
    int err = errno;
    if (dir >= 0)
        close(dir);
    if (rc < 0) {
        if (fd >= 0)
            close(fd);
        return fail(r, err, "%s", what);
    }
    r->regs[reg] = fd;
    return 0;
}

static int setattr_fd(int fd, const char *path, unsigned flags, uint64_t set, uint64_t clr,
                      uint64_t propagation)
{
    struct mount_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.attr_set = set;
    attr.attr_clr = clr;
    attr.propagation = propagation;
    return (int)syscall(SYS_mount_setattr, fd, path, flags, &attr, sizeof(attr));
}

/* A detached copy of a host tree, private: a copy of a shared mount would otherwise join its
 * peer group, and mounts made under it in the container would appear on the host. */
static int do_tree(struct run *r, struct args *a)
{
    int reg = reg_index(a, arg_int(a));
    const char *path = arg_str(a);
    unsigned recursive = (unsigned)arg_int(a) ? AT_RECURSIVE : 0;
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, path,
                          OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | recursive);
    if (fd < 0)
        return fail(r, errno, "%s%s", what, feature("open_tree"));
    if (setattr_fd(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, 0, 0, MS_PRIVATE) < 0) {
        int err = errno;
        close(fd);
        return fail(r, err, "%s: make the copy private", what);
    }
    r->regs[reg] = fd;
    return 0;
}

static int write_text(const char *path, const char *text)
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

/* An idmapped copy of a host tree.  The idmap is the user namespace at `userns` (one joined
 * by path) or else that of a helper child holding the two maps, which exits once it is made. */
static int do_idmap_tree(struct run *r, struct args *a)
{
    int reg = reg_index(a, arg_int(a));
    const char *source = arg_str(a);
    int clone_rec = (int)arg_int(a), idmap_rec = (int)arg_int(a);
    const char *uid_map = arg_str(a), *gid_map = arg_str(a), *userns_path = arg_str(a);
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    int gate[2] = {-1, -1}, userns = -1, tree = -1, err = 0;
    pid_t pid = -1;
    char path[64], byte = 0;
    const char *step = "";
    if (*userns_path) {
        userns = open(userns_path, O_RDONLY | O_CLOEXEC);
        step = "open the user namespace";
        if (userns < 0)
            goto out;
    } else {
        step = "pipe";
        if (pipe2(gate, O_CLOEXEC) < 0)
            goto out;
        step = "create a user namespace for the idmap";
        pid = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (pid < 0)
            goto out;
        if (pid == 0) { /* holds the namespace until the launcher is done with it */
            close(gate[1]);
            while (read(gate[0], &byte, 1) < 0 && errno == EINTR)
                ;
            _exit(0);
        }
        snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
        step = "write the idmap's uid_map";
        if (write_text(path, uid_map) < 0)
            goto out;
        snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
        step = "write the idmap's gid_map";
        if (write_text(path, gid_map) < 0)
            goto out;
        snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
        step = "open the idmap's user namespace";
        userns = open(path, O_RDONLY | O_CLOEXEC);
        if (userns < 0)
            goto out;
    }
    step = "open_tree";
    tree = (int)syscall(SYS_open_tree, AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC |
                        (clone_rec ? AT_RECURSIVE : 0));
    if (tree < 0)
        goto out;
    struct mount_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.attr_set = MOUNT_ATTR_IDMAP;
    attr.userns_fd = (uint64_t)userns;
    step = "mount_setattr(MOUNT_ATTR_IDMAP)";
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | (idmap_rec ? AT_RECURSIVE : 0),
                &attr, sizeof(attr)) < 0) {
        err = errno;
        close(tree);
        tree = -1;
    }
out:
    if (tree < 0 && !err)
        err = errno;
    if (userns >= 0)
        close(userns);
    if (gate[1] >= 0)
        close(gate[1]);
    if (pid > 0)
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    if (gate[0] >= 0)
        close(gate[0]);
    if (tree < 0)
        return fail(r, err, "%s: %s", what, step);
    r->regs[reg] = tree;
    return 0;
}

static int do_write(struct run *r, struct args *a)
{
    const char *path = arg_str(a);
    int flags = (int)arg_int(a);
    uint32_t len;
    const char *data = arg_bytes(a, 'b', &len);
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    int fd = open(path, O_WRONLY | O_CLOEXEC | flags);
    if (fd < 0)
        return fail(r, errno, "%s: write %s", what, path);
    ssize_t n = write(fd, data, len);
    int err = n < 0 ? errno : (size_t)n != len ? EIO : 0;
    close(fd);
    return err ? fail(r, err, "%s: write %s", what, path) : 0;
}

static int do_write_fd(struct run *r, struct args *a)
{
    int reg = reg_index(a, arg_int(a));
    uint32_t len;
    const char *data = arg_bytes(a, 'b', &len);
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    ssize_t n = write(r->regs[reg], data, len);
    int err = n < 0 ? errno : (size_t)n != len ? EIO : 0;
    if (close(r->regs[reg]) < 0 && !err)
        err = errno;
    r->regs[reg] = -1;
    return err ? fail(r, err, "%s", what) : 0;
}

static int do_affinity(struct run *r, struct args *a)
{
    uint32_t len;
    const char *mask = arg_bytes(a, 'b', &len);
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    if (sched_setaffinity(0, len, (const cpu_set_t *)mask) < 0)
        return fail(r, errno, "%s", what);
    return 0;
}

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

/* Opened (every one before any is joined: joining changes what paths mean) and checked to be
 * a namespace of the asked type. */
static int do_open_ns(struct run *r, struct args *a)
{
    int reg = reg_index(a, arg_int(a));
    const char *path = arg_str(a);
    int type = (int)arg_int(a);
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(r, errno, "%s: open %s namespace %s", what, ns_name(type), path);
    int found = ioctl(fd, NS_GET_NSTYPE);
    if (found < 0 && errno != ENOTTY) {
        int err = errno;
        close(fd);
        return fail(r, err, "%s: %s", what, path);
    }
    if (found != type) {
        close(fd);
        fail(r, 0, "%s: %s is not a %s namespace", what, path, ns_name(type));
        errno = EINVAL;
        return -1;
    }
    r->regs[reg] = fd;
    return 0;
}

static int do_setns(struct run *r, struct args *a)
{
    int reg = reg_index(a, arg_int(a));
    int type = (int)arg_int(a);
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    if (setns(r->regs[reg], type) < 0)
        return fail(r, errno, "%s: setns (%s)", what, ns_name(type));
    close(r->regs[reg]);
    r->regs[reg] = -1;
    return 0;
}

static int do_unshare(struct run *r, struct args *a)
{
    int flags = (int)arg_int(a);
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    return unshare(flags) < 0 ? fail(r, errno, "%s", what) : 0;
}

/* The init, in every new namespace at once (the user namespace first, so that it owns the
 * others), a sibling of the launcher (CLONE_PARENT): a direct child of the runtime (the
 * command line, or the keeper).  The launcher reports its host pid, then writes it into the
 * container's cgroup.procs (opened by OPEN steps, with the runtime's credentials) while the
 * init builds its rootfs: the first migration on a cgroup v1 host waits for an RCU grace
 * period, and the parent's event loop must not.  It tells the outcome (an errno, 0) on the
 * join gate, which the init reads at JOINED, and exits.  The init waits on the start gate
 * until the Pid is out, so that no frame of its own comes before it. */
static int do_clone_init(struct run *r, struct args *a)
{
    int flags = (int)arg_int(a);
    int gate_reg = reg_index(a, arg_int(a));
    uint32_t len;
    const unsigned char *joins = (const unsigned char *)arg_bytes(a, 'b', &len);
    if (a->bad)
        return 0;
    int start[2], joined[2];
    char byte;
    if (pipe2(start, O_CLOEXEC) < 0 || pipe2(joined, O_CLOEXEC) < 0)
        return fail(r, errno, "pipe");
    pid_t pid = (pid_t)syscall(SYS_clone, (unsigned long)flags | CLONE_PARENT | SIGCHLD, 0, 0,
                               0, 0);
    if (pid < 0)
        return fail(r, errno, "clone the container's init (namespaces 0x%x)", flags);
    if (pid == 0) {
        close(start[1]);
        close(joined[1]);
        if (read(start[0], &byte, 1) < 0 && errno != EINTR)
            _exit(1);
        close(start[0]);
        for (uint32_t i = 0; i + 4 <= len; i += 4) { /* the launcher's to write */
            int reg = (int)get_u32(joins + i);
            if (reg < CORRAL_PLAN_REGS && r->regs[reg] >= 0) {
                close(r->regs[reg]);
                r->regs[reg] = -1;
            }
        }
        if (gate_reg >= 0)
            r->regs[gate_reg] = joined[0];
        else
            close(joined[0]);
        return 0;
    }
    close(start[0]);
    close(joined[0]);
    struct frame f;
    frame_start(&f, CORRAL_MSG_PID);
    frame_int(&f, pid);
    if (frame_send(r->sync_fd, &f) < 0) {
        kill(pid, SIGKILL);
        _exit(1);
    }
    close(start[1]); /* the init may go on */
    char text[16];
    int n = snprintf(text, sizeof(text), "%d", (int)pid);
    int32_t outcome = 0;
    for (uint32_t i = 0; i + 4 <= len && !outcome; i += 4) {
        int reg = (int)get_u32(joins + i);
        if (reg >= CORRAL_PLAN_REGS || r->regs[reg] < 0)
            continue;
        if (write(r->regs[reg], text, (size_t)n) != n)
            outcome = errno ? errno : EIO;
    }
    write_all(joined[1], &outcome, sizeof(outcome));
    _exit(0);
}

/* ---- the init: sync points and identity ------------------------------------------------ */

static int do_await(struct run *r, struct args *a)
{
    int type = (int)arg_int(a);
    int64_t first = arg_int(a);
    const char *what = arg_str(a);
    if (a->bad || first < 0 || first > CORRAL_PLAN_BLOBS) {
        a->bad = 1;
        return 0;
    }
    uint32_t len;
    unsigned char *body = read_frame(r->sync_fd, type, &len);
    if (!body) {
        if (errno == EPIPE)
            _exit(1); /* the parent went away: nobody to tell */
        return fail(r, errno, "waiting for the parent (%s)", what);
    }
    struct args in = {body, body + len, 0};
    for (int i = (int)first; in.p < in.end && i < CORRAL_PLAN_BLOBS; i++)
        r->blob[i] = arg_bytes(&in, 'b', &r->blob_len[i]);
    if (in.bad)
        return fail(r, EPROTO, "waiting for the parent (%s): malformed message", what);
    return 0;
}

/* The launcher's word on the cgroup join (do_clone_init): the init is in its cgroup from
 * here on, before its hooks and Ready. */
static int do_joined(struct run *r, struct args *a)
{
    int reg = reg_index(a, arg_int(a));
    if (a->bad || reg < 0)
        return 0;
    int32_t outcome = EPIPE;
    ssize_t n;
    do {
        n = read(r->regs[reg], &outcome, sizeof(outcome));
    } while (n < 0 && errno == EINTR);
    close(r->regs[reg]);
    r->regs[reg] = -1;
    if (n != (ssize_t)sizeof(outcome))
        return fail(r, EPIPE, "join the container's cgroup: the launcher exited");
    if (outcome)
        return fail(r, outcome, "join the container's cgroup");
    return 0;
}

static int do_report(struct run *r, struct args *a)
{
    int type = (int)arg_int(a);
    if (a->bad)
        return 0;
    if (send_empty(r->sync_fd, type) < 0)
        _exit(1);
    if (type == CORRAL_MSG_WAITING)
        r->late = 1; /* create returns now: from here on errors go to stderr */
    return 0;
}

static int do_setsid(struct run *r, struct args *a)
{
    return setsid() < 0 ? fail(r, errno, "setsid") : 0;
}

static int do_become_root(struct run *r, struct args *a)
{
    if (setresgid(0, 0, 0) < 0)
        return fail(r, errno, "setresgid(0) in the user namespace");
    if (setresuid(0, 0, 0) < 0)
        return fail(r, errno, "setresuid(0) in the user namespace");
    if (setgroups(0, NULL) < 0 && errno != EPERM) /* EPERM: setgroups denied there */
        return fail(r, errno, "setgroups in the user namespace");
    return 0;
}

static int do_dumpable(struct run *r, struct args *a)
{
    int on = (int)arg_int(a);
    if (a->bad)
        return 0;
    return prctl(PR_SET_DUMPABLE, on, 0, 0, 0) < 0 ? fail(r, errno, "prctl(PR_SET_DUMPABLE)") : 0;
}

/* Loopback up with one ioctl: no netlink for an interface flag. */
static int do_loopback_up(struct run *r, struct args *a)
{
    struct ifreq ifr;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return fail(r, errno, "bring up loopback: socket");
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (rc == 0 && !(ifr.ifr_flags & IFF_UP)) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        rc = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    int err = errno;
    close(s);
    return rc < 0 ? fail(r, err, "bring up loopback") : 0;
}

static int do_sethostname(struct run *r, struct args *a)
{
    const char *name = arg_str(a);
    if (a->bad)
        return 0;
    return sethostname(name, strlen(name)) < 0 ? fail(r, errno, "sethostname %s", name) : 0;
}

static int do_setdomainname(struct run *r, struct args *a)
{
    const char *name = arg_str(a);
    if (a->bad)
        return 0;
    return setdomainname(name, strlen(name)) < 0 ? fail(r, errno, "setdomainname %s", name) : 0;
}

/* ---- the init: the filesystem ---------------------------------------------------------- */

static int do_mount(struct run *r, struct args *a)
{
    const char *source = arg_str(a), *target = arg_str(a), *fstype = arg_str(a);
    const char *data = arg_str(a);
    unsigned long flags = (unsigned long)arg_int(a);
    int reg = reg_index(a, arg_int(a));
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    char via[64];
    if (reg >= 0) {
        snprintf(via, sizeof(via), "/proc/self/fd/%d", r->regs[reg]);
        target = via;
    }
    if (mount(*source ? source : NULL, target, *fstype ? fstype : NULL, flags,
              *data ? data : NULL) < 0)
        return fail(r, errno, "%s", what);
    return 0;
}

/* pivot_root refuses a shared parent, and the rootfs's own bind must not propagate to its
 * peers: the mount holding `path` (the nearest mount point at or above it) becomes private. */
static int do_parent_private(struct run *r, struct args *a)
{
    const char *path = arg_str(a), *what = arg_str(a);
    if (a->bad)
        return 0;
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s", path);
    for (;;) {
        if (mount(NULL, p, NULL, MS_PRIVATE, NULL) == 0)
            return 0;
        if (errno != EINVAL || strcmp(p, "/") == 0)
            return fail(r, errno, "%s: make %s private", what, p);
        char *slash = strrchr(p, '/');
        if (slash == p)
            p[1] = '\0';
        else
            *slash = '\0';
    }
}

static int do_root_open(struct run *r, struct args *a)
{
    int reg = reg_index(a, arg_int(a));
    const char *path = arg_str(a), *what = arg_str(a);
    if (a->bad)
        return 0;
    r->regs[reg] = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    return r->regs[reg] < 0 ? fail(r, errno, "%s: open %s", what, path) : 0;
}

static int do_not_symlink(struct run *r, struct args *a)
{
    int root = reg_index(a, arg_int(a));
    const char *name = arg_str(a), *what = arg_str(a);
    if (a->bad)
        return 0;
    struct stat st;
    if (fstatat(r->regs[root], name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : fail(r, errno, "%s", what);
    if (S_ISLNK(st.st_mode)) {
        fail(r, 0, "%s", what);
        errno = ELOOP;
        return -1;
    }
    return 0;
}

enum { CREATE_NONE, CREATE_DIR, CREATE_FILE, CREATE_LIKE };

/* An O_PATH descriptor of `path` resolved inside the root (created as asked); with
 * `proc_check`, refused when it lands on /proc or under it, but for the allowed paths. */
static int do_resolve(struct run *r, struct args *a)
{
    int reg = reg_index(a, arg_int(a));
    int root = reg_index(a, arg_int(a));
    const char *path = arg_str(a);
    int create = (int)arg_int(a);
    int like = reg_index(a, arg_int(a));
    int proc_check = (int)arg_int(a);
    const char *dest = arg_str(a);
    char **allowed = arg_list(a);
    const char *what = arg_str(a);
    if (a->bad || root < 0)
        return 0;
    int rootfd = r->regs[root], fd;
    if (create == CREATE_LIKE) {
        struct stat st;
        if (like < 0 || fstat(r->regs[like], &st) < 0)
            return fail(r, like < 0 ? EBADF : errno, "%s: stat the source", what);
        create = S_ISDIR(st.st_mode) ? CREATE_DIR : CREATE_FILE;
    }
    /* No symlink on the way: the destination is where its path says, which the plan's
     * compiler checked; only a path through a symlink needs the check of where it landed. */
    int linked = 0;
    fd = open_in_root_flags(rootfd, path, O_PATH, RESOLVE_NO_SYMLINKS);
    if (fd < 0 && errno == ELOOP) {
        linked = 1;
        fd = open_in_root(rootfd, path, O_PATH);
    }
    r->made[reg] = 0;
    if (fd < 0 && errno == ENOENT && create != CREATE_NONE) {
        r->made[reg] = 1;
        linked = 1; /* made through whatever links the path has: look where */
        fd = create == CREATE_DIR ? mkdirs_in_root(rootfd, path, 0) : mkfile_in_root(rootfd, path, 0);
    }
    if (fd < 0)
        return fail(r, errno, "%s", what);
    if (proc_check && linked) {
        char rel[PATH_MAX];
        path_in_root(rootfd, fd, rel, sizeof(rel));
        if (strcmp(rel, "/proc") == 0 || strncmp(rel, "/proc/", 6) == 0) {
            int ok = 0;
            for (char **p = allowed; p && *p; p++)
                ok |= strcmp(*p, rel) == 0;
            if (!ok) {
                /* the field of `what` ("mounts[3]"), then the destination */
                const char *colon = strstr(what, ": ");
                int field = colon ? (int)(colon - what) : (int)strlen(what);
                close(fd);
                fail(r, 0, strcmp(rel, "/proc") == 0 ? "%.*s: %s can only be a proc mount"
                                                      : "%.*s: %s is under /proc: refused",
                     field, what, dest);
                errno = EINVAL;
                return -1;
            }
        }
    }
    if (create == CREATE_DIR) {
        struct stat st;
        if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode)) {
            close(fd);
            return fail(r, ENOTDIR, "%s", what);
        }
    }
    r->regs[reg] = fd;
    return 0;
}

/* A bind onto /proc must bring a procfs (runc's checkProcMount): anything else there would
 * hide the kernel's own view of the container's processes. */
static int do_procfs(struct run *r, struct args *a)
{
    int reg = reg_index(a, arg_int(a));
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    struct statfs st;
    if (fstatfs(r->regs[reg], &st) < 0)
        return fail(r, errno, "%s: statfs the source", what);
    if (st.f_type != PROC_SUPER_MAGIC) {
        fail(r, 0, "%s", what);
        errno = EINVAL;
        return -1;
    }
    return 0;
}

/* The filesystem's own messages (fsconfig's log), appended to an error. */
static void fs_log(int fs, char *out, size_t cap)
{
    char line[512];
    size_t used = 0;
    *out = '\0';
    for (;;) {
        ssize_t n = read(fs, line, sizeof(line) - 1);
        if (n <= 0)
            break;
        line[n] = '\0';
        if (n > 0 && line[n - 1] == '\n')
            line[n - 1] = '\0';
        int w = snprintf(out + used, cap - used, " (%s)", line + (line[1] == ' ' ? 2 : 0));
        if (w < 0 || (size_t)w >= cap - used)
            break;
        used += (size_t)w;
    }
}

static int do_fsmount(struct run *r, struct args *a)
{
    int reg = reg_index(a, arg_int(a));
    const char *fstype = arg_str(a), *source = arg_str(a);
    char **options = arg_list(a);
    unsigned attrs = (unsigned)arg_int(a);
    int fallback = reg_index(a, arg_int(a));
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    char log[1024] = "";
    const char *step = "fsopen";
    int mnt = -1, fs = (int)syscall(SYS_fsopen, fstype, FSOPEN_CLOEXEC);
    if (fs < 0)
        goto failed;
    step = "fsconfig source";
    if (*source && syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "source", source, 0) < 0)
        goto failed;
    for (char **o = options; o && *o; o++) {
        char key[256];
        const char *eq = strchr(*o, '=');
        step = *o;
        if (eq) {
            size_t n = (size_t)(eq - *o);
            if (n >= sizeof(key)) {
                errno = EINVAL;
                goto failed;
            }
            memcpy(key, *o, n);
            key[n] = '\0';
            if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, key, eq + 1, 0) < 0)
                goto failed;
        } else if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, *o, NULL, 0) < 0) {
            goto failed;
        }
    }
    step = "create";
    if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        goto failed;
    step = "fsmount";
    mnt = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, attrs);
    if (mnt < 0)
        goto failed;
    close(fs);
    r->regs[reg] = mnt;
    return 0;
failed:;
    int err = errno;
    if (err == EPERM && fallback >= 0 && r->regs[fallback] >= 0) {
        /* not ours to mount (sysfs of a network namespace another user namespace owns):
         * the fallback tree instead, with the same attributes */
        if (fs >= 0)
            close(fs);
        r->regs[reg] = r->regs[fallback];
        r->regs[fallback] = -1;
        if (attrs && setattr_fd(r->regs[reg], "", AT_EMPTY_PATH | AT_RECURSIVE, attrs, 0, 0) < 0)
            return fail(r, errno, "%s", what);
        return 0;
    }
    if (fs >= 0) {
        fs_log(fs, log, sizeof(log));
        close(fs);
    }
    errno = err;
    if (strcmp(step, "fsopen") == 0 || strcmp(step, "fsmount") == 0)
        return fail(r, err, "%s%s%s", what, log, feature(step));
    return fail(r, err, "%s%s", what, log);
}

static int do_setattr(struct run *r, struct args *a)
{
    int reg = reg_index(a, arg_int(a));
    uint64_t set = (uint64_t)arg_int(a), clr = (uint64_t)arg_int(a);
    uint64_t propagation = (uint64_t)arg_int(a);
    int recursive = (int)arg_int(a);
    const char *path = arg_str(a), *what = arg_str(a);
    if (a->bad)
        return 0;
    int rc = reg >= 0 ? setattr_fd(r->regs[reg], "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0),
                                   set, clr, propagation)
                      : setattr_fd(AT_FDCWD, path, recursive ? AT_RECURSIVE : 0, set, clr,
                                   propagation);
    return rc < 0 ? fail(r, errno, "%s%s", what, feature("mount_setattr")) : 0;
}

static int do_move(struct run *r, struct args *a)
{
    int from = reg_index(a, arg_int(a)), to = reg_index(a, arg_int(a));
    const char *what = arg_str(a);
    if (a->bad || from < 0 || to < 0)
        return 0;
    if (syscall(SYS_move_mount, r->regs[from], "", r->regs[to], "",
                MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        return fail(r, errno, "%s%s", what, feature("move_mount"));
    return 0;
}

static int do_close(struct run *r, struct args *a)
{
    int reg = reg_index(a, arg_int(a));
    if (a->bad || reg < 0)
        return 0;
    if (r->regs[reg] >= 0)
        close(r->regs[reg]);
    r->regs[reg] = -1;
    return 0;
}

static int do_open_dir(struct run *r, struct args *a)
{
    int reg = reg_index(a, arg_int(a)), from = reg_index(a, arg_int(a));
    const char *what = arg_str(a);
    if (a->bad || from < 0)
        return 0;
    r->regs[reg] = openat(r->regs[from], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return r->regs[reg] < 0 ? fail(r, errno, "%s", what) : 0;
}

/* Copies a directory's entries with their modes and owners, by descriptors only: nothing is
 * looked up by path, so no symlink in the copied tree is followed. */
static int copy_tree(int src, int dst)
{
    int dup_src = dup(src);
    if (dup_src < 0)
        return -1;
    DIR *dir = fdopendir(dup_src);
    if (!dir) {
        close(dup_src);
        return -1;
    }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(dir)) != NULL) {
        const char *name = e->d_name;
        struct stat st;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        if (fstatat(src, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = -1;
            break;
        }
        if (S_ISDIR(st.st_mode)) {
            if (mkdirat(dst, name, 0700) < 0) {
                rc = -1;
                break;
            }
            int s = openat(src, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            int d = s < 0 ? -1 : openat(dst, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            rc = s < 0 || d < 0 ? -1 : copy_tree(s, d);
            if (s >= 0)
                close(s);
            if (d >= 0)
                close(d);
        } else if (S_ISREG(st.st_mode)) {
            int in = openat(src, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            int out = in < 0 ? -1 : openat(dst, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
                                           O_CLOEXEC, 0600);
            ssize_t n = 1;
            while (out >= 0 && (n = sendfile(out, in, NULL, 1 << 20)) > 0)
                ;
            rc = in < 0 || out < 0 || n < 0 ? -1 : 0;
            if (in >= 0)
                close(in);
            if (out >= 0)
                close(out);
        } else if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t n = readlinkat(src, name, target, sizeof(target) - 1);
            if (n < 0) {
                rc = -1;
                break;
            }
            target[n] = '\0';
            rc = symlinkat(target, dst, name);
        } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode)) {
            rc = mknodat(dst, name, st.st_mode, st.st_rdev);
        } else {
            continue; /* sockets: nothing to copy */
        }
        if (rc == 0)
            rc = fchownat(dst, name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW);
        if (rc == 0 && !S_ISLNK(st.st_mode))
            rc = fchmodat(dst, name, st.st_mode & 07777, 0);
    }
    int err = errno;
    closedir(dir);
    errno = err;
    return rc;
}

static int do_copy_up(struct run *r, struct args *a)
{
    int from = reg_index(a, arg_int(a)), to = reg_index(a, arg_int(a));
    const char *what = arg_str(a);
    if (a->bad || from < 0 || to < 0)
        return 0;
    int top = openat(r->regs[to], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (top < 0)
        return fail(r, errno, "%s: open the new tmpfs", what);
    int rc = copy_tree(r->regs[from], top);
    int err = errno;
    close(top);
    return rc < 0 ? fail(r, err, "%s: copy up", what) : 0;
}

/* A tmpfs keeps the mode of the directory it covers (a tmpfs on /tmp stays 1777); a
 * directory RESOLVE had to make covered nothing. */
static int do_chmod_like(struct run *r, struct args *a)
{
    int to = reg_index(a, arg_int(a)), like = reg_index(a, arg_int(a));
    const char *what = arg_str(a);
    if (a->bad || to < 0 || like < 0)
        return 0;
    struct stat st;
    if (r->made[like] || fstat(r->regs[like], &st) < 0 || !S_ISDIR(st.st_mode))
        return 0;
    int top = openat(r->regs[to], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (top < 0)
        return fail(r, errno, "%s: open the new tmpfs", what);
    int rc = fchmod(top, st.st_mode & 07777);
    int err = errno;
    close(top);
    return rc < 0 ? fail(r, err, "%s: chmod", what) : 0;
}

static int do_symlink(struct run *r, struct args *a)
{
    int root = reg_index(a, arg_int(a));
    const char *dir = arg_str(a), *name = arg_str(a), *target = arg_str(a);
    int replace = (int)arg_int(a);
    const char *what = arg_str(a);
    if (a->bad || root < 0)
        return 0;
    int fd = open_in_root(r->regs[root], dir, O_PATH | O_DIRECTORY);
    if (fd < 0)
        return fail(r, errno, "%s", what);
    int rc = symlinkat(target, fd, name);
    if (rc < 0 && errno == EEXIST) {
        rc = 0;
        if (replace) {
            rc = unlinkat(fd, name, 0);
            if (rc == 0)
                rc = symlinkat(target, fd, name);
        }
    }
    int err = errno;
    close(fd);
    return rc < 0 ? fail(r, err, "%s", what) : 0;
}

/* The host's node at `path` bound onto an empty file at the same place in the root: in a user
 * namespace, or where mknod is refused. */
static int bind_host_device(struct run *r, int root, const char *path, const char *what)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return fail(r, errno, "%s: no such device on the host to bind: %s", what, path);
    int target = mkfile_in_root(root, path, 0);
    if (target < 0)
        return fail(r, errno, "%s", what);
    int tree = (int)syscall(SYS_open_tree, AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (tree < 0) {
        int err = errno;
        close(target);
        return fail(r, err, "%s: open_tree %s", what, path);
    }
    int rc = (int)syscall(SYS_move_mount, tree, "", target, "",
                          MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
    int err = errno;
    close(tree);
    close(target);
    return rc < 0 ? fail(r, err, "%s: bind %s", what, path) : 0;
}

/* A device node below the root's /dev.  An existing node is kept (runc does the same). */
static int do_mknod(struct run *r, struct args *a)
{
    int root = reg_index(a, arg_int(a));
    const char *path = arg_str(a);
    mode_t mode = (mode_t)arg_int(a);
    unsigned major_ = (unsigned)arg_int(a), minor_ = (unsigned)arg_int(a);
    int64_t uid = arg_int(a), gid = arg_int(a);
    int bind = (int)arg_int(a);
    const char *what = arg_str(a);
    if (a->bad || root < 0)
        return 0;
    int rootfd = r->regs[root];
    const char *slash = strrchr(path, '/');
    char parent[PATH_MAX], inside[PATH_MAX];
    size_t plen = slash ? (size_t)(slash - path) : 0;
    if (!slash || plen >= sizeof(parent))
        return fail(r, EINVAL, "%s", what);
    memcpy(parent, path, plen);
    parent[plen] = '\0';
    const char *name = slash + 1;
    int dir = mkdirs_in_root(rootfd, parent, 0);
    if (dir < 0)
        return fail(r, errno, "%s", what);
    path_in_root(rootfd, dir, inside, sizeof(inside));
    if (*inside && strcmp(inside, "/dev") != 0 && strncmp(inside, "/dev/", 5) != 0) {
        close(dir);
        return fail(r, EXDEV, "%s: resolves outside /dev", what);
    }
    int fifo = S_ISFIFO(mode);
    if (bind && !fifo) {
        close(dir);
        return bind_host_device(r, rootfd, path, what);
    }
    if (mknodat(dir, name, mode, makedev(major_, minor_)) < 0) {
        int err = errno;
        close(dir);
        if (err == EEXIST)
            return 0;
        if (err == EPERM && !fifo)
            return bind_host_device(r, rootfd, path, what);
        return fail(r, err, "%s", what);
    }
    /* mknod's mode went through the umask; chmod and chown through a descriptor of the node */
    int node = openat(dir, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    close(dir);
    if (node < 0)
        return fail(r, errno, "%s", what);
    char via[64];
    snprintf(via, sizeof(via), "/proc/self/fd/%d", node);
    int rc = chmod(via, mode & 07777);
    if (rc == 0 && (uid >= 0 || gid >= 0))
        rc = fchownat(node, "", (uid_t)uid, (gid_t)gid, AT_EMPTY_PATH);
    int err = errno;
    close(node);
    return rc < 0 ? fail(r, err, "%s", what) : 0;
}

/* A blob as a descriptor to read from (a hook's stdin). */
static int blob_fd(struct run *r, int index)
{
    int fd = memfd_create("corral-hook-state", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    if (index >= 0 && index < CORRAL_PLAN_BLOBS && r->blob[index] &&
        write_all(fd, r->blob[index], r->blob_len[index]) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One hook: its state on stdin, killed at its timeout.  Before Waiting (createContainer) its
 * output is kept for the error message; after it (startContainer) it writes to the
 * container's own stdout and stderr. */
static int do_hook(struct run *r, struct args *a)
{
    const char *kind = arg_str(a);
    int index = (int)arg_int(a);
    const char *path = arg_str(a);
    char **argv = arg_list(a), **envp = arg_list(a);
    int timeout = (int)arg_int(a), blob = (int)arg_int(a);
    const char *cwd = arg_str(a);
    if (a->bad)
        return 0;
    char what[PATH_MAX + 64], output[HOOK_OUTPUT_KEPT + 1];
    size_t kept = 0;
    snprintf(what, sizeof(what), "error running %s hook #%d %s", kind, index, path);
    int in = blob_fd(r, blob), out[2] = {-1, -1};
    if (in < 0 || lseek(in, 0, SEEK_SET) < 0)
        return fail(r, errno, "%s: the state", what);
    if (!r->late && pipe2(out, O_CLOEXEC) < 0) {
        close(in);
        return fail(r, errno, "%s: pipe", what);
    }
    pid_t pid = fork();
    if (pid < 0) {
        int err = errno;
        close(in);
        return fail(r, err, "%s: fork", what);
    }
    if (pid == 0) {
        if (dup2(in, 0) < 0 || (out[1] >= 0 && (dup2(out[1], 1) < 0 || dup2(out[1], 2) < 0)))
            _exit(127);
        if (*cwd && chdir(cwd) < 0) {
            dprintf(2, "chdir %s: %s", cwd, strerror(errno));
            _exit(127);
        }
        signal(SIGPIPE, SIG_DFL);
        execve(path, argv, envp);
        dprintf(2, "exec: %s", strerror(errno));
        _exit(127);
    }
    close(in);
    if (out[1] >= 0)
        close(out[1]);
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        int err = errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return fail(r, err, "%s: pidfd_open", what);
    }
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int status = 0, timed_out = 0;
    for (;;) {
        struct pollfd fds[2] = {{pidfd, POLLIN, 0}, {out[0], POLLIN, 0}};
        int wait_ms = -1;
        if (timeout > 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long spent = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
            wait_ms = spent >= (long)timeout * 1000 ? 0 : (int)((long)timeout * 1000 - spent);
        }
        int n = poll(fds, out[0] >= 0 ? 2 : 1, wait_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0) {
            timed_out = 1;
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            break;
        }
        if (out[0] >= 0 && (fds[1].revents & (POLLIN | POLLHUP))) {
            char buf[4096];
            ssize_t got = read(out[0], buf, sizeof(buf));
            if (got <= 0) {
                close(out[0]);
                out[0] = -1;
            } else {
                for (ssize_t i = 0; i < got; i++) { /* keep the tail */
                    if (kept == HOOK_OUTPUT_KEPT) {
                        memmove(output, output + 1, HOOK_OUTPUT_KEPT - 1);
                        kept--;
                    }
                    output[kept++] = buf[i];
                }
            }
        }
        if (fds[0].revents & POLLIN) {
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            break;
        }
    }
    close(pidfd);
    if (out[0] >= 0) { /* what is still in the pipe (a child the hook left may hold it) */
        fcntl(out[0], F_SETFL, O_NONBLOCK);
        char buf[4096];
        ssize_t got;
        while ((got = read(out[0], buf, sizeof(buf))) > 0) {
            for (ssize_t i = 0; i < got; i++) {
                if (kept == HOOK_OUTPUT_KEPT) {
                    memmove(output, output + 1, HOOK_OUTPUT_KEPT - 1);
                    kept--;
                }
                output[kept++] = buf[i];
            }
        }
        close(out[0]);
    }
    output[kept] = '\0';
    /* the output's tail as one line, trimmed */
    char *o = output;
    while (*o == '\n' || *o == ' ' || *o == '\t')
        o++;
    for (size_t i = strlen(o); i > 0 && (o[i - 1] == '\n' || o[i - 1] == ' '); i--)
        o[i - 1] = '\0';
    char tail[HOOK_OUTPUT_KEPT * 3 + 16] = "";
    if (*o) {
        size_t t = (size_t)snprintf(tail, sizeof(tail), ", output: ");
        for (; *o && t + 4 < sizeof(tail); o++) {
            if (*o == '\n') {
                memcpy(tail + t, " | ", 3);
                t += 3;
            } else {
                tail[t++] = *o;
            }
        }
        tail[t] = '\0';
    }
    if (timed_out)
        return fail(r, 0, "%s: timed out after %ds (killed)%s", what, timeout, tail);
    if (WIFSIGNALED(status)) {
        if (WTERMSIG(status) == SIGSYS)
            return fail(r, 0, "%s: bad system call%s", what, tail);
        return fail(r, 0, "%s: killed by signal %d%s", what, WTERMSIG(status), tail);
    }
    if (WEXITSTATUS(status) != 0)
        return fail(r, 0, "%s: exit status %d%s", what, WEXITSTATUS(status), tail);
    return 0;
}

/* pivot_root(".", ".") inside the rootfs, then the old root, stacked on top, detached (runc's
 * way: no directory for the old root).  The detach must not propagate: slave first. */
static int do_pivot(struct run *r, struct args *a)
{
    const char *rootfs = arg_str(a), *what = arg_str(a);
    if (a->bad)
        return 0;
    int old = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (old < 0)
        return fail(r, errno, "%s: open /", what);
    int new_root = open(rootfs, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    const char *step = "open";
    int rc = new_root < 0 ? -1 : 0;
    if (rc == 0 && (step = "fchdir", fchdir(new_root) < 0))
        rc = -1;
    if (rc == 0 && (step = "pivot_root", syscall(SYS_pivot_root, ".", ".") < 0))
        rc = -1;
    if (rc == 0 && (step = "fchdir to the old root", fchdir(old) < 0))
        rc = -1;
    if (rc == 0 && (step = "make the old root a slave", mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0))
        rc = -1;
    if (rc == 0 && (step = "detach the old root", umount2(".", MNT_DETACH) < 0))
        rc = -1;
    if (rc == 0 && (step = "chdir /", chdir("/") < 0))
        rc = -1;
    int err = errno;
    close(old);
    if (new_root >= 0)
        close(new_root);
    return rc < 0 ? fail(r, err, "%s: %s", what, step) : 0;
}

/* --no-pivot: the host's full procfs and sysfs mounts are detached first (with them present
 * the kernel would let the container mount fresh, unmasked ones), then the rootfs is moved
 * over / and chrooted into. */
static int do_move_root(struct run *r, struct args *a)
{
    const char *rootfs = arg_str(a);
    char **hide = arg_list(a);
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    for (char **h = hide; h && *h; h++) {
        if (mount(NULL, *h, NULL, MS_SLAVE | MS_REC, NULL) < 0) {
            if (errno == ENOENT || errno == EINVAL)
                continue; /* gone already, with a parent detached before it */
            return fail(r, errno, "detach %s", *h);
        }
        if (umount2(*h, MNT_DETACH) < 0) {
            if (errno != EINVAL && errno != EPERM)
                return fail(r, errno, "detach %s", *h);
            if (mount("tmpfs", *h, "tmpfs", 0, NULL) < 0) /* locked: cover it */
                return fail(r, errno, "cover %s", *h);
        }
    }
    if (chdir(rootfs) < 0 || mount(rootfs, "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 ||
        chdir("/") < 0)
        return fail(r, errno, "%s", what);
    return 0;
}

/* In the runtime's own mount namespace (the config has none): chroot, as runc does there;
 * pivot_root would move the root of every process of the namespace. */
static int do_chroot(struct run *r, struct args *a)
{
    const char *rootfs = arg_str(a), *what = arg_str(a);
    if (a->bad)
        return 0;
    const char *step = "chdir";
    if (chdir(rootfs) < 0 || (step = "chroot", chroot(".") < 0) ||
        (step = "chdir /", chdir("/") < 0))
        return fail(r, errno, "%s: %s", what, step);
    return 0;
}

static int do_chdir(struct run *r, struct args *a)
{
    const char *path = arg_str(a);
    int make = (int)arg_int(a);
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    if (make && *path) {
        int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        int fd = root < 0 ? -1 : mkdirs_in_root(root, path, 0);
        if (root >= 0)
            close(root);
        if (fd < 0)
            return fail(r, errno, "%s", what);
        close(fd);
    }
    return chdir(path) < 0 ? fail(r, errno, "%s", what) : 0;
}

static int move_onto(int tree, const char *path)
{
    return (int)syscall(SYS_move_mount, tree, "", AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH);
}

/* The container's /dev/null, checked: a rootfs could make it a symlink to (or a bind of)
 * something it wants mounted read-write over a masked path (runc CVE-2025-31133). */
static int checked_null(struct run *r)
{
    if (r->null_fd >= 0)
        return r->null_fd;
    int fd = open("/dev/null", O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3)) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    return r->null_fd = fd;
}

/* Hides `path`: an empty read-only tmpfs over a directory, /dev/null over anything else.  A
 * missing path is nothing to hide. */
static int do_mask(struct run *r, struct args *a)
{
    const char *path = arg_str(a), *what = arg_str(a);
    if (a->bad)
        return 0;
    struct stat st;
    if (stat(path, &st) < 0)
        return errno == ENOENT || errno == ENOTDIR ? 0 : fail(r, errno, "%s", what);
    int tree;
    if (S_ISDIR(st.st_mode)) {
        /* one empty read-only tmpfs for the container's masks: the first masked directory
         * gets the tmpfs itself, the others a copy of it (copied once it is attached:
         * kernels before 6.15 refuse to copy a detached mount) */
        if (r->mask_fs < 0) {
            int fs = (int)syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC);
            if (fs < 0)
                return fail(r, errno, "%s: fsopen tmpfs%s", what, feature("fsopen"));
            if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
                int err = errno;
                close(fs);
                return fail(r, err, "%s: tmpfs", what);
            }
            int mnt = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY |
                                   MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
            int err = errno;
            close(fs);
            if (mnt < 0)
                return fail(r, err, "%s: fsmount", what);
            if (move_onto(mnt, path) < 0) {
                err = errno;
                close(mnt);
                return fail(r, err, "%s", what);
            }
            r->mask_fs = mnt;
            return 0;
        }
        tree = (int)syscall(SYS_open_tree, r->mask_fs, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC |
                            AT_EMPTY_PATH);
        if (tree < 0)
            return fail(r, errno, "%s: open_tree of the masking tmpfs", what);
    } else {
        int null = checked_null(r);
        if (null < 0)
            return fail(r, errno, errno == EINVAL ? "%s: /dev/null in the container is not the "
                        "null device" : "%s: open /dev/null", what);
        tree = (int)syscall(SYS_open_tree, null, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC |
                            AT_EMPTY_PATH);
        if (tree < 0)
            return fail(r, errno, "%s: open_tree /dev/null", what);
    }
    int rc = move_onto(tree, path);
    int err = errno;
    close(tree);
    return rc < 0 ? fail(r, err, "%s", what) : 0;
}

/* `path` as a read-only (nosuid, nodev, noexec) mount of its own; missing paths are skipped.
 * mount_setattr sets only these: flags the kernel locked on the mount are kept. */
static int do_readonly(struct run *r, struct args *a)
{
    const char *path = arg_str(a), *what = arg_str(a);
    if (a->bad)
        return 0;
    int tree = (int)syscall(SYS_open_tree, AT_FDCWD, path,
                            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (tree < 0)
        return errno == ENOENT || errno == ENOTDIR ? 0 : fail(r, errno, "%s", what);
    int rc = setattr_fd(tree, "", AT_EMPTY_PATH, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
                        MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, 0, 0);
    if (rc == 0)
        rc = move_onto(tree, path);
    int err = errno;
    close(tree);
    return rc < 0 ? fail(r, err, "%s", what) : 0;
}

/* ---- the init: the process ------------------------------------------------------------ */

static int do_rlimit(struct run *r, struct args *a)
{
    int resource = (int)arg_int(a);
    struct rlimit lim = {(rlim_t)arg_int(a), (rlim_t)arg_int(a)};
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    return setrlimit(resource, &lim) < 0 ? fail(r, errno, "%s", what) : 0;
}

/* PATH lookup inside the container, with runc's messages (podman maps "executable file not
 * found" and "no such file or directory" to exit 127). */
static int do_find_exec(struct run *r, struct args *a)
{
    const char *arg0 = arg_str(a), *search = arg_str(a);
    if (a->bad)
        return 0;
    struct stat st;
    if (strchr(arg0, '/')) {
        if (stat(arg0, &st) < 0)
            return fail(r, errno, "exec: \"%s\": stat %s", arg0, arg0);
        snprintf(r->exec_path, sizeof(r->exec_path), "%s", arg0);
        return 0;
    }
    const char *p = search;
    for (;;) {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char candidate[PATH_MAX];
        snprintf(candidate, sizeof(candidate), "%.*s/%s", (int)(n ? n : 1), n ? p : ".", arg0);
        if (stat(candidate, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111)) {
            snprintf(r->exec_path, sizeof(r->exec_path), "%s", candidate);
            return 0;
        }
        if (!end)
            break;
        p = end + 1;
    }
    fail(r, 0, "exec: \"%s\": executable file not found in $PATH", arg0);
    errno = ENOENT;
    return -1;
}

/* A pty of the container's own devpts: the slave becomes stdio and the controlling terminal
 * (the init leads its session), the master goes to the console socket ("/dev/ptmx" and the
 * descriptor, as runc sends it). */
static int do_terminal(struct run *r, struct args *a)
{
    int console = reg_index(a, arg_int(a));
    uid_t uid = (uid_t)arg_int(a);
    int rows = (int)arg_int(a), cols = (int)arg_int(a);
    const char *what = arg_str(a);
    if (a->bad || console < 0)
        return 0;
    const char *step = "open /dev/pts/ptmx";
    int master = -1, slave = -1, rc = -1, unlock = 0, number;
    char name[64];
    master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0)
        goto out;
    step = "unlockpt";
    if (ioctl(master, TIOCSPTLCK_, &unlock) < 0)
        goto out;
    step = "ptsname (TIOCGPTN)";
    if (ioctl(master, TIOCGPTN_, &number) < 0)
        goto out;
    snprintf(name, sizeof(name), "/dev/pts/%d", number);
    step = name;
    slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0)
        goto out;
    /* the process's user only: the group stays devpts's (its gid= option, 5 by default), as
     * runc's fixStdioPermissions leaves it, and so are its exceptions: a uid the namespace
     * does not map (EINVAL), an owner it cannot change (EPERM), a read-only /dev (EROFS) */
    step = "chown the pty";
    if (fchown(slave, uid, (gid_t)-1) < 0 && errno != EINVAL && errno != EPERM && errno != EROFS)
        goto out;
    if (rows > 0 || cols > 0) {
        struct winsize ws = {(unsigned short)rows, (unsigned short)cols, 0, 0};
        step = "process.consoleSize: TIOCSWINSZ";
        if (ioctl(slave, TIOCSWINSZ, &ws) < 0)
            goto out;
    }
    step = "make the pty stdio";
    for (int fd = 0; fd < 3; fd++)
        if (dup2(slave, fd) < 0)
            goto out;
    step = "TIOCSCTTY";
    if (ioctl(0, TIOCSCTTY, 0) < 0)
        goto out;
    step = "--console-socket: send the pty master";
    {
        char payload[] = "/dev/ptmx";
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } control;
        struct iovec iov = {payload, sizeof(payload) - 1};
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
        memcpy(CMSG_DATA(cmsg), &master, sizeof(int));
        if (sendmsg(r->regs[console], &msg, MSG_NOSIGNAL) < 0)
            goto out;
    }
    rc = 0;
out:;
    int err = errno;
    if (master >= 0)
        close(master);
    if (slave >= 0)
        close(slave);
    close(r->regs[console]);
    r->regs[console] = -1;
    return rc < 0 ? fail(r, err, "%s: %s", what, step) : 0;
}

static int do_umask(struct run *r, struct args *a)
{
    int mask = (int)arg_int(a);
    if (!a->bad)
        umask((mode_t)mask);
    return 0;
}

struct sched_attr_ {
    uint32_t size, sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime, sched_deadline, sched_period;
};

static int do_sched(struct run *r, struct args *a)
{
    struct sched_attr_ attr;
    memset(&attr, 0, sizeof(attr));
    attr.size = sizeof(attr);
    attr.sched_policy = (uint32_t)arg_int(a);
    attr.sched_flags = (uint64_t)arg_int(a);
    attr.sched_nice = (int32_t)arg_int(a);
    attr.sched_priority = (uint32_t)arg_int(a);
    attr.sched_runtime = (uint64_t)arg_int(a);
    attr.sched_deadline = (uint64_t)arg_int(a);
    attr.sched_period = (uint64_t)arg_int(a);
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    return syscall(SYS_sched_setattr, 0, &attr, 0) < 0 ? fail(r, errno, "%s", what) : 0;
}

static int do_ioprio(struct run *r, struct args *a)
{
    int value = (int)arg_int(a);
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    return syscall(SYS_ioprio_set, 1, 0, value) < 0 ? fail(r, errno, "%s", what) : 0;
}

static int do_mempolicy(struct run *r, struct args *a)
{
    int mode = (int)arg_int(a);
    uint32_t len;
    const char *mask = arg_bytes(a, 'b', &len);
    unsigned long maxnode = (unsigned long)arg_int(a);
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    unsigned long words[128];
    memset(words, 0, sizeof(words));
    memcpy(words, mask, len < sizeof(words) ? len : sizeof(words));
    return syscall(SYS_set_mempolicy, mode, len ? words : NULL, len ? maxnode : 0) < 0
               ? fail(r, errno, "%s", what) : 0;
}

static int do_personality(struct run *r, struct args *a)
{
    unsigned long persona = (unsigned long)arg_int(a);
    const char *what = arg_str(a);
    if (a->bad)
        return 0;
    if (personality(persona) < 0)
        return fail(r, errno, "%s", what);
    int now = personality(0xffffffff);
    if ((unsigned long)now != persona)
        return fail(r, EINVAL, "%s: the kernel kept 0x%x", what, now);
    return 0;
}

/* A session keyring of the container's own (runc's default); kernels without keyrings: skip. */
static int do_keyring(struct run *r, struct args *a)
{
    const char *name = arg_str(a);
    if (a->bad)
        return 0;
    if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name) < 0 && errno != ENOSYS)
        return fail(r, errno, "join session keyring %s", name);
    return 0;
}

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

static int do_bounding(struct run *r, struct args *a)
{
    uint64_t keep = (uint64_t)arg_int(a);
    if (a->bad)
        return 0;
    if (r->last_cap < 0)
        r->last_cap = last_cap();
    for (int c = 0; c <= r->last_cap; c++) {
        if (keep & (1ULL << c))
            continue;
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
            return fail(r, errno, "drop capability %d from the bounding set", c);
    }
    return 0;
}

/* Changes user keeping the permitted set, so that CAPS sets exactly what the config asks. */
static int do_user(struct run *r, struct args *a)
{
    uid_t uid = (uid_t)arg_int(a);
    gid_t gid = (gid_t)arg_int(a);
    int set_groups = (int)arg_int(a);
    uint32_t len;
    const char *raw = arg_bytes(a, 'b', &len);
    if (a->bad)
        return 0;
    size_t n = len / 4;
    gid_t groups[1024];
    if (n > 1024)
        return fail(r, EINVAL, "setgroups: more than 1024 groups");
    for (size_t i = 0; i < n; i++)
        groups[i] = get_u32((const unsigned char *)raw + 4 * i);
    /* EPERM for an empty list: a rootless user namespace has setgroups denied */
    if (set_groups && setgroups(n, groups) < 0 && !(errno == EPERM && n == 0))
        return fail(r, errno, "setgroups");
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        return fail(r, errno, "prctl(PR_SET_KEEPCAPS)");
    if (setresgid(gid, gid, gid) < 0)
        return fail(r, errno, "setresgid(%u)", gid);
    if (setresuid(uid, uid, uid) < 0)
        return fail(r, errno, "setresuid(%u)", uid);
    if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
        return fail(r, errno, "prctl(PR_SET_KEEPCAPS)");
    return 0;
}

static int set_caps(struct run *r, uint64_t extra)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (r->last_cap < 0)
        r->last_cap = last_cap();
    /* capabilities this kernel does not know are left out, as runc does */
    uint64_t known = r->last_cap >= 63 ? ~0ULL : (1ULL << (r->last_cap + 1)) - 1;
    for (int i = 0; i < 2; i++) {
        data[i].effective = (uint32_t)(((r->cap_eff | extra) & known) >> (32 * i));
        data[i].permitted = (uint32_t)(((r->cap_perm | extra) & known) >> (32 * i));
        data[i].inheritable = (uint32_t)((r->cap_inh & known) >> (32 * i));
    }
    return (int)syscall(SYS_capset, &hdr, data);
}

/* Without no_new_privs, loading a seccomp filter needs CAP_SYS_ADMIN: `keep_sysadmin` keeps it
 * (effective and permitted) until SECCOMP has loaded the filter. */
static int do_caps(struct run *r, struct args *a)
{
    r->cap_eff = (uint64_t)arg_int(a);
    r->cap_perm = (uint64_t)arg_int(a);
    r->cap_inh = (uint64_t)arg_int(a);
    uint64_t ambient = (uint64_t)arg_int(a);
    int keep_sysadmin = (int)arg_int(a);
    if (a->bad)
        return 0;
    if (set_caps(r, keep_sysadmin ? 1ULL << CAP_SYS_ADMIN_BIT : 0) < 0)
        return fail(r, errno, "capset");
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return fail(r, errno, "clear ambient capabilities");
    for (int c = 0; c <= r->last_cap; c++) {
        if (!(ambient & (1ULL << c)))
            continue;
        /* EPERM: not also inheritable and permitted; runc and crun skip it too */
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0 && errno != EPERM)
            return fail(r, errno, "raise ambient capability %d", c);
    }
    return 0;
}

static int do_nnp(struct run *r, struct args *a)
{
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ? fail(r, errno, "prctl(PR_SET_NO_NEW_PRIVS)") : 0;
}

/* As the final user, so that create fails rather than start. */
static int do_check_exec(struct run *r, struct args *a)
{
    return access(r->exec_path, X_OK) < 0 ? fail(r, errno, "exec: \"%s\"", r->exec_path) : 0;
}

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

/* No descriptor of the runtime crosses exec: from `first` (3 + preserved fds) up, every one is
 * marked close-on-exec.  close_range needs Linux 5.11; older kernels walk /proc/self/fd. */
static int do_cloexec_from(struct run *r, struct args *a)
{
    int first = (int)arg_int(a);
    if (a->bad)
        return 0;
    if (syscall(SYS_close_range, (unsigned)first, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
        return 0;
    if ((errno == ENOSYS || errno == EINVAL) && cloexec_from_proc(first) == 0)
        return 0;
    return fail(r, errno, "mark descriptors close-on-exec");
}

/* Blocks until `start` opens the fifo for reading.  An exec'd process has none: it waits
 * for the parent to hang up the sync socket instead, so that the parent's last host-side step
 * comes before the process runs (exec --ignore-paused joins the frozen cgroup there). */
static int do_fifo(struct run *r, struct args *a)
{
    int reg = reg_index(a, arg_int(a));
    if (a->bad)
        return 0;
    if (reg < 0) {
        char byte;
        while (read(r->sync_fd, &byte, 1) < 0 && errno == EINTR)
            ;
    }
    close(r->sync_fd);
    if (reg < 0)
        return 0;
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", r->regs[reg]);
    int fd;
    do {
        fd = open(path, O_WRONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return fail(r, errno, "exec fifo");
    if (write_all(fd, "0", 1) < 0 && errno != EPIPE) /* EPIPE: start went away; run anyway */
        return fail(r, errno, "exec fifo");
    close(fd);
    return 0;
}

/* Ignored dispositions and the mask survive execve: the container starts with defaults. */
static int do_signals(struct run *r, struct args *a)
{
    sigset_t none;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    sigemptyset(&none);
    return sigprocmask(SIG_SETMASK, &none, NULL) < 0 ? fail(r, errno, "reset signals") : 0;
}

/* The notify fd to the seccomp agent, in one sendmsg with the containerProcessState JSON. */
static int send_listener(int sock, int notify_fd, const char *data, size_t len)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {(void *)data, len};
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
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        iov.iov_base = (char *)iov.iov_base + n;
        iov.iov_len -= (size_t)n;
        msg.msg_control = NULL; /* the fd went with the first bytes */
        msg.msg_controllen = 0;
    }
    return 0;
}

/* The filter (BPF compiled by libseccomp in the parent) is the last step before execve, so
 * that it filters as little of our own work as possible.  With a listener (SCMP_ACT_NOTIFY)
 * it is loaded with NEW_LISTENER and the notify fd goes to the agent right away (crun's
 * order); on a failure the notify fd is closed first, so notified calls fail with ENOSYS
 * rather than wait. */
static int do_seccomp(struct run *r, struct args *a)
{
    uint32_t len;
    const char *program = arg_bytes(a, 'b', &len);
    unsigned flags = (unsigned)arg_int(a);
    int drop_sysadmin = (int)arg_int(a);
    int listener = reg_index(a, arg_int(a));
    int blob = (int)arg_int(a);
    if (a->bad)
        return 0;
    struct sock_fprog prog = {(unsigned short)(len / 8), (struct sock_filter *)program};
    int rc;
    if (listener >= 0) {
        /* TSYNC excludes NEW_LISTENER; one thread here, TSYNC has nothing to do */
        unsigned f = (flags & ~(unsigned)SECCOMP_FILTER_FLAG_TSYNC) |
                     SECCOMP_FILTER_FLAG_NEW_LISTENER;
        rc = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, f, &prog);
    } else if (flags) {
        rc = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
    } else {
        rc = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
    }
    if (rc < 0)
        return fail(r, errno, "linux.seccomp: load the filter");
    if (listener >= 0) {
        const char *state = blob >= 0 && blob < CORRAL_PLAN_BLOBS && r->blob[blob] ? r->blob[blob] : "";
        size_t state_len = blob >= 0 && blob < CORRAL_PLAN_BLOBS ? r->blob_len[blob] : 0;
        if (send_listener(r->regs[listener], rc, state, state_len) < 0) {
            int err = errno;
            close(rc);
            return fail(r, err, "linux.seccomp.listenerPath: send the notify fd to the seccomp "
                        "agent");
        }
        close(rc);
        close(r->regs[listener]);
        r->regs[listener] = -1;
    }
    if (drop_sysadmin && set_caps(r, 0) < 0)
        return fail(r, errno, "linux.seccomp: drop CAP_SYS_ADMIN after loading the filter "
                    "(the profile must allow capset)");
    return 0;
}

static int do_exec(struct run *r, struct args *a)
{
    char **argv = arg_list(a), **envp = arg_list(a);
    if (a->bad || !argv || !argv[0])
        return 0;
    const char *path = r->exec_path[0] ? r->exec_path : argv[0];
    execve(path, argv, envp);
    return fail(r, errno, "exec %s", path);
}

/* ---- running a plan ------------------------------------------------------------------- */

typedef int (*handler)(struct run *, struct args *);

static const handler handlers[] = {
    do_open, do_connect, do_tree, do_idmap_tree, do_write, do_write_fd, do_affinity,
    do_open_ns, do_setns, do_unshare, do_clone_init, do_await, do_joined, do_report, do_setsid,
    do_become_root, do_dumpable, do_loopback_up, do_sethostname, do_setdomainname, do_mount,
    do_parent_private, do_root_open, do_not_symlink, do_resolve, do_procfs, do_fsmount,
    do_setattr, do_move, do_close, do_open_dir, do_copy_up, do_chmod_like, do_symlink,
    do_mknod, do_hook, do_pivot, do_move_root, do_chroot, do_chdir, do_mask, do_readonly,
    do_rlimit, do_find_exec, do_terminal, do_umask, do_sched, do_ioprio, do_mempolicy, do_personality, do_keyring,
    do_bounding, do_user, do_caps, do_nnp, do_check_exec, do_cloexec_from, do_fifo,
    do_signals, do_seccomp, do_exec,
};
_Static_assert(sizeof(handlers) / sizeof(handlers[0]) == OP_COUNT, "one handler per op");

/* Runs the plan on the sync socket to its exec; returns only on failure (reported). */
static int launch(int sync_fd)
{
    static struct run r;
    memset(&r, 0, sizeof(r));
    r.sync_fd = sync_fd;
    r.null_fd = -1;
    r.mask_fs = -1;
    r.last_cap = -1;
    r.stage = "plan";
    for (int i = 0; i < CORRAL_PLAN_REGS; i++)
        r.regs[i] = -1;
    signal(SIGPIPE, SIG_IGN); /* a parent gone is an error to see, not a signal; reset at SIGNALS */
    uint32_t len;
    unsigned char *plan = read_frame(sync_fd, CORRAL_MSG_PLAN, &len);
    if (!plan) {
        if (errno == EPIPE)
            return -1;
        return fail(&r, errno, "read the plan");
    }
    if (len < 8 || get_u32(plan) != CORRAL_PLAN_MAGIC || get_u32(plan + 4) != CORRAL_PLAN_VERSION)
        return fail(&r, EPROTO, "the plan is not version %d of corral's plans", CORRAL_PLAN_VERSION);
    const unsigned char *p = plan + 8, *end = plan + len;
    while (p < end) {
        if (end - p < 8)
            return fail(&r, EPROTO, "a truncated step");
        unsigned op = p[0] | p[1] << 8;
        uint32_t size = get_u32(p + 4);
        p += 8;
        if (op >= OP_COUNT || (uint32_t)(end - p) < size)
            return fail(&r, EPROTO, "a malformed step (op %u)", op);
        struct args a = {p, p + size, 0};
        r.stage = op_names[op];
        if (handlers[op](&r, &a) < 0)
            return -1;
        if (a.bad || a.p != a.end)
            return fail(&r, EPROTO, "step %s: arguments are not %s", op_names[op], op_args[op]);
        p += size;
    }
    return fail(&r, EPROTO, "the plan ended without exec");
}

/* ---- the keeper's spawner ------------------------------------------------------------ */

#define SPAWNER_CONNECTIONS 8
#define SPAWNER_ADD 0xffffffffu /* a request of the keeper's: serve this connection too */

/* One request of a connection: u32 seq; SCM_RIGHTS: sync socket, stdin, stdout, stderr.  A
 * launcher forked with CLONE_PARENT, so that it and the init it clones are the keeper's
 * children.  Answer: u32 seq, i32 pid or -errno; SCM_RIGHTS: a pidfd of the launcher (made
 * by the clone itself: it names the launcher, never a reused pid).  Returns -1 when the
 * connection is gone; `conns` are closed in the launcher. */
static int spawn_one(int conn, const int *conns, int nconns, int *added)
{
    uint32_t seq = 0;
    int fds[MAX_FDS_PER_SPAWN], nfds = 0;
    union {
        char buf[CMSG_SPACE(sizeof(int) * MAX_FDS_PER_SPAWN)];
        struct cmsghdr align;
    } control;
    struct iovec iov = {&seq, sizeof(seq)};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR)
        return 0;
    if (n <= 0)
        return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int got = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < got && nfds < MAX_FDS_PER_SPAWN; i++)
                memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
    }
    if (n == sizeof(seq) && seq == SPAWNER_ADD && nfds == 1) {
        *added = fds[0];
        return 0;
    }
    int32_t result;
    int pidfd = -1;
    if (n != sizeof(seq) || nfds != MAX_FDS_PER_SPAWN) {
        result = -EINVAL;
    } else {
        struct clone_args args;
        memset(&args, 0, sizeof(args));
        args.flags = CLONE_PARENT | CLONE_PIDFD;
        args.pidfd = (uint64_t)(uintptr_t)&pidfd;
        pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof(args));
        if (pid == 0) {
            for (int i = 0; i < nconns; i++)
                close(conns[i]);
            for (int fd = 0; fd < 3; fd++)
                if (dup2(fds[1 + fd], fd) < 0)
                    _exit(127);
            for (int i = 1; i < nfds; i++)
                if (fds[i] > 2)
                    close(fds[i]);
            launch(fds[0]);
            _exit(1);
        }
        result = pid < 0 ? -errno : pid;
        if (pid < 0)
            pidfd = -1; /* a failed clone3 may have written one it then closed (a pids
                         * limit is checked after the pidfd is made) */
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    unsigned char reply[8];
    put_u32(reply, seq);
    put_u32(reply + 4, (uint32_t)result);
    struct iovec out = {reply, sizeof(reply)};
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &out;
    msg.msg_iovlen = 1;
    if (pidfd >= 0) {
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &pidfd, sizeof(int));
    }
    int rc = 0;
    while (sendmsg(conn, &msg, MSG_NOSIGNAL) < 0) {
        if (errno != EINTR) {
            rc = -1; /* the asker is gone: its launcher has lost its parent side too */
            break;
        }
    }
    if (pidfd >= 0)
        close(pidfd);
    return rc;
}

/* Serves the keeper's connection (`ctl`) and those it adds (a daemon's, so that its spawns
 * do not pass through the keeper's loop).  It holds no state: when the keeper hangs up, it
 * exits; a daemon that hangs up is forgotten. */
static int spawner(int ctl)
{
    int conns[SPAWNER_CONNECTIONS] = {ctl};
    int nconns = 1;
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        struct pollfd pfds[SPAWNER_CONNECTIONS];
        for (int i = 0; i < nconns; i++) {
            pfds[i].fd = conns[i];
            pfds[i].events = POLLIN;
            pfds[i].revents = 0;
        }
        int n = poll(pfds, (nfds_t)nconns, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        for (int i = nconns - 1; i >= 0; i--) {
            if (!pfds[i].revents)
                continue;
            int added = -1;
            if (spawn_one(conns[i], conns, nconns, &added) < 0) {
                if (i == 0)
                    return 0; /* the keeper hung up */
                close(conns[i]);
                conns[i] = conns[--nconns];
                continue;
            }
            if (added >= 0) {
                if (nconns < SPAWNER_CONNECTIONS)
                    conns[nconns++] = added;
                else
                    close(added);
            }
        }
    }
}

/* The op table, for the parent's test that its encoder agrees: "NAME ARGS" per line. */
static void print_ops(void)
{
    for (int i = 0; i < OP_COUNT; i++)
        printf("%s %s\n", op_names[i], op_args[i]);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "launch") == 0)
        return launch(atoi(argv[2])) < 0 ? 1 : 0;
    if (argc == 3 && strcmp(argv[1], "spawner") == 0)
        return spawner(atoi(argv[2]));
    if (argc == 2 && strcmp(argv[1], "ops") == 0) {
        print_ops();
        return 0;
    }
    fprintf(stderr, "usage: corral-exec launch FD | spawner FD | ops\n"
                    "(run by corral: the executor of container plans)\n");
    return 2;
}
