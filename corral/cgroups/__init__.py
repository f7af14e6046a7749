"""cgroups: one interface over whatever the host mounts (v1, hybrid v1 + unified, pure v2).

``detect()`` reads the mounts, ``Cgroup.for_container()`` places a container in every
hierarchy; the state file keeps ``Cgroup.to_json()`` so a later ``delete`` removes exactly
what ``create`` made.  With ``systemd=True`` (``--systemd-cgroup``) the cgroup is a systemd
transient scope's: ``systemd_units`` (decisions), ``systemd_bus`` (D-Bus messages and
conversations), ``systemd_scope`` (a container's), ``systemd_blocking`` / ``systemd_trio``
(the two front ends).
"""

from __future__ import annotations

from .group import Cgroup, device_rule_line
from .hierarchy import UNIFIED, Layout, detect, own_cgroups, parse_mountinfo, resolve

__all__ = ["UNIFIED", "Cgroup", "Layout", "detect", "device_rule_line", "own_cgroups",
           "parse_mountinfo", "resolve"]
