"""An engine's bridge networks by name: their options, opened on first use, cleaned up.

The engine (``corral/supervisor/engine.py``) keeps one ``Networks`` for its state root.
Its networks' state lives in ``<root>/.supervisor/networks/<name>/``: the leases
(``leases.py``), ``network.json`` (the options the network was made with, so that a
restarted daemon can free the leases of dead containers even if it was started with other
options), ``names/<id>``, a link to the names directory of each job that asked for its
peers' names (``peer_names``), whose ``hosts`` is rewritten as peers come and go, and
``pending/<id>`` from the attach until the engine ``confirm``s the creation: a daemon killed
in between leaves a container whose init is dead but which still has an id, and the marker
is how ``reclaim`` tells it from a container that ran and stopped.

Blocking and thread-safe, like ``BridgeNetwork``; the engine calls it through
``trio.to_thread`` except for the attach step, which the creation driver runs when the
container's namespaces exist (about 2-3 ms).  Nothing here loads pyroute2 until a network
is opened.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Mapping

from corral.errors import ConfigError
from corral.net.addresses import parse_subnet
from corral.net.errors import NetworkError
from corral.net.names import write_hosts

DEFAULT_NETWORK = "corral0"
# Not docker's 172.17.0.0/16 (and the 172.18-31 ranges of its user networks), not podman's
# 10.88.0.0/16 nor the 10.89.x.0/24 of its user networks.
DEFAULT_SUBNET = "10.91.0.0/16"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # the bridge's name by default
_KEYS = ("subnet", "subnet6", "nat", "mtu", "bridge")
RECORD = "network.json"
NAMES = "names"
PENDING = "pending"  # pending/<id>: attached, creation not finished (confirm)


@dataclass(frozen=True)
class NetworkOptions:
    """One network as configured: ``bridge`` defaults to the network's name."""

    name: str
    subnet: str
    subnet6: str | None = None
    nat: bool = False
    mtu: int | None = None
    bridge: str | None = None

    @property
    def bridge_name(self) -> str:
        return self.bridge or self.name

    def describe(self) -> str:
        extra = [f"subnet6 {self.subnet6}"] if self.subnet6 else []
        extra += ["nat"] if self.nat else []
        extra += [f"mtu {self.mtu}"] if self.mtu else []
        extra += [f"bridge {self.bridge}"] if self.bridge else []
        return ", ".join([f"subnet {self.subnet}", *extra])


def parse_options(networks: Mapping[str, Mapping] | None) -> dict[str, NetworkOptions]:
    """The engine's ``networks`` option (``{"corral0": {"subnet": "10.89.0.0/24", "nat":
    True}}``) checked, errors naming ``networks.NAME.KEY``.  ``corral0`` always exists
    (``DEFAULT_SUBNET`` unless given)."""
    if networks is None:
        networks = {}
    if not isinstance(networks, Mapping):
        raise ConfigError("networks", f"{networks!r} is not a table of networks")
    out = {DEFAULT_NETWORK: NetworkOptions(DEFAULT_NETWORK, DEFAULT_SUBNET)}
    for name, raw in networks.items():
        out[name] = _parse_one(name, raw)
    bridges: dict[str, str] = {}
    subnets: list[tuple[str, object]] = []
    for options in out.values():
        other = bridges.setdefault(options.bridge_name, options.name)
        if other != options.name:
            raise ConfigError(f"networks.{options.name}.bridge", f"bridge {options.bridge_name} "
                                                                 f"is network {other}'s too")
        for net in filter(None, (options.subnet, options.subnet6)):
            parsed = parse_subnet(net, 4 if net == options.subnet else 6)
            for other_name, other_net in subnets:
                if parsed.version == other_net.version and parsed.overlaps(other_net):
                    raise ConfigError(f"networks.{options.name}.subnet",
                                      f"{net} overlaps network {other_name}'s {other_net}")
            subnets.append((options.name, parsed))
    return out


