"""cffi build script (API mode): compiled at install time by setup.py's ``cffi_modules``.
The executor of plans (executor.c) is a program of its own, built by setup.py beside it."""

import os

from cffi import FFI

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers.h")

ffibuilder = FFI()
# helpers.h is the one description of the entry points, for the C file and for cffi alike;
# cffi's parser takes it once its preprocessor lines are gone.
with open(HEADER) as f:
    header = "".join(line for line in f if not line.startswith("#"))
ffibuilder.cdef(header + """
    int socketpair(int domain, int type, int protocol, int sv[2]);
    int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5);
    int umount2(const char *target, int flags);
    #define MNT_DETACH ...
    """)
ffibuilder.set_source(
    "corral.nsenter._nsenter",
    '#include <sys/mount.h>\n#include <sys/prctl.h>\n#include <sys/socket.h>\n'
    '#include "helpers.h"\n',
    sources=["corral/nsenter/helpers.c"],
    include_dirs=["corral/nsenter"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
