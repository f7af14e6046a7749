/* The interface of nsenter.c, read by nsenter.c and by build.py (cffi's cdef). Declarations
 * only: build.py drops the preprocessor lines and cffi parses the rest. */
#include <stdint.h>
#include <sys/types.h>

struct nsenter_config {
    int sync_fd;               /* socket to the parent: frames as in protocol.py */
    int unshare_flags;         /* CLONE_NEW* to create, the user namespace excluded */
    int new_user;              /* create a user namespace; the parent writes its id maps */
    int in_user_ns;            /* a user namespace, new or joined: init becomes its root */
    int njoin;                 /* namespaces to join by path */
    const char *const *join_paths;
    const int *join_types;     /* CLONE_NEW* of each path */
    const char *time_offsets;  /* written to /proc/self/timens_offsets after unshare(TIME),
                                  before the clone (lines "monotonic S NS"), or NULL */
};

struct corral_hook {
    const char *path;
    char *const *argv;
    char *const *envp;
    int timeout;               /* seconds; 0: none */
};

struct finalize_config {
    int sync_fd;
    uint32_t uid, gid;
    int set_groups;
    int ngroups;
    const gid_t *groups;
    int unshare_cgroupns;
    const char *session_keyring; /* join a new session keyring of this name, or NULL */
    uint64_t cap_bounding, cap_effective, cap_permitted, cap_inheritable, cap_ambient;
    int no_new_privs;
    int first_cloexec_fd;      /* 3 + preserved fds: every fd from here is closed on exec */
    int fifo_fd;               /* O_PATH descriptor of the exec fifo, or -1 */
    const char *path;
    char *const *argv;
    char *const *envp;
    int nstart_hooks;          /* startContainer hooks, run after the fifo opened */
    const struct corral_hook *start_hooks;
    int hook_state_fd;         /* memfd holding the state JSON: each hook's stdin, or -1 */
    const void *seccomp_filter; /* struct sock_filter[seccomp_len], or NULL */
    int seccomp_len;
    unsigned int seccomp_flags; /* SECCOMP_FILTER_FLAG_*: 0 uses prctl(PR_SET_SECCOMP) */
    int seccomp_sysadmin;      /* CAP_SYS_ADMIN kept in E/P only to load the filter (no
                                  no_new_privs): dropped right after it */
    int seccomp_listener_fd;   /* SCMP_ACT_NOTIFY: socket connected to the agent at
                                  linux.seccomp.listenerPath, or -1 */
    const char *seccomp_listener_state; /* containerProcessState JSON sent with the fd */
};

int corral_nsenter(const struct nsenter_config *cfg);
int corral_finalize(const struct finalize_config *cfg);
int corral_pivot_root(const char *new_root, const char *put_old);
int corral_loopback_up(void);
int corral_ns_type(int fd);
int corral_sched_setattr(uint32_t policy, uint64_t flags, int32_t nice, uint32_t priority,
                         uint64_t runtime, uint64_t deadline, uint64_t period);
int corral_ioprio_set(int ioprio);
int corral_idmapped_tree(const char *source, int clone_recursive, int idmap_recursive,
                         const char *uid_map, const char *gid_map, const char *userns_path,
                         char *what, size_t what_len);
int corral_mount_setattr_recursive(int fd, uint64_t attr_set, uint64_t attr_clr);
int corral_set_mempolicy(int mode, const unsigned long *nodemask, unsigned long maxnode);
int corral_move_mount(int from_fd, int to_fd);
int corral_spawn_hook(const char *path, char *const argv[], char *const envp[], int stdin_fd,
                      int out_fd, const char *cwd, int *pid);
