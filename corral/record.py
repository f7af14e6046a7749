"""Frozen typed records without the cost of ``dataclasses``.

Each ``corral`` command is a new interpreter, and ``import dataclasses`` (it pulls in
``inspect``) plus generating code for every class cost ~12 ms: more than all of ``runc create``
spends on its own work.  A ``Record`` subclass declares its fields as annotations, exactly like a dataclass; the
class is built in microseconds because nothing is generated: one shared ``__init__``,
``__eq__``, ``__hash__`` and ``__repr__`` read the field list.

    class Mount(Record):
        destination: str
        options: tuple[str, ...] = ()
        extra: list[str] = factory(list)
"""

from __future__ import annotations

_MISSING = object()


class factory:  # noqa: N801 - reads like dataclasses.field(default_factory=...)
    """A default made fresh for each instance."""

    __slots__ = ("make",)

    def __init__(self, make) -> None:
        self.make = make


class Record:
    _fields: tuple[str, ...] = ()
    _defaults: dict = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        fields = list(cls._fields)
        defaults = dict(cls._defaults)
        for name in cls.__dict__.get("__annotations__", {}):
            if name.startswith("_"):
                continue
            if name not in fields:
                fields.append(name)
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
                delattr(cls, name)  # instances hold the value; the class keeps the default here
        cls._fields = tuple(fields)
        cls._defaults = defaults

    def __init__(self, *args, **kwargs) -> None:
        if len(args) > len(self._fields):
            raise TypeError(f"{type(self).__name__} takes {len(self._fields)} fields, "
                            f"got {len(args)}")
        values = dict(zip(self._fields, args))
        for name, value in kwargs.items():
            if name not in self._fields:
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
            if name in values:
                raise TypeError(f"{type(self).__name__}: {name!r} given twice")
            values[name] = value
        for name in self._fields:
            if name not in values:
                default = self._defaults.get(name, _MISSING)
                if default is _MISSING:
                    raise TypeError(f"{type(self).__name__} is missing field {name!r}")
                values[name] = default.make() if isinstance(default, factory) else default
            object.__setattr__(self, name, values[name])

    def __setattr__(self, name, value) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __delattr__(self, name) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        # frozen: computed once (configs key the plan cache, and share sub-records)
        try:
            return self.__dict__["_hash"]
        except KeyError:
            value = hash((type(self), self._values()))
            object.__setattr__(self, "_hash", value)
            return value

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({inner})"


def replace(record: Record, **changes) -> Record:
    """A copy with some fields changed (like ``dataclasses.replace``)."""
    values = {name: getattr(record, name) for name in record._fields}
    values.update(changes)
    return type(record)(**values)


def asdict(record: Record) -> dict:
    """Field values by name, nested records included (like ``dataclasses.asdict``)."""
    return {name: _plain(getattr(record, name)) for name in record._fields}


def _plain(value):
    if isinstance(value, Record):
        return asdict(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
