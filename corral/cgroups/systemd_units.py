"""The systemd cgroup driver's decisions, without D-Bus: which unit a ``slice:prefix:name``
cgroupsPath names, where systemd puts its cgroup, and which unit properties carry
``linux.resources`` (as runc's systemd driver sets them, for cgroup v1 and v2).

Properties are ``(name, (dbus signature, value))`` pairs, the ``a(sv)`` shape that
StartTransientUnit and SetUnitProperties take; what systemd has no property for is left
to the cgroupfs writers (``resources.py``), which run after the unit exists.
"""

from __future__ import annotations

from ..errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..oci.config import DeviceRule, Resources

Property = tuple  # (name, (signature, value))

DEFAULT_SLICE = "system.slice"
DEFAULT_PREFIX = "corral"
DEFAULT_CPU_PERIOD = 100000  # µs, the kernel's default for v1 and v2
USEC_INFINITY = 2**64 - 1  # systemd's "no limit" for a uint64 property
_FIELD = "linux.cgroupsPath"


class UnitPath:
    """A parsed ``slice:prefix:name``: the scope ``prefix-name.scope`` in ``slice``."""

    __slots__ = ("slice", "prefix", "name")

    def __init__(self, slice_: str, prefix: str, name: str) -> None:
        self.slice = slice_
        self.prefix = prefix
        self.name = name

    @property
    def unit(self) -> str:
        return f"{self.prefix}-{self.name}.scope" if self.prefix else f"{self.name}.scope"

    def cgroup(self) -> str:
        """The scope's cgroup relative to systemd's root: ``/a.slice/a-b.slice/x.scope``."""
        return expand_slice(self.slice).rstrip("/") + "/" + self.unit


def parse_path(cgroups_path: str | None, container_id: str) -> UnitPath:
    """runc's rules: empty means ``system.slice:corral:<id>``; otherwise exactly three
    colon-separated fields, an empty slice meaning system.slice."""
    if not cgroups_path:
        return UnitPath(DEFAULT_SLICE, DEFAULT_PREFIX, container_id)
    parts = cgroups_path.split(":")
    if len(parts) != 3:
        raise ConfigError(_FIELD, f'expected cgroupsPath to be of format "slice:prefix:name" '
                                  f"for systemd cgroups, got {cgroups_path!r} instead")
    slice_, prefix, name = parts
    slice_ = slice_ or DEFAULT_SLICE
    expand_slice(slice_)  # checked now: a bad slice is the config's error
    if not name or "/" in name or "/" in prefix or name in (".", ".."):
        raise ConfigError(_FIELD, f"{cgroups_path!r}: the name must be a non-empty unit "
                                  f"name component without '/'")
    if name.endswith(".slice"):
        raise ConfigError(_FIELD, f"{cgroups_path!r}: a container's unit is a scope; a "
                                  f"slice name (.slice) is not supported as its name")
    path = UnitPath(slice_, prefix, name)
    _check_unit_name(path.unit, cgroups_path)
    _check_unit_name(slice_, cgroups_path)
    return path


_UNIT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\")
_UNIT_NAME_MAX = 255


def _check_unit_name(unit: str, cgroups_path: str) -> None:
    """systemd's unit_name_is_valid: those characters, 255 at most."""
    bad = sorted(set(unit) - _UNIT_CHARS)
    if bad:
        raise ConfigError(_FIELD, f"{cgroups_path!r}: {unit!r} is not a valid systemd unit "
                                  f"name (character {bad[0]!r})")
    if len(unit) > _UNIT_NAME_MAX:
        raise ConfigError(_FIELD, f"{cgroups_path!r}: the unit name {unit[:40]}... is longer "
                                  f"than systemd's {_UNIT_NAME_MAX}")


