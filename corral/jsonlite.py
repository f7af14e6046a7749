"""JSON for the command line's start-up path, on the C accelerator ``_json``.

``import json`` imports ``re`` (json.decoder compiles patterns at import), about 5 ms in an
interpreter started with ``-S`` — half of what a whole ``corral state`` may cost.  The C
scanner and string encoders that ``json`` itself uses need none of that.  Same results as
``json.loads`` / ``json.dumps`` for the documents corral reads and writes.
"""

from __future__ import annotations

import _json


class JSONDecodeError(ValueError):
    """Like json.JSONDecodeError: message plus where (line and column, 1-based)."""

    def __init__(self, msg: str, doc: str, pos: int) -> None:
        self.msg, self.doc, self.pos = msg, doc, pos
        self.lineno = doc.count("\n", 0, pos) + 1
        self.colno = pos - doc.rfind("\n", 0, pos)
        super().__init__(f"{msg}: line {self.lineno} column {self.colno} (char {pos})")


def _raise_constant(name: str):
    raise JSONDecodeError(f"{name} is not valid JSON", "", 0)


class _Context:
    """What the C scanner reads off the decoder object."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    def __init__(self, parse_constant) -> None:
        self.parse_constant = parse_constant


_WS = " \t\n\r"


def loads(s: str | bytes, parse_constant=None):
    if isinstance(s, (bytes, bytearray)):
        s = s.decode("utf-8-sig" if s[:3] == b"\xef\xbb\xbf" else "utf-8")
    scan = _json.make_scanner(_Context(parse_constant or _PY_CONSTANTS.__getitem__))
    pos = len(s) - len(s.lstrip(_WS))
    try:
        value, end = scan(s, pos)
    except StopIteration as err:
        raise JSONDecodeError("Expecting value", s, err.value) from None
    except SystemError:
        # The scanner reports errors inside strings and objects through json.decoder, and
        # only if something already imported it; on this (rare) path, let json say what.
        import json

        try:
            json.loads(s, parse_constant=parse_constant)
        except json.JSONDecodeError as err:
            raise JSONDecodeError(err.msg, s, err.pos) from None
        raise
    except ValueError as err:
        if not hasattr(err, "pos"):
            raise  # not a syntax error (an over-long integer, a refused constant)
        raise JSONDecodeError(err.msg, s, err.pos) from None
    rest = len(s) - len(s[end:].lstrip(_WS))
    if rest != len(s):
        raise JSONDecodeError("Extra data", s, rest)
    return value


_PY_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def dumps(obj, indent: int | str | None = None, separators: tuple[str, str] | None = None) -> str:
    if separators is None:
        separators = (",", ": ") if indent is not None else (", ", ": ")
    if indent is None:
        # json's own C encoder (what json.dumps uses), without json.encoder's import of re
        encoder = _encoders.get(separators)
        if encoder is None:
            encoder = _encoders[separators] = _json.make_encoder(
                None, _not_serializable, _json.encode_basestring_ascii, None, separators[1],
                separators[0], False, False, True)
        return "".join(encoder(obj, 0))
    if isinstance(indent, int):
        indent = " " * indent
    out: list[str] = []
    _encode(obj, out, indent, separators[0], separators[1], 0)
    return "".join(out)


_encoders: dict = {}


def _not_serializable(obj):
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _encode(obj, out: list, indent, item_sep: str, key_sep: str, level: int,
            string=_json.encode_basestring_ascii) -> None:
    if isinstance(obj, str):
        out.append(string(obj))
    elif obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        out.append(int.__repr__(obj))
    elif isinstance(obj, float):
        out.append(float.__repr__(obj))
    elif isinstance(obj, dict):
        _container(list(obj.items()), "{", "}", out, indent, item_sep, key_sep, level, True,
                   string)
    elif isinstance(obj, (list, tuple)):
        _container(obj, "[", "]", out, indent, item_sep, key_sep, level, False, string)
    else:
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _container(items, opening, closing, out, indent, item_sep, key_sep, level, is_dict,
               string):
    if not items:
        out.append(opening + closing)
        return
    out.append(opening)
    if indent is not None:
        inner = "\n" + indent * (level + 1)
        sep = item_sep.rstrip(" ") + inner
        out.append(inner)
    else:
        sep = item_sep
    for i, item in enumerate(items):
        if i:
            out.append(sep)
        if is_dict:
            key, value = item
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
            out.append(string(key))
            out.append(key_sep)
            _encode(value, out, indent, item_sep, key_sep, level + 1, string)
        else:
            _encode(item, out, indent, item_sep, key_sep, level + 1, string)
    if indent is not None:
        out.append("\n" + indent * level)
    out.append(closing)


# Go's encoding/json (1.19, which runc 1.1.5 is built with) writes strings as UTF-8 and
# escapes only '"', '\\', the control characters (\n \r \t short, the rest \u00XX), the
# HTML characters < > & and U+2028/U+2029; text that is not UTF-8 becomes U+FFFD.
_GO_SPECIAL = ("<", ">", "&", "\b", "\f", "\u2028", "\u2029")
_GO_ESCAPES = {i: f"\\u{i:04x}" for i in range(0x20)}
_GO_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
                    ord('"'): '\\"', ord("\\"): "\\\\", ord("<"): "\\u003c",
                    ord(">"): "\\u003e", ord("&"): "\\u0026", 0x2028: "\\u2028",
                    0x2029: "\\u2029"})


def go_string(s: str) -> str:
    """A JSON string as Go's encoder writes it."""
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates (surrogateescape'd bytes)
            s = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in s)
    if any(c in s for c in _GO_SPECIAL):
        return '"' + s.translate(_GO_ESCAPES) + '"'
    return _json.encode_basestring(s)


_go_encoder = _json.make_encoder(None, _not_serializable, go_string, None, ":", ",", False,
                                 False, True)


def go_dumps(obj, indent: str | None = None) -> str:
    """JSON as Go writes it: ``json.Marshal`` (compact: ``{"a":1,"b":2}``), or with
    ``indent``, ``json.MarshalIndent(obj, "", indent)``.  Key order is the dicts' own: a Go
    struct's field order, or sorted keys for a Go map, is the caller's to give."""
    if indent is None:
        return "".join(_go_encoder(obj, 0))
    out: list[str] = []
    _encode(obj, out, indent, ",", ": ", 0, go_string)
    return "".join(out)


def read_object(source: str, flag: str, what: str = "a JSON object") -> dict:
    """The JSON object a flag names: a file, or stdin for "-" (as `update --resources -`)."""
    import sys

    from corral.errors import ConfigError

    try:
        if source == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(source, "rb") as f:
                raw = f.read()
    except OSError as exc:
        raise ConfigError(flag, f"cannot read {source}: {exc.strerror}") from None
    try:
        data = loads(raw)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise ConfigError(flag, f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(flag, f"must hold {what}")
    return data
