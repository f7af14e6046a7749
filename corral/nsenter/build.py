"""cffi build script (API mode): compiled at install time by setup.py's ``cffi_modules``."""

import os

from cffi import FFI

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nsenter.h")

ffibuilder = FFI()
# nsenter.h is the one description of the structs and entry points, for the C file and for
# cffi alike; cffi's parser takes it once its preprocessor lines are gone.
with open(HEADER) as f:
    header = "".join(line for line in f if not line.startswith("#"))
ffibuilder.cdef(
    "typedef unsigned int gid_t;\n" + header + """
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
