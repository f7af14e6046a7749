# setuptools needs setup.py for cffi_modules: the C helpers are compiled at install time, and
# so is corral-exec, the executor of container plans (a program of its own, beside them).
import os
import subprocess
import sysconfig

from setuptools import setup
from setuptools.command.build_ext import build_ext

EXECUTOR_SOURCE = "corral/nsenter/executor.c"
EXECUTOR_FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]


class BuildWithExecutor(build_ext):
    """build_ext, then corral-exec next to the cffi module (in the source tree for an
    editable install, as the module is)."""

    def run(self):
        super().run()
        target = os.path.join(os.path.dirname(self.get_ext_fullpath("corral.nsenter._nsenter")),
                              "corral-exec")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
        base = [*cc, *EXECUTOR_FLAGS, "-o", target, EXECUTOR_SOURCE]
        # Static where the C library allows it: exec of a static program skips the dynamic
        # loader, and the command line execs corral-exec for every container it creates.
        if subprocess.call([*base, "-static"]) != 0:
            subprocess.check_call(base)

    def get_outputs(self):
        outputs = super().get_outputs()
        return outputs + [os.path.join(os.path.dirname(self.get_ext_fullpath(
            "corral.nsenter._nsenter")), "corral-exec")]


# The `corral` command is scripts/corral (sh starting Python with -I -S), not a console
# script: see that file for why.
setup(cffi_modules=["corral/nsenter/build.py:ffibuilder"],
      cmdclass={"build_ext": BuildWithExecutor},
      scripts=["scripts/corral"])
