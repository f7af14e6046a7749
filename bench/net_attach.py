"""What a bridge network adds to a container's start-up: ``BridgeNetwork.attach`` (veth pair
made with its peer directly in the container's namespace, loopback, eth0, address, default
route), measured with the network kept open, as the supervisor keeps it.

The "host" is a private network namespace made for the run, the "containers" fresh ones, so
the machine's own network is never touched.  Making a container's namespace is part of a
`none` container too and is not counted; neither is detach.  The issue's budget: a bridge
container may start at most 3 ms later than a `none` one (median).

    .venv/bin/python bench/net_attach.py [--rounds N] [--ports]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from corral.net import BridgeNetwork  # noqa: E402
from corral.net import netns as ns  # noqa: E402


def new_netns() -> int:
    """A fresh network namespace, held by the returned descriptor (no process, no mount)."""
    out: dict = {}

    def make() -> None:
        ns.unshare(ns.CLONE_NEWNET)
        out["fd"] = ns.current_netns()

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    return out["fd"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--ports", action="store_true", help="also publish a port each time")
    args = parser.parse_args()

    host = new_netns()
    times = []
    # The leases live where the supervisor keeps them: /run (tmpfs), not a disk's /tmp.
    with tempfile.TemporaryDirectory(dir="/run" if os.access("/run", os.W_OK) else None) as state:
        net = BridgeNetwork("bench", state, "10.88.0.0/16", host_netns=host)
        try:
            net.ensure()
            for i in range(args.rounds + 5):
                container = new_netns()
                ports = [f"{10000 + i}:80/tcp"] if args.ports else []
                start = time.perf_counter()
                net.attach(f"c{i}", container, ports=ports)
                elapsed = time.perf_counter() - start
                if i >= 5:  # the first rounds warm up imports, caches and nftables
                    times.append(elapsed)
                net.detach(f"c{i}")
                os.close(container)
            net.remove(force=True)
        finally:
            net.close()
            os.close(host)
    times.sort()
    ms = [t * 1000 for t in times]
    print(f"attach{' + 1 published port' if args.ports else ''}: "
          f"median {statistics.median(ms):.2f} ms, p90 {ms[int(len(ms) * 0.9)]:.2f} ms, "
          f"min {ms[0]:.2f} ms ({len(ms)} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
