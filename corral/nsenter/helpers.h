/* The parent's own C helpers (helpers.c), read by helpers.c and by build.py (cffi's cdef).
 * Declarations only: build.py drops the preprocessor lines and cffi parses the rest.  The
 * container's side is executor.c, a program of its own. */
#include <stdint.h>
#include <sys/types.h>

int corral_ns_type(int fd);
int corral_set_mempolicy(int mode, const unsigned long *nodemask, unsigned long maxnode);
int corral_spawn_hook(const char *path, char *const argv[], char *const envp[], int stdin_fd,
                      int out_fd, const char *cwd, int *pid);