def expand_slice(slice_: str) -> str:
    """systemd's nesting of slices: ``a-b-c.slice`` is ``/a.slice/a-b.slice/a-b-c.slice``,
    ``-.slice`` the root."""
    suffix = ".slice"
    if not slice_.endswith(suffix) or len(slice_) <= len(suffix) or "/" in slice_:
        raise ConfigError(_FIELD, f"invalid slice name: {slice_!r}")
    stem = slice_[:-len(suffix)]
    if stem == "-":
        return "/"
    path, prefix = "", ""
    for part in stem.split("-"):
        if not part:
            raise ConfigError(_FIELD, f"invalid slice name: {slice_!r}")
        path += "/" + prefix + part + suffix
        prefix += part + "-"
    return path


def version_number(text: str) -> int:
    """``"252.38-1~deb12u1"`` or ``"v245.4"`` → 252, 245; -1 when there is no number."""
    digits = ""
    for ch in text.lstrip('"v'):
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else -1


def unit_properties(path: UnitPath, pid: int, description: str) -> list[Property]:
    """The unit itself, as runc starts it: in its slice, the init's pid, delegated (the
    container may manage its own sub-tree), accounting on, no default dependencies."""
    return [
        ("Description", ("s", description)),
        ("Slice", ("s", path.slice)),
        ("PIDs", ("au", [pid])),
        ("Delegate", ("b", True)),
        ("MemoryAccounting", ("b", True)),
        ("CPUAccounting", ("b", True)),
        ("TasksAccounting", ("b", True)),
        ("DefaultDependencies", ("b", False)),
    ]


def accounting_properties(unified: bool) -> list[Property]:
    """The block I/O accounting switch has its v1 and its v2 name."""
    return [("IOAccounting" if unified else "BlockIOAccounting", ("b", True))]


