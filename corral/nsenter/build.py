"""cffi build script (API mode): compiled at install time by setup.py's ``cffi_modules``."""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    typedef unsigned int gid_t;
    struct corral_hook {
        const char *path;
        char *const *argv;
        char *const *envp;
        int timeout;
    };
    struct nsenter_config {
        int sync_fd;
        int unshare_flags;
        int new_user;
        int in_user_ns;
        int njoin;
        const char *const *join_paths;
        const int *join_types;
        const char *time_offsets;
    };
    struct finalize_config {
        int sync_fd;
        uint32_t uid, gid;
        int set_groups;
        int ngroups;
        const gid_t *groups;
        int unshare_cgroupns;
        const char *session_keyring;
        uint64_t cap_bounding, cap_effective, cap_permitted, cap_inheritable, cap_ambient;
        int no_new_privs;
        int first_cloexec_fd;
        int fifo_fd;
        const char *path;
        char *const *argv;
        char *const *envp;
        int nstart_hooks;
        const struct corral_hook *start_hooks;
        int hook_state_fd;
        const void *seccomp_filter;
        int seccomp_len;
        unsigned int seccomp_flags;
        int seccomp_sysadmin;
        int seccomp_listener_fd;
        const char *seccomp_listener_state;
    };
    int corral_nsenter(const struct nsenter_config *cfg);
    int corral_finalize(const struct finalize_config *cfg);
    int corral_pivot_root(const char *new_root, const char *put_old);
    int corral_loopback_up(void);
    int corral_ns_type(int fd);
    int corral_sched_setattr(uint32_t policy, uint64_t flags, int32_t nice, uint32_t priority,
                             uint64_t runtime, uint64_t deadline, uint64_t period);
    int corral_ioprio_set(int ioprio);
    int corral_idmapped_tree(const char *source, int recursive, const char *uid_map,
                             const char *gid_map, char *what, size_t what_len);
    int corral_move_mount(int from_fd, int to_fd);
    int personality(unsigned long persona);

    int mount(const char *source, const char *target, const char *fstype,
              unsigned long flags, const void *data);
    int umount2(const char *target, int flags);
    int sethostname(const char *name, size_t len);
    int setdomainname(const char *name, size_t len);
    int socketpair(int domain, int type, int protocol, int sv[2]);
    int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5);
    """
)
ffibuilder.set_source(
    "corral.nsenter._nsenter",
    '#include <sys/mount.h>\n#include <sys/personality.h>\n#include <sys/prctl.h>\n#include <sys/socket.h>\n'
    '#include <unistd.h>\n#include "nsenter.h"\n',
    sources=["corral/nsenter/nsenter.c"],
    include_dirs=["corral/nsenter"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
