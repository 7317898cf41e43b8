"""Records without a generated class: what ``@dataclass`` gives, written once.

``@dataclass`` compiles each class's ``__init__``, ``__repr__``, ``__eq__``, ``__hash__``,
``__setattr__`` and ``__delattr__`` from generated source when the module is imported
(``exec``, ~0.4 ms per frozen class on this VM): for the decoded kernel structures
imported before livefwd owns its name that was ~10 ms of a 3-device start's ~140 ms
(bench/NOTES.md item 12, fourth pass). A :class:`Frozen` subclass lists its fields in
``_FIELDS`` and writes its ``__init__`` (setting each field with
:func:`object.__setattr__`); this base gives the rest with the same behaviour as the
dataclass methods it replaces: equality only with an instance of the very same class,
field by field in order (``NotImplemented`` otherwise); the hash of the fields' tuple;
``Name(field=value!r, ...)``; :class:`dataclasses.FrozenInstanceError` on assigning or
deleting an attribute; ``__match_args__``. A mutable :class:`Record` subclass (a plain
``@dataclass``) sets its fields as usual and has no hash. tests/unit/test_records.py
compares every subclass with the dataclass it was.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any, ClassVar

__all__ = ["FACTORY", "Frozen", "Record"]


class _Factory:
    def __repr__(self) -> str:
        return "<factory>"


#: the default of a field whose value is made per instance, as
#: ``field(default_factory=f)`` (the dataclass's own sentinel shows as ``<factory>``
#: too): ``__init__`` takes ``value: T = FACTORY`` and keeps
#: ``f() if value is FACTORY else value``.
FACTORY: Any = _Factory()


class Record:
    """Base of a mutable record whose fields are ``_FIELDS``, in ``__init__``'s order.

    What ``@dataclass`` gives: ``__eq__`` (same class only, field by field), no hash
    (``__hash__ = None``), ``Name(field=value!r, ...)``, ``__match_args__``.
    """

    __slots__ = ()
    _FIELDS: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        type.__setattr__(cls, "__match_args__", cls._FIELDS)  # as @dataclass sets it

    def _values(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self._FIELDS])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Record) and other.__class__ is self.__class__:
            return self._values() == other._values()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable: unhashable, as @dataclass(eq=True)

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"{self.__class__.__qualname__}({inner})"


class Frozen(Record):
    """Base of an immutable record: a hashable :class:`Record` without assignment.

    Assigning or deleting an attribute raises :class:`dataclasses.FrozenInstanceError`.
    """

    __slots__ = ()

    def __hash__(self) -> int:  # type: ignore[override]  # Record's is None (mutable)
        return hash(self._values())

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")