def _parse_one(name: object, raw: object) -> NetworkOptions:
    where = f"networks.{name}"
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise ConfigError(where, f"{name!r} is not a network name (1-15 letters, digits, "
                                 "'_', '.', '-')")
    if isinstance(raw, str):
        raw = {"subnet": raw}
    if not isinstance(raw, Mapping):
        raise ConfigError(where, f"{raw!r} is not a table of options ({', '.join(_KEYS)})")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", f"unknown option (known: {', '.join(_KEYS)})")
    subnet = raw.get("subnet", DEFAULT_SUBNET if name == DEFAULT_NETWORK else None)
    if subnet is None:
        raise ConfigError(f"{where}.subnet", "is required (an IPv4 CIDR, e.g. 10.89.0.0/24)")
    values = {"subnet": _subnet(subnet, 4, f"{where}.subnet")}
    if raw.get("subnet6") is not None:
        values["subnet6"] = _subnet(raw["subnet6"], 6, f"{where}.subnet6")
    nat = raw.get("nat", False)
    if not isinstance(nat, bool):
        raise ConfigError(f"{where}.nat", f"{nat!r} is not true or false")
    mtu = raw.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool)
                            or not 68 <= mtu <= 65535):
        raise ConfigError(f"{where}.mtu", f"{mtu!r} is not an MTU (68-65535)")
    bridge = raw.get("bridge")
    if bridge is not None and (not isinstance(bridge, str) or not _NAME.match(bridge)):
        raise ConfigError(f"{where}.bridge", f"{bridge!r} is not an interface name (1-15 "
                                             "letters, digits, '_', '.', '-')")
    return NetworkOptions(name, nat=nat, mtu=mtu, bridge=bridge, **values)


