"""``Record``: a lean stand-in for ``@dataclass(frozen=True)`` on the embed fast path.

``dataclasses`` imports ``inspect`` (and with it ``ast``, ``dis``, ``tokenize``...) and
compiles each class's methods with ``exec``: ~10 ms of CPU at start-up, a tenth of an
in-place ``iso ignition embed``. The ISO value types need only this much: fields from
the class annotations (in order, base classes first), defaults (``factory(fn)`` for a
fresh mutable default), keyword or positional construction, ``repr``, ``==`` between
instances of the same class, ``hash`` of the field values, and immutability.
"""

from __future__ import annotations


class FrozenInstanceError(AttributeError):
    """Assigning to a field of a Record (like dataclasses.FrozenInstanceError)."""


class _Factory:
    __slots__ = ("fn",)

    def __init__(self, fn) -> None:
        self.fn = fn


def factory(fn) -> _Factory:
    """A default built by calling fn() for each instance (dataclasses' default_factory)."""
    return _Factory(fn)


class Record:
    __slots__ = ("__dict__",)
    _fields: tuple[str, ...] = ()
    _defaults: dict[str, object] = {}

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        fields: list[str] = []
        defaults: dict[str, object] = {}
        for klass in reversed(cls.__mro__):
            for name in klass.__dict__.get("__annotations__", {}):
                if name.startswith("_"):
                    continue
                if name not in fields:
                    fields.append(name)
                if name in klass.__dict__:
                    defaults[name] = klass.__dict__[name]
                else:
                    defaults.pop(name, None)
        seen_default = False
        for name in fields:
            if name in defaults:
                seen_default = True
            elif seen_default:
                raise TypeError(f"non-default field {name!r} follows a default in {cls.__name__}")
        cls._fields = tuple(fields)
        cls._defaults = defaults

    def __init__(self, *args, **kwargs) -> None:
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__}() takes {len(fields)} arguments, "
                            f"{len(args)} given")
        values = dict(zip(fields, args))
        for k, v in kwargs.items():
            if k not in fields:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {k!r}")
            if k in values:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {k!r}")
            values[k] = v
        d = self.__dict__
        for name in fields:
            if name in values:
                d[name] = values[name]
            elif name in self._defaults:
                default = self._defaults[name]
                d[name] = default.fn() if isinstance(default, _Factory) else default
            else:
                raise TypeError(f"{type(self).__name__}() missing required argument {name!r}")

    def _values(self) -> tuple:
        d = self.__dict__
        return tuple(d[name] for name in self._fields)

    def __repr__(self) -> str:
        d = self.__dict__
        inner = ", ".join(f"{name}={d[name]!r}" for name in self._fields)
        return f"{type(self).__qualname__}({inner})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")
