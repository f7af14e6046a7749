"""corral's networks: bridge, veth pairs, leased addresses, published ports, names.

Imported by the supervisor only (it loads pyroute2), never on the command line's path.

- ``BridgeNetwork`` (``network.py``): a bridge with its subnet(s); ``attach`` /
  ``detach`` / ``reclaim`` a container by its network namespace; ``remove`` the network.
- ``Leases`` (``leases.py``): the addresses leased in the network's state directory.
- ``PortTable`` (``nft.py``): corral's nftables table (published ports, masquerading).
- ``write_names`` (``names.py``): /etc/hosts and /etc/resolv.conf for a job.

docs/networks.md describes how it works and what is guaranteed to be cleaned up.
"""

from corral.net.addresses import PortMapping, parse_ports, parse_subnet
from corral.net.errors import NetworkError
from corral.net.leases import Lease, Leases
from corral.net.names import hosts_content, resolv_content, write_names
from corral.net.network import Attachment, BridgeNetwork, veth_name

__all__ = [
    "Attachment", "BridgeNetwork", "Lease", "Leases", "NetworkError", "PortMapping",
    "hosts_content", "parse_ports", "parse_subnet", "resolv_content", "veth_name",
    "write_names",
]