def _subnet(value: object, version: int, field: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(field, f"{value!r} is not a network in CIDR form")
    try:
        return str(parse_subnet(value, version, field))
    except NetworkError as err:
        raise ConfigError(field, str(err).removeprefix(f"{field}: ")) from None


def parse_flag(text: str, flag: str = "--network") -> tuple[str, dict]:
    """``NAME=SUBNET[,nat][,subnet6=CIDR][,mtu=N][,bridge=IFNAME]`` (``corral supervise
    --network``) as ``(name, options)`` for ``parse_options``."""
    name, sep, rest = text.partition("=")
    parts = rest.split(",")
    if not sep or not name or not parts[0]:
        raise ConfigError(flag, f"{text!r} is not NAME=SUBNET[,nat][,subnet6=CIDR][,mtu=N]"
                                "[,bridge=IFNAME]")
    options: dict = {"subnet": parts[0]}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if part == "nat":
            options["nat"] = True
        elif sep and key in ("subnet6", "bridge"):
            options[key] = value
        elif sep and key == "mtu" and value.isdigit():
            options["mtu"] = int(value)
        else:
            raise ConfigError(flag, f"{text!r}: {part!r} is not nat, subnet6=CIDR, mtu=N or "
                                    "bridge=IFNAME")
    return name, options


class Networks:
    """The networks of one engine.  ``alive_ids()`` lists the containers of the state root
    (for reclaiming the leases of those that are gone when a network is first opened)."""

    def __init__(self, directory: str, options: dict[str, NetworkOptions],
                 alive_ids: Callable[[], Iterable[str]]) -> None:
        self.directory = directory
        self.options = options
        self._alive_ids = alive_ids
        self._open: dict = {}  # name -> BridgeNetwork
        self._ensured: set[str] = set()
        self._lock = threading.Lock()
        self._names_lock = threading.Lock()

    # -- opening ------------------------------------------------------------------------

    def open(self, name: str, field: str = "network"):
        """The network ``name`` ready for containers: its bridge (and NAT) made or checked.
        Errors name ``field`` (the job's network) or the network."""
        options = self.options.get(name)
        if options is None:
            raise ConfigError(field, f"no network named {name!r} (this engine has "
                                     f"{', '.join(sorted(self.options))}; add one with "
                                     f"--network {name}=SUBNET or networks=)")
        with self._lock:
            net = self._get(name, options)
            if name not in self._ensured:
                try:
                    net.ensure()
                except NetworkError as err:
                    hint = (f" (give it another subnet: --network {name}=SUBNET, or the "
                            "engine's networks= option)" if "overlaps" in str(err) else "")
                    raise NetworkError(f"network {name}: {err}{hint}") from None
                self._ensured.add(name)
                self._write_record(options)
            return net

    def ready(self, name: str) -> bool:
        """``open`` already made or checked the network: no need to call it again."""
        return name in self._ensured

    def _get(self, name: str, options: NetworkOptions | None):
        """The BridgeNetwork object (no bridge made); called with ``_lock`` held."""
        net = self._open.get(name)
        if net is not None:
            return net
        from corral.net.network import BridgeNetwork

        recorded = self._read_record(name)
        use = options or recorded
        if use is None:
            raise NetworkError(f"network {name}: not configured and no record of it in "
                               f"{self._dir(name)}")
        if options is not None and recorded is not None and recorded != options:
            from corral.net.leases import Leases

            held = Leases(self._dir(name), parse_subnet(recorded.subnet, 4),
                          parse_subnet(recorded.subnet6, 6) if recorded.subnet6 else None).all()
            if held:
                raise NetworkError(
                    f"network {name}: configured with {options.describe()}, but "
                    f"{len(held)} container(s) ({', '.join(l.container_id for l in held[:3])}) "
                    f"hold addresses from its earlier {recorded.describe()}: delete them "
                    "first, or keep the earlier options")
        net = BridgeNetwork(name, self._dir(name), use.subnet, use.subnet6,
                            bridge=use.bridge_name, nat=use.nat, mtu=use.mtu)
        try:
            net.reclaim(self._alive_ids())
        except BaseException:
            net.close()
            raise
        self._open[name] = net
        return net

    def _dir(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _read_record(self, name: str) -> NetworkOptions | None:
        try:
            with open(os.path.join(self._dir(name), RECORD)) as f:
                return NetworkOptions(**json.load(f))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as err:
            raise NetworkError(f"network {name}: unreadable {RECORD}: {err}") from None

    def _write_record(self, options: NetworkOptions) -> None:
        directory = self._dir(options.name)
        os.makedirs(directory, 0o700, exist_ok=True)
        tmp = os.path.join(directory, RECORD + ".tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(options), f)
        os.replace(tmp, os.path.join(directory, RECORD))

    # -- containers ---------------------------------------------------------------------

    def attach_step(self, name: str, cid: str, names_dir: str, hostname: str,
                    ports: tuple[str, ...] = (), peer_names: bool = False
                    ) -> tuple[Callable[[int], None], Callable[[], None], Callable[[], None]]:
        """The creation's host-side step (``PreparedContainer.add_host_step``: begin, undo,
        finish): attach the init's network namespace (``/proc/<pid>/ns/net``, once it
        exists) to the network ``name`` (``open`` it first) on the network's thread while
        the init builds its rootfs; finish: wait for it, write the job's hosts (its
        resolv.conf, written with its config by ``Job.config``, does not change) and refresh
        its peers'."""
        net = self._open[name]
        pending = os.path.join(self._dir(name), PENDING, cid)
        running: list = []  # the attach's Future, once begun

        def begin(pid: int) -> None:
            os.makedirs(os.path.dirname(pending), exist_ok=True)
            open(pending, "w").close()  # before the lease: a crash leaves it beside the lease
            try:
                running.append(net.attach_start(cid, f"/proc/{pid}/ns/net", ports=ports,
                                                hostname=hostname))
            except BaseException as err:
                _unlink(pending)
                raise self._named(name, err) from None

        def finish() -> None:
            try:
                attachment = running[0].result()
            except BaseException as err:  # the attach undid itself
                _unlink(pending)
                raise self._named(name, err) from None
            try:
                with self._names_lock:
                    addresses = [a.ip for a in (attachment.address, attachment.address6) if a]
                    write_hosts(names_dir, hostname, addresses,
                                peers=net.peers() if peer_names else None)
                    if peer_names:
                        link = os.path.join(self._dir(name), NAMES, cid)
                        os.makedirs(os.path.dirname(link), exist_ok=True)
                        os.symlink(names_dir, link)
                    self._refresh_peers(name, net, cid)
            except BaseException:
                self.detach(name, cid, grace=0)
                raise

        def undo() -> None:
            if running:
                try:
                    running[0].result()  # detach finds the lease only once it is taken
                except BaseException:  # noqa: BLE001 - it undid itself
                    pass
            self.detach(name, cid, grace=0)  # a failed creation: its namespace may live on

        return begin, undo, finish

    @staticmethod
    def _named(name: str, err: BaseException) -> BaseException:
        if isinstance(err, NetworkError) and not str(err).startswith(f"network {name}"):
            return NetworkError(f"network {name}: {err}")
        return err

    def confirm(self, name: str, cid: str) -> None:
        """The container's creation finished: its attachment is no longer pending."""
        _unlink(os.path.join(self._dir(name), PENDING, cid))

    def detach(self, name: str, cid: str, grace: float | None = None) -> bool:
        """Undo the container's attachment (False when it had none); its peers' hosts
        files no longer list it.  ``grace``: see ``BridgeNetwork.detach`` (0: delete the
        veth at once)."""
        with self._lock:
            net = self._get(name, self.options.get(name))
        detached = net.detach(cid) if grace is None else net.detach(cid, grace)
        _unlink(os.path.join(self._dir(name), PENDING, cid))
        with self._names_lock:
            _unlink(os.path.join(self._dir(name), NAMES, cid))
            self._refresh_peers(name, net, cid)
        return detached

    def _refresh_peers(self, name: str, net, changed: str) -> None:
        """Rewrite (in place: they are bind-mounted) the hosts files of the jobs that asked
        for their peers' names, but ``changed``'s own; with ``_names_lock`` held."""
        directory = os.path.join(self._dir(name), NAMES)
        entries = [e for e in _listdir(directory) if e != changed]
        if not entries:
            return
        peers = net.peers()
        for cid in entries:
            lease = net.leases.get(cid)
            try:
                names_dir = os.readlink(os.path.join(directory, cid))
            except OSError:
                continue
            if lease is None or not os.path.isdir(names_dir):
                continue
            write_hosts(names_dir, lease.hostname,
                        [a for a in (lease.address, lease.address6) if a], peers=peers)

    def reclaim(self, alive_ids: Iterable[str], stopped_ids: Iterable[str] = ()
                ) -> dict[str, list[str]]:
        """For every network with state on disk: detach the containers not in
        ``alive_ids``, and those in ``stopped_ids`` (their init is dead) whose creation
        never finished (what a daemon killed mid-create leaves).  {network: [ids freed]}."""
        alive = set(alive_ids)
        stopped = set(stopped_ids)
        freed: dict[str, list[str]] = {}
        for name in sorted(_listdir(self.directory)):
            if not os.path.exists(os.path.join(self._dir(name), RECORD)):
                continue
            with self._lock:
                net = self._get(name, self.options.get(name))
            pending_dir = os.path.join(self._dir(name), PENDING)
            unfinished = {cid for cid in _listdir(pending_dir) if cid in stopped}
            ids = net.reclaim(alive - unfinished)
            for cid in _listdir(pending_dir):
                if cid not in alive or cid in unfinished:
                    _unlink(os.path.join(pending_dir, cid))
            with self._names_lock:
                for cid in _listdir(os.path.join(self._dir(name), NAMES)):
                    if cid not in alive or cid in unfinished:
                        _unlink(os.path.join(self._dir(name), NAMES, cid))
                if ids:
                    self._refresh_peers(name, net, "")
            if ids:
                freed[name] = ids
        return freed

    # -- closing ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every network's worker thread.  A network no container is attached to is
        removed first (bridge, NAT entries, its state directory): an engine leaves the
        host as it found it once its containers are gone; the next creation makes it
        again (about 10 ms).  Errors are reported on stderr: closing goes on."""
        with self._lock:
            networks, self._open = dict(self._open), {}
            self._ensured.clear()
        for name, net in networks.items():
            try:
                if not net.leases.all():
                    net.remove()
                    shutil.rmtree(self._dir(name), ignore_errors=True)
            except Exception as err:  # noqa: BLE001
                sys.stderr.write(f"corral: network {name}: cannot remove it: {err}\n")
            finally:
                net.close()
        try:
            os.rmdir(self.directory)
        except OSError:
            pass


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
