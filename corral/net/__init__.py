"""corral's networks: bridge, veth pairs, leased addresses, published ports, names.

Used by the supervisor only, never on the command line's path.  The names below are loaded
on first use (PEP 562): ``corral.jobs.job`` parses published ports with ``corral.net.addresses``
and writes names with ``corral.net.names`` without loading pyroute2, which ``network.py``
needs.

- ``BridgeNetwork`` (``network.py``): a bridge with its subnet(s); ``attach`` /
  ``detach`` / ``reclaim`` a container by its network namespace; ``remove`` the network.
- ``Networks`` (``registry.py``): an engine's networks by name, opened on first use.
- ``Leases`` (``leases.py``): the addresses leased in the network's state directory.
- ``PortTable`` (``nft.py``): corral's nftables table (published ports, masquerading).
- ``write_names`` (``names.py``): /etc/hosts and /etc/resolv.conf for a job.

docs/networks.md describes how it works and what is guaranteed to be cleaned up.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "PortMapping": "addresses", "parse_ports": "addresses", "parse_subnet": "addresses",
    "NetworkError": "errors",
    "Lease": "leases", "Leases": "leases",
    "hosts_content": "names", "resolv_content": "names", "write_names": "names",
    "Attachment": "network", "BridgeNetwork": "network", "veth_name": "network",
    "Networks": "registry", "NetworkOptions": "registry",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'corral.net' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"corral.net.{module}"), name)
    globals()[name] = value
    return value
