"""The plan's wire format: steps the C executor runs (``corral/nsenter/executor.c``), and the
frames of the sync socket.

The table of steps is ``corral/nsenter/plan_ops.h``, read here once: one source for both
sides.  Every argument is typed on the wire (``i`` a 64-bit integer, ``s`` a string, ``b``
bytes, ``l`` a list of strings), so a plan the executor cannot read is an error naming the
step, never a misread.

A ``Template`` is a plan with holes: arguments given as a ``Slot`` are filled per container
(``fill``), so one template serves every container of one config.
"""

from __future__ import annotations

import os
import _struct as struct  # `struct` is the same module under a heavier import path

_NSENTER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "nsenter")
_HEADER = os.path.join(_NSENTER, "plan_ops.h")
#: The executor of plans, built with corral (setup.py): ``launch FD`` or ``spawner FD``.
EXECUTOR = os.path.join(_NSENTER, "corral-exec")

_pack_q = struct.Struct("<q").pack
_pack_I = struct.Struct("<I").pack
_pack_step = struct.Struct("<HHI").pack
_pack_frame = struct.Struct("<IHH").pack


def _read_table() -> tuple[dict[str, tuple[int, str]], dict[str, int]]:
    ops: dict[str, tuple[int, str]] = {}
    consts: dict[str, int] = {}
    with open(_HEADER) as f:
        for line in f:
            line = line.strip()
            if line.startswith("OP("):
                name, _, rest = line[3:].partition(",")
                args = rest.split('"')[1]
                ops[name.strip()] = (len(ops), args)
            elif line.startswith("#define CORRAL_"):
                parts = line.split()
                if len(parts) >= 3:
                    try:
                        consts[parts[1][len("CORRAL_"):]] = int(parts[2].rstrip("u"), 0)
                    except ValueError:
                        pass  # the table macro itself
    return ops, consts


OPS, CONSTANTS = _read_table()
MAGIC = CONSTANTS["PLAN_MAGIC"]
VERSION = CONSTANTS["PLAN_VERSION"]
REGS = CONSTANTS["PLAN_REGS"]
BLOBS = CONSTANTS["PLAN_BLOBS"]
MSG_PLAN = CONSTANTS["MSG_PLAN"]
MSG_USERMAP_DONE = CONSTANTS["MSG_USERMAP_DONE"]
MSG_HOOKS_DONE = CONSTANTS["MSG_HOOKS_DONE"]
MSG_RUN = CONSTANTS["MSG_RUN"]
MSG_PID = CONSTANTS["MSG_PID"]
MSG_HOOKS_DUE = CONSTANTS["MSG_HOOKS_DUE"]
MSG_READY = CONSTANTS["MSG_READY"]
MSG_WAITING = CONSTANTS["MSG_WAITING"]
MSG_ERROR = CONSTANTS["MSG_ERROR"]


class PlanError(Exception):
    """A step built with arguments its table entry does not take (a bug of the compiler)."""


# ---- values ---------------------------------------------------------------------------------


def enc_int(v: int) -> bytes:
    return b"i" + _pack_q(v)


