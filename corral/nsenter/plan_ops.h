/* The steps of a plan: one line each, OP(NAME, ARGS).  ARGS spells each argument's kind:
 *   i  a 64-bit integer      s  a string (NUL-free)      b  bytes      l  a list of strings
 * corral/plan/format.py encodes the same table (tests/test_plan_steps.py compares the two);
 * executor.c has one handler per line, in the order of this file. */
#define CORRAL_PLAN_OPS(OP) \
    /* the launcher: the runtime's namespaces and credentials */ \
    OP(OPEN, "isiis")          /* reg, path, flags, mode, what */ \
    OP(CONNECT, "iss")         /* reg, unix socket path, what */ \
    OP(TREE, "isis")           /* reg, path, AT_RECURSIVE or 0, what: a private detached copy */ \
    OP(IDMAP_TREE, "isiissss") /* reg, source, recursive, idmap recursive, uid_map, gid_map, userns path, what */ \
    OP(WRITE, "sibs")          /* path, extra open flags, data, what */ \
    OP(WRITE_FD, "ibs")        /* reg, data, what: written, then closed */ \
    OP(AFFINITY, "bs")         /* cpu mask, what */ \
    OP(OPEN_NS, "isis")        /* reg, path, CLONE_NEW* type, what */ \
    OP(SETNS, "iis")           /* reg, CLONE_NEW* type, what */ \
    OP(UNSHARE, "is")          /* CLONE_NEW* flags, what */ \
    OP(CLONE_INIT, "iib")      /* CLONE_NEW* flags, reg for the join gate, cgroup.procs regs (u32 each):\
                                  the launcher reports the Pid, joins the init to its cgroup, exits */ \
    /* the init: sync points, identity */ \
    OP(AWAIT, "iis")           /* message type, first blob register, what */ \
    OP(JOINED, "i")            /* gate reg: wait until the launcher has joined the init to its cgroup */ \
    OP(REPORT, "i")            /* message type */ \
    OP(SETSID, "") \
    OP(BECOME_ROOT, "")        /* uid and gid 0 of its user namespace */ \
    OP(DUMPABLE, "i") \
    OP(LOOPBACK_UP, "") \
    OP(SETHOSTNAME, "s") \
    OP(SETDOMAINNAME, "s") \
    /* the init: the container's filesystem */ \
    OP(MOUNT, "ssssiis")       /* source, target, fstype, data, MS_* flags, target reg or -1, what */ \
    OP(PARENT_PRIVATE, "ss")   /* path, what: its mount (or the nearest above) made private */ \
    OP(ROOT_OPEN, "iss")       /* reg, rootfs path, what */ \
    OP(NOT_SYMLINK, "iss")     /* root reg, name, what */ \
    OP(RESOLVE, "iisiiisls")   /* reg, root reg, path, create, like reg, proc check, destination, allowed under /proc, what */ \
    OP(PROCFS, "is")           /* reg, what: refused unless the descriptor is on a procfs */ \
    OP(FSMOUNT, "issliis")     /* reg, fstype, source, options, MOUNT_ATTR_*, fallback reg or -1, what */ \
    OP(SETATTR, "iiiiiss")     /* reg or -1, set, clear, propagation, recursive, path, what */ \
    OP(MOVE, "iis")            /* from reg, to reg, what */ \
    OP(CLOSE, "i")             /* reg */ \
    OP(OPEN_DIR, "iis")        /* reg, reg of an O_PATH directory, what */ \
    OP(COPY_UP, "iis")         /* directory reg, mount reg, what */ \
    OP(CHMOD_LIKE, "iis")      /* mount reg, like reg, what */ \
    OP(SYMLINK, "isssis")      /* root reg, directory, name, target, replace, what */ \
    OP(MKNOD, "isiiiiiis")     /* root reg, path, mode, major, minor, uid, gid, bind, what */ \
    OP(HOOK, "sislliis")       /* kind, index, path, argv, env, timeout s, state blob, cwd or "" */ \
    OP(PIVOT, "ss")            /* rootfs, what */ \
    OP(MOVE_ROOT, "sls")       /* rootfs, host mounts to detach first, what */ \
    OP(CHROOT, "ss")           /* rootfs, what: no mount namespace of its own, no pivot */ \
    OP(CHDIR, "sis")           /* path, mkdir, what */ \
    OP(MASK, "ss")             /* path, what */ \
    OP(READONLY, "ss")         /* path, what */ \
    /* the init: the process */ \
    OP(RLIMIT, "iiis")         /* resource, soft, hard, what */ \
    OP(FIND_EXEC, "ss")        /* args[0], PATH */ \
    OP(TERMINAL, "iiiis")      /* console reg, uid, rows, cols, what */ \
    OP(UMASK, "i") \
    OP(SCHED, "iiiiiiis")      /* policy, flags, nice, priority, runtime, deadline, period, what */ \
    OP(IOPRIO, "is") \
    OP(MEMPOLICY, "ibis")      /* mode, node mask, maxnode, what */ \
    OP(PERSONALITY, "is") \
    OP(KEYRING, "s") \
    OP(BOUNDING, "i")          /* capabilities kept in the bounding set */ \
    OP(USER, "iiib")           /* uid, gid, set groups, groups (u32 each) */ \
    OP(CAPS, "iiiii")          /* effective, permitted, inheritable, ambient, CAP_SYS_ADMIN kept for seccomp */ \
    OP(NNP, "") \
    OP(CHECK_EXEC, "") \
    OP(CLOEXEC_FROM, "i")      /* first descriptor closed on exec */ \
    OP(FIFO, "i")              /* exec fifo reg, or -1: wait for the parent to hang up */ \
    OP(SIGNALS, "") \
    OP(SECCOMP, "biiii")       /* BPF program, SECCOMP_FILTER_FLAG_*, drop CAP_SYS_ADMIN after, listener reg, state blob */ \
    OP(EXEC, "ll")             /* argv, env */

/* Frames on the sync socket: u32 length (of what follows), u16 type, u16 zero, then the
 * arguments, encoded as a step's are.  Parent to child: */
#define CORRAL_MSG_PLAN 1          /* u32 magic, u32 version, then steps: u16 op, u16 0, u32 size, args */
#define CORRAL_MSG_USERMAP_DONE 2
#define CORRAL_MSG_HOOKS_DONE 3    /* b: the state for createContainer hooks */
#define CORRAL_MSG_RUN 4           /* b: the state for startContainer hooks, b: for the seccomp agent */
/* Child to parent: */
#define CORRAL_MSG_PID 16          /* i: the init's host pid */
#define CORRAL_MSG_HOOKS_DUE 17
#define CORRAL_MSG_READY 18
#define CORRAL_MSG_WAITING 19
#define CORRAL_MSG_ERROR 20        /* i: errno, s: stage, s: message */

#define CORRAL_PLAN_MAGIC 0x314c5043u /* "CPL1" */
#define CORRAL_PLAN_VERSION 1
#define CORRAL_PLAN_REGS 256
#define CORRAL_PLAN_BLOBS 8