def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] → cpu.weight [1, 10000], the conversion runc and crun use."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def cpu_quota_properties(quota: int | None, period: int | None,
                         version: int) -> list[Property]:
    """CPUQuotaPerSecUSec (and the period, systemd 242+): systemd keeps a quota per second
    rounded to 10 ms, so a fractional percentage is rounded up, as runc does."""
    props: list[Property] = []
    if period and version >= 242:
        props.append(("CPUQuotaPeriodUSec", ("t", period)))
    if quota or period:
        per_sec = USEC_INFINITY
        if quota is not None and quota > 0:
            per_sec = quota * 1000000 // (period or DEFAULT_CPU_PERIOD)
            if per_sec % 10000:
                per_sec = (per_sec // 10000 + 1) * 10000
        props.append(("CPUQuotaPerSecUSec", ("t", per_sec)))
    return props


def range_to_bits(text: str, field: str) -> bytes:
    """A cpuset list (``0-2,5``) as systemd's AllowedCPUs bitmask: little-endian bytes."""
    value = 0
    for chunk in text.strip().split(","):
        chunk = chunk.strip()
        if not chunk:
            continue
        first, _, last = chunk.partition("-")
        try:
            lo, hi = int(first), int(last or first)
        except ValueError:
            raise ConfigError(field, f"{text!r} is not a cpu/node list") from None
        if lo < 0 or hi < lo:
            raise ConfigError(field, f"{text!r} is not a cpu/node list")
        for bit in range(lo, hi + 1):
            value |= 1 << bit
    if value == 0:
        raise ConfigError(field, f"{text!r} names no cpu/node")
    return value.to_bytes((value.bit_length() + 7) // 8, "little")


def resource_properties(resources: Resources, unified: bool, version: int) -> list[Property]:
    """``linux.resources`` as unit properties: runc's genV1ResourcesProperties (``unified``
    False: MemoryLimit, CPUShares, BlockIOWeight) or genV2ResourcesProperties (MemoryMax,
    MemoryLow, MemorySwapMax, CPUWeight)."""
    props: list[Property] = []
    mem = resources.memory
    if mem is not None:
        limit = mem.limit
        if limit is not None and limit != 0:
            value = USEC_INFINITY if limit < 0 else limit
            props.append(("MemoryMax" if unified else "MemoryLimit", ("t", value)))
        if unified and mem.reservation:
            props.append(("MemoryLow", ("t", USEC_INFINITY if mem.reservation < 0
                                        else mem.reservation)))
        if unified and mem.swap is not None and mem.swap != 0:
            props.append(("MemorySwapMax", ("t", _v2_swap(mem.swap, limit))))
    cpu = resources.cpu
    if cpu is not None:
        if cpu.shares:
            props.append(("CPUWeight", ("t", shares_to_weight(cpu.shares))) if unified
                         else ("CPUShares", ("t", cpu.shares)))
        props += cpu_quota_properties(cpu.quota, cpu.period, version)
        if version >= 244:
            if cpu.cpus:
                props.append(("AllowedCPUs", ("ay", range_to_bits(
                    cpu.cpus, "linux.resources.cpu.cpus"))))
            if cpu.mems:
                props.append(("AllowedMemoryNodes", ("ay", range_to_bits(
                    cpu.mems, "linux.resources.cpu.mems"))))
    if not unified and resources.block_io is not None and resources.block_io.weight:
        props.append(("BlockIOWeight", ("t", resources.block_io.weight)))
    pids = resources.pids_limit
    if pids is not None and (pids > 0 or pids == -1):
        props.append(("TasksMax", ("t", USEC_INFINITY if pids == -1 else pids)))
    if unified:
        props += _unified_properties(resources.unified, version)
    return props


def _v2_swap(swap: int, limit: int | None) -> int:
    """OCI's swap is memory+swap (v1); memory.swap.max is swap alone."""
    if swap < 0:
        return USEC_INFINITY
    if limit is None or limit <= 0:
        raise ConfigError("linux.resources.memory.swap",
                          "a swap limit needs a memory limit on cgroup v2")
    if swap < limit:
        raise ConfigError("linux.resources.memory.swap",
                          f"memory+swap {swap} is less than the memory limit {limit}")
    return swap - limit


_UNIFIED_MEMORY = {"memory.high": "MemoryHigh", "memory.low": "MemoryLow",
                   "memory.min": "MemoryMin", "memory.max": "MemoryMax",
                   "memory.swap.max": "MemorySwapMax"}


def _unified_properties(unified: dict[str, str], version: int) -> list[Property]:
    """``linux.resources.unified`` keys systemd has a property for (runc's
    unifiedResToSystemdProps); the rest is written to cgroupfs only."""
    props: list[Property] = []
    for key, raw in sorted(unified.items()):
        value = raw.strip()
        field = f"linux.resources.unified[{key!r}]"
        if key in _UNIFIED_MEMORY or key == "pids.max":
            number = USEC_INFINITY if value == "max" else _uint(value, field)
            props.append((_UNIFIED_MEMORY.get(key, "TasksMax"), ("t", number)))
        elif key == "cpu.weight":
            props.append(("CPUWeight", ("t", _uint(value, field))))
        elif key == "cpu.max":
            fields = value.split()
            if not 1 <= len(fields) <= 2:
                raise ConfigError(field, f"{raw!r} is not 'quota [period]'")
            quota = 0 if fields[0] == "max" else _uint(fields[0], field)
            period = _uint(fields[1], field) if len(fields) == 2 else DEFAULT_CPU_PERIOD
            props += cpu_quota_properties(quota, period, version)
        elif key in ("cpuset.cpus", "cpuset.mems") and version >= 244:
            name = "AllowedCPUs" if key == "cpuset.cpus" else "AllowedMemoryNodes"
            props.append((name, ("ay", range_to_bits(value, field))))
    return props


def _uint(text: str, field: str) -> int:
    if not text.isdigit():
        raise ConfigError(field, f"{text!r} is not a number")
    return int(text)


def device_properties(rules: list[DeviceRule]) -> list[Property]:
    """The device rules as DevicePolicy/DeviceAllow, as runc's driver makes them.

    systemd re-applies a unit's cgroup settings whenever it likes (a reload, a sibling's
    change): with the default policy it would then write ``a *:* rwm`` to devices.allow
    (v1), opening every device. So the rules are folded into the allow-list they amount
    to, and the policy is strict. A deny rule after an allow-all cannot be said to systemd:
    as runc, it is told deny-all (the cgroupfs rules written after it are exact)."""
    allow_all, allowed = False, {}
    for rule in rules:
        everything = (rule.type == "a" and rule.major is None and rule.minor is None
                      and set(rule.access) >= set("rwm"))
        if everything:
            allow_all, allowed = rule.allow, {}
            continue
        types = ("c", "b") if rule.type == "a" else (rule.type,)
        for kind in types:
            key = (kind, rule.major, rule.minor)
            if allow_all:
                if not rule.allow:  # a blacklist: systemd has no deny list
                    return [("DevicePolicy", ("s", "strict")), ("DeviceAllow", ("a(ss)", []))]
                continue
            have = allowed.get(key, "")
            if rule.allow:
                allowed[key] = "".join(c for c in "rwm" if c in have or c in rule.access)
            else:
                for other in list(allowed):
                    if _covers(key, other):
                        left = "".join(c for c in allowed[other] if c not in rule.access)
                        if left:
                            allowed[other] = left
                        else:
                            del allowed[other]
    if allow_all:
        return [("DevicePolicy", ("s", "auto")), ("DeviceAllow", ("a(ss)", []))]
    entries = []
    for (kind, major, minor), access in allowed.items():
        group = "char-" if kind == "c" else "block-"
        if major is None:
            if minor is not None:
                continue  # "*:n" has no systemd form (runc skips it too)
            path = group + "*"
        elif minor is None:
            path = f"{group}{major}"
        else:
            path = f"/dev/{'char' if kind == 'c' else 'block'}/{major}:{minor}"
        entries.append((path, access))
    return [("DevicePolicy", ("s", "strict")), ("DeviceAllow", ("a(ss)", entries))]


def _covers(deny: tuple, rule: tuple) -> bool:
    """Whether a deny rule (type, major, minor; None for any) reaches an allowed one."""
    return (deny[0] == rule[0] and (deny[1] is None or deny[1] == rule[1])
            and (deny[2] is None or deny[2] == rule[2]))


# -- org.systemd.property.* annotations ---------------------------------------------------

ANNOTATION_PREFIX = "org.systemd.property."
_TYPE_WORDS = {"byte": "y", "int16": "n", "uint16": "q", "int32": "i", "uint32": "u",
               "int64": "x", "uint64": "t", "double": "d", "boolean": "b", "string": "s"}
_INT_RANGES = {"y": (0, 2**8 - 1), "n": (-2**15, 2**15 - 1), "q": (0, 2**16 - 1),
               "i": (-2**31, 2**31 - 1), "u": (0, 2**32 - 1), "x": (-2**63, 2**63 - 1),
               "t": (0, 2**64 - 1)}


def annotation_properties(annotations: dict[str, str]) -> list[Property]:
    """Unit properties a config asks for by annotation, as runc takes them: the name after
    ``org.systemd.property.`` (latin letters, three or more), the value in D-Bus's text
    form (``true``, ``'text'``, ``42``, ``uint64 42``, ``@t 42``, ``['a', 'b']``); a
    ``...Sec`` name is systemd's ``...USec`` in microseconds (``TimeoutStopSec=5``)."""
    props: list[Property] = []
    for key in sorted(annotations):
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        field = f"annotations[{key!r}]"
        name = key[len(ANNOTATION_PREFIX):]
        if len(name) < 3 or not name.isascii() or not name.isalpha():
            raise ConfigError(field, f"{name!r} is not a systemd property name")
        signature, value = parse_variant(annotations[key], field)
        if len(name) > 3 and name.endswith("Sec") and name[-4].islower():
            if signature not in _INT_RANGES and signature != "d":
                raise ConfigError(field, f"{name} takes seconds: {annotations[key]!r} is "
                                         f"not a number")
            name, signature, value = name[:-3] + "USec", "t", int(value * 1000000)
            if value < 0:
                raise ConfigError(field, "seconds must not be negative")
        props.append((name, (signature, value)))
    return props


def parse_variant(text: str, field: str) -> tuple[str, object]:
    """(signature, value) of a value in GVariant text form, the forms runc's annotations
    use: booleans, strings, numbers (a bare integer is int32, as godbus takes it), a type
    word or ``@T`` before a number, and arrays of those."""
    text = text.strip()
    forced = None
    if text.startswith("@"):
        forced, _, text = text[1:].partition(" ")
    else:
        word, _, rest = text.partition(" ")
        if word in _TYPE_WORDS and rest:
            forced, text = _TYPE_WORDS[word], rest
    text = text.strip()
    if forced is not None and forced.startswith("a"):
        if not (text.startswith("[") and text.endswith("]")):
            raise ConfigError(field, f"{text!r} is not an array")
        items = _split_items(text[1:-1], field)
        return forced, [_typed(forced[1:], item, field) for item in items]
    if text.startswith("["):
        if not text.endswith("]"):
            raise ConfigError(field, f"{text!r}: unterminated array")
        items = _split_items(text[1:-1], field)
        if not items:
            raise ConfigError(field, "an empty array needs its type (@as [])")
        parsed = [parse_variant(item, field) for item in items]
        kinds = {sig for sig, _ in parsed}
        if len(kinds) != 1:
            raise ConfigError(field, f"{text!r} mixes types")
        return "a" + kinds.pop(), [value for _, value in parsed]
    if forced is not None:
        return forced, _typed(forced, text, field)
    if text in ("true", "false"):
        return "b", text == "true"
    if text[:1] in ("'", '"'):
        return "s", _string(text, field)
    try:
        return "i", _typed("i", text, field)
    except ConfigError:
        pass
    try:
        return "d", float(text)
    except ValueError:
        raise ConfigError(field, f"{text!r} is not a D-Bus value (true, 'text', 42, "
                                 f"uint64 42, ['a'])") from None


def _typed(signature: str, text: str, field: str):
    text = text.strip()
    if signature in _INT_RANGES:
        try:
            number = int(text, 0)
        except ValueError:
            raise ConfigError(field, f"{text!r} is not an integer") from None
        low, high = _INT_RANGES[signature]
        if not low <= number <= high:
            raise ConfigError(field, f"{number} is out of range for D-Bus type {signature!r}")
        return number
    if signature == "d":
        try:
            return float(text)
        except ValueError:
            raise ConfigError(field, f"{text!r} is not a number") from None
    if signature == "b" and text in ("true", "false"):
        return text == "true"
    if signature == "s" and text[:1] in ("'", '"'):
        return _string(text, field)
    raise ConfigError(field, f"{text!r} is not a value of D-Bus type {signature!r}")


def _string(text: str, field: str) -> str:
    quote = text[0]
    if len(text) < 2 or text[-1] != quote:
        raise ConfigError(field, f"{text!r}: unterminated string")
    out, i, body = [], 0, text[1:-1]
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            out.append(body[i + 1])
            i += 2
            continue
        if ch == quote:
            raise ConfigError(field, f"{text!r}: unescaped quote")
        out.append(ch)
        i += 1
    return "".join(out)


def _split_items(body: str, field: str) -> list[str]:
    """Comma-separated items, commas inside quotes kept."""
    items, current, quote = [], "", None
    for ch in body:
        if quote:
            current += ch
            if ch == quote and not current.endswith("\\" + quote):
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            current += ch
        elif ch == ",":
            items.append(current.strip())
            current = ""
        else:
            current += ch
    if quote:
        raise ConfigError(field, f"[{body}]: unterminated string")
    if current.strip():
        items.append(current.strip())
    elif items:
        raise ConfigError(field, f"[{body}]: empty item")
    return items
