"""A container's systemd scope: the conversations (``systemd_bus``) that start it with the
init's pid and the container's resources, change them (``update``) and stop it, for a
``Cgroup`` whose ``unit`` is set.  Run them with ``systemd_blocking.run`` or
``systemd_trio.run``."""

from __future__ import annotations

from . import systemd_bus as bus
from . import systemd_units as units
from .hierarchy import UNIFIED

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..oci.config import DeviceRule, Resources
    from .hierarchy import Placement


def _unified(cgroup: Placement) -> bool:
    """v2 properties when the controllers are on cgroup2 (pure v2); v1 ones on v1 and
    hybrid hosts, where systemd drives the v1 controllers."""
    return cgroup.mode == "v2" and UNIFIED in cgroup.paths


def start(cgroup: Placement, pid: int, resources: Resources,
          device_rules: list[DeviceRule], description: str,
          annotations: dict[str, str] | None = None):
    """``annotations``: the config's, whose ``org.systemd.property.*`` come last (runc's
    order: they may override what corral sets)."""
    unit = cgroup.unit
    extra = units.annotation_properties(annotations or {})
    path = units.UnitPath(unit["slice"], "", "")
    unified = _unified(cgroup)

    def properties_for(version: int) -> list:
        return (units.unit_properties(path, pid, description)
                + units.accounting_properties(unified)
                + units.device_properties(device_rules)
                + units.resource_properties(resources, unified, version) + extra)

    return bus.start_scope(unit["name"], unit["cgroup"], properties_for)


def update(cgroup: Placement, resources: Resources):
    unified = _unified(cgroup)
    return bus.set_properties(cgroup.unit["name"],
                              lambda version: units.resource_properties(resources, unified,
                                                                        version))


def stop(cgroup: Placement):
    return bus.stop_scope(cgroup.unit["name"])