def enc_str(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    if b"\0" in raw:
        raise PlanError(f"a string with a NUL byte: {raw[:40]!r}")
    return b"s" + _pack_I(len(raw)) + raw + b"\0"


def enc_bytes(b: bytes) -> bytes:
    return b"b" + _pack_I(len(b)) + b


def enc_list(items) -> bytes:
    items = list(items)
    return b"l" + _pack_I(len(items)) + b"".join(enc_str(s) for s in items)


ENCODERS = {"i": enc_int, "s": enc_str, "b": enc_bytes, "l": enc_list}


def decode_args(data: bytes) -> list:
    """The typed arguments of a frame or step (the parent reads the child's frames);
    ValueError for anything that is not exactly that."""
    out, i, n = [], 0, len(data)

    def size_at(at: int) -> int:
        if at + 4 > n:
            raise ValueError("truncated arguments")
        return int.from_bytes(data[at:at + 4], "little")

    while i < n:
        tag = data[i:i + 1]
        i += 1
        if tag == b"i":
            if i + 8 > n:
                raise ValueError("truncated arguments")
            out.append(int.from_bytes(data[i:i + 8], "little", signed=True))
            i += 8
        elif tag in (b"s", b"b"):
            size = size_at(i)
            i += 4
            end = i + size + (1 if tag == b"s" else 0)
            if end > n:
                raise ValueError("truncated arguments")
            raw = data[i:i + size]
            i = end
            out.append(raw.decode(errors="replace") if tag == b"s" else raw)
        elif tag == b"l":
            count = size_at(i)
            i += 4
            if count > n - i:  # every item takes more than a byte
                raise ValueError("truncated arguments")
            items = []
            for _ in range(count):
                if data[i:i + 1] != b"s":
                    raise ValueError("a list item is not a string")
                size = size_at(i + 1)
                if i + 6 + size > n:
                    raise ValueError("truncated arguments")
                items.append(data[i + 5:i + 5 + size].decode(errors="replace"))
                i += 6 + size
            out.append(items)
        else:
            raise ValueError(f"unknown argument tag {tag!r}")
    return out


def frame(msg_type: int, payload: bytes = b"") -> bytes:
    return _pack_frame(4 + len(payload), msg_type, 0) + payload


# ---- templates ------------------------------------------------------------------------------


class Slot:
    """A per-container argument, filled by ``Template.fill``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Slot({self.name!r})"


# Steps encoded before, by their arguments: configs of one shape compile to the same steps.
_ENCODED_MAX = 4096
_encoded: dict = {}


def _compact(parts: list) -> list:
    """The plan's header and its steps, with consecutive constant steps joined."""
    out: list = []
    run = [_pack_I(MAGIC) + _pack_I(VERSION)]
    for part in parts:
        if isinstance(part, bytes):
            run.append(part)
        else:
            out.append(b"".join(run))
            run = []
            out.append(part)
    if run:
        out.append(b"".join(run))
    return out


def _hashable(args: tuple) -> bool:
    """Arguments that can key the cache: no lists (mutable), no slots."""
    for value in args:
        if isinstance(value, (list, Slot)):
            return False
    return True


class Template:
    """Steps in order, most of them encoded once; the ones with slots are encoded per fill."""

    def __init__(self) -> None:
        self._parts: list = []  # bytes, or (op code, [bytes | (Slot, kind)])
        self._compact: tuple | None = None  # (parts seen, constant runs joined)
        self.slots: set[str] = set()
        self.names: list[str] = []  # the op of each step, for tests and debugging

    def add(self, op: str, *args) -> None:
        step = _encoded.get((op, args)) if _hashable(args) else None
        if step is not None:
            self.names.append(op)
            self._parts.append(step)
            return
        try:
            code, kinds = OPS[op]
        except KeyError:
            raise PlanError(f"no step {op}") from None
        if len(args) != len(kinds):
            raise PlanError(f"{op} takes {len(kinds)} arguments ({kinds}), not {len(args)}")
        pieces: list = []
        for kind, value in zip(kinds, args):
            if isinstance(value, Slot):
                self.slots.add(value.name)
                pieces.append((value.name, kind))
            else:
                pieces.append(ENCODERS[kind](value))
        self.names.append(op)
        if all(isinstance(p, bytes) for p in pieces):
            body = b"".join(pieces)
            step = _pack_step(code, 0, len(body)) + body
            self._parts.append(step)
            if _hashable(args):
                if len(_encoded) >= _ENCODED_MAX:
                    _encoded.clear()
                _encoded[(op, args)] = step
        else:
            self._parts.append((code, pieces))

    def fill(self, values: dict) -> bytes:
        """The plan frame for one container: ``values`` gives every slot."""
        if self._compact is None or self._compact[0] != len(self._parts):
            self._compact = (len(self._parts), _compact(self._parts))
        encoded: dict = {}  # a slot's value, encoded once however many steps take it
        out = []
        for part in self._compact[1]:
            if isinstance(part, bytes):
                out.append(part)
                continue
            code, pieces = part
            chunks = []
            for p in pieces:
                if isinstance(p, bytes):
                    chunks.append(p)
                else:
                    value = encoded.get(p)
                    if value is None:
                        value = encoded[p] = ENCODERS[p[1]](values[p[0]])
                    chunks.append(value)
            body = b"".join(chunks)
            out.append(_pack_step(code, 0, len(body)) + body)
        payload = b"".join(out)
        return frame(MSG_PLAN, payload)
