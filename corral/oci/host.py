"""What this host supports of the spec's optional, host-dependent parts, probed (never
assumed): the LSMs (AppArmor, SELinux), Intel RDT (resctrl), idmapped mounts.

``check_host(config)`` refuses, naming the field and what the host lacks, a config that asks
for something the host cannot give; ``corral features`` reports the same probes.
"""

from __future__ import annotations

import os


def apparmor_enabled() -> bool:
    """AppArmor is loaded and enabled (runc's test: the module parameter)."""
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def selinux_enabled() -> bool:
    """SELinux is enabled: selinuxfs is mounted (it is whenever a policy is loaded)."""
    return os.path.exists("/sys/fs/selinux/enforce")


def resctrl_mounted() -> bool:
    """Intel RDT / AMD QoS through the resctrl filesystem, mounted at /sys/fs/resctrl."""
    return os.path.exists("/sys/fs/resctrl/info")


def kernel_has_filesystem(name: str) -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == name for line in f if line.strip())
    except OSError:
        return False


def check_host(config) -> None:
    """Raises ConfigError for the first field this host cannot honour."""
    from corral.errors import ConfigError, NotSupportedError

    proc, linux = config.process, config.linux
    if proc.apparmor_profile and not apparmor_enabled():
        raise ConfigError("process.apparmorProfile", "AppArmor is not enabled on this host "
                                                     "(/sys/module/apparmor/parameters/enabled)")
    if proc.selinux_label and not selinux_enabled():
        raise ConfigError("process.selinuxLabel", "SELinux is not enabled on this host "
                                                  "(no selinuxfs at /sys/fs/selinux)")
    # linux.mountLabel without SELinux is ignored, as crun and runc ignore it (their label
    # library formats no context= option then): engines set it whatever the host
    if linux.intel_rdt:
        if not resctrl_mounted():
            lack = ("is not mounted at /sys/fs/resctrl" if kernel_has_filesystem("resctrl")
                    else "is not in this kernel")
            raise ConfigError("linux.intelRdt", f"Intel RDT needs the resctrl filesystem, "
                                                f"which {lack}")
        raise NotSupportedError("linux.intelRdt")
