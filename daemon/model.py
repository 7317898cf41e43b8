"""Validated records: the part of pydantic's ``BaseModel`` livefw uses, without pydantic.

Start-up is exec until the bus name is owned (issue 17 item 1). With pydantic, every
livefwd start imported pydantic and pydantic-core (~7 MiB of RSS, with
importlib.metadata through pydantic's plugin loader) and built a core schema for each
of ~30 model classes (the configuration, the device snapshot, history rows and every
simulated component's state): ~70 ms of a ~250 ms start on a 3-device machine and a
quarter of its memory (bench/NOTES.md). What livefw needs of a model is small:
declared fields with defaults, validation of untrusted mappings (livefw.conf,
machine.json, registry files, history rows) into those fields with pydantic's lax
conversions and its error shape, ``frozen`` and ``extra``, and dumps to Python and to
JSON. This module gives exactly that.

- Fields are the class's annotations (``ClassVar`` excluded), resolved on first use;
  a value in the class body is the default; :func:`Field` gives a ``default_factory``
  or a bound (``ge``, ``gt``). Types: ``str``, ``int``, ``float``, ``bool``,
  ``bytes``, ``None``, ``Any``, ``Literal[...]``, enums, ``X | None``, ``list[X]``,
  ``tuple[X, ...]``, ``dict[K, V]`` and other models. Conversions follow pydantic's
  lax mode (``"12"`` and ``12.0`` are an ``int``, ``1``/``"yes"`` a ``bool``; a
  number is not a ``str``); anything else raises :class:`ValidationError`, a
  ``ValueError`` whose :meth:`~ValidationError.errors` lists ``loc``, ``msg`` and
  ``type`` as pydantic's does.
- Class keywords: ``frozen=True`` (assignment raises, instances hash), ``extra=``
  ``"ignore"`` (default), ``"forbid"`` or ``"allow"`` (kept in ``model_extra``).
- Instances keep their fields in ``__slots__``: at 1,000 simulated devices the
  simulator's state is ~5,000 records.
- ``Model(**values)`` and :meth:`Model.model_validate` validate;
  :meth:`~Model.model_copy` and assignment do not (as in pydantic).
"""

from __future__ import annotations

import enum
import json
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

__all__ = ["Field", "FieldInfo", "Model", "ValidationError"]

_MISSING: Any = object()
_NONE = type(None)
_SCALARS = (str, int, float, bool, _NONE)
#: field types whose values are kept as they come when their type is exactly this
_EXACT = frozenset({str, int, float, bool})
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})

M = TypeVar("M", bound="Model")
Converter = Callable[[Any], Any]


class ValidationError(ValueError):
    """Values that do not fit a model; :meth:`errors` as pydantic's ValidationError."""

    def __init__(self, title: str, errors: list[dict[str, Any]]) -> None:
        self.title = title
        self._errors = errors
        lines = [f"{len(errors)} validation error{'s' * (len(errors) != 1)} for {title}"]
        for error in errors:
            lines.append(".".join(str(part) for part in error["loc"]) or title)
            lines.append(f"  {error['msg']} [type={error['type']}]")
        super().__init__("\n".join(lines))

    def errors(self) -> list[dict[str, Any]]:
        """Each error: ``loc`` (field names and indexes), ``msg``, ``type``."""
        return [dict(error) for error in self._errors]


class _Unmatched:
    """No value has this type: the plan's marker for fields without a fast path."""


class _Invalid(Exception):
    """One failed conversion inside a model (becomes a ValidationError at the top)."""

    def __init__(self, kind: str, msg: str, loc: tuple[Any, ...] = ()) -> None:
        super().__init__(msg)
        self.kind = kind
        self.msg = msg
        self.loc = loc

    def at(self, part: Any) -> _Invalid:
        self.loc = (part, *self.loc)
        return self


class FieldInfo:
    """A field: its default (or factory), bounds and, once resolved, its annotation."""

    __slots__ = ("_source", "annotation", "default", "default_factory", "ge", "gt")

    def __init__(
        self,
        default: Any = _MISSING,
        default_factory: Callable[[], Any] | None = None,
        ge: float | None = None,
        gt: float | None = None,
    ) -> None:
        self.default = default
        self.default_factory = default_factory
        self.ge = ge
        self.gt = gt
        self.annotation: Any = None
        #: the annotation as written and the module it was written in
        self._source: tuple[Any, str] = (None, "")

    def is_required(self) -> bool:
        """Neither a default nor a factory."""
        return self.default is _MISSING and self.default_factory is None


def Field(  # noqa: N802 (pydantic's name, so declarations read the same)
    default: Any = _MISSING,
    *,
    default_factory: Callable[[], Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
) -> Any:
    """A field's default or ``default_factory`` and its bounds (``ge``, ``gt``)."""
    return FieldInfo(default, default_factory, ge, gt)


# ------------------------------------------------------------------ conversions


def _str(value: Any) -> Any:
    if isinstance(value, str):
        return value if type(value) is str else str(value)
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            raise _Invalid(
                "string_unicode",
                "Input should be a valid string, unable to parse raw data as a unicode string",
            ) from None
    raise _Invalid("string_type", "Input should be a valid string")


def _int(value: Any) -> Any:
    if type(value) is int:
        return value
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise _Invalid(
            "int_from_float", "Input should be a valid integer, got a number with a fractional part"
        )
    if isinstance(value, str | bytes):
        try:
            return int(value.strip())
        except ValueError:
            raise _Invalid(
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
            ) from None
    raise _Invalid("int_type", "Input should be a valid integer")


def _float(value: Any) -> Any:
    if type(value) is float:
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str | bytes):
        try:
            return float(value.strip())
        except ValueError:
            raise _Invalid(
                "float_parsing",
                "Input should be a valid number, unable to parse string as a number",
            ) from None
    raise _Invalid("float_type", "Input should be a valid number")


def _bool(value: Any) -> Any:
    if value is True or value is False:
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str | bytes):
        text = (
            (value.decode(errors="replace") if isinstance(value, bytes) else value).strip().lower()
        )
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise _Invalid("bool_parsing", "Input should be a valid boolean, unable to interpret input")
    if isinstance(value, int | float):
        raise _Invalid("bool_parsing", "Input should be a valid boolean, unable to interpret input")
    raise _Invalid("bool_type", "Input should be a valid boolean")


def _bytes(value: Any) -> Any:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytearray):
        return bytes(value)
    raise _Invalid("bytes_type", "Input should be a valid bytes")


def _any(value: Any) -> Any:
    return value


def _none(value: Any) -> Any:
    if value is None:
        return None
    raise _Invalid("none_required", "Input should be None")


def _quoted(values: Iterable[Any]) -> str:
    shown = [repr(value) if isinstance(value, str) else str(value) for value in values]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def _literal(allowed: tuple[Any, ...]) -> Converter:
    lookup = {(type(value), value): value for value in allowed}
    message = f"Input should be {_quoted(allowed)}"

    def convert(value: Any) -> Any:
        try:
            return lookup[(type(value), value)]
        except (KeyError, TypeError):
            pass
        for option in allowed:  # a str enum member for its value, as pydantic allows
            if isinstance(value, type(option)) and value == option:
                return option
        raise _Invalid("literal_error", message)

    return convert


def _enum(cls: type[enum.Enum]) -> Converter:
    message = f"Input should be {_quoted(member.value for member in cls)}"

    def convert(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except (ValueError, TypeError):
            raise _Invalid("enum", message) from None

    return convert


def _optional(inner: Converter) -> Converter:
    def convert(value: Any) -> Any:
        return None if value is None else inner(value)

    return convert


def _union(options: list[Converter]) -> Converter:
    def convert(value: Any) -> Any:
        first: _Invalid | None = None
        for option in options:
            try:
                return option(value)
            except _Invalid as error:
                first = first or error
        assert first is not None
        raise first

    return convert


def _sequence(item: Converter, kind: str, build: Callable[[list[Any]], Any]) -> Converter:
    plain = item in (_any,)
    message = f"Input should be a valid {kind}"

    def convert(value: Any) -> Any:
        if not isinstance(value, list | tuple | set | frozenset):
            raise _Invalid(f"{kind}_type", message)
        if plain:
            return build(list(value))
        out = []
        for index, element in enumerate(value):
            try:
                out.append(item(element))
            except _Invalid as error:
                raise error.at(index) from None
        return build(out)

    return convert


def _fixed_tuple(items: list[Converter]) -> Converter:
    def convert(value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise _Invalid("tuple_type", "Input should be a valid tuple")
        if len(value) != len(items):
            raise _Invalid("tuple_length", f"Tuple should have {len(items)} items")
        out = []
        for index, (conv, element) in enumerate(zip(items, value, strict=True)):
            try:
                out.append(conv(element))
            except _Invalid as error:
                raise error.at(index) from None
        return tuple(out)

    return convert


def _mapping(key: Converter, item: Converter) -> Converter:
    def convert(value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _Invalid("dict_type", "Input should be a valid dictionary")
        if key is _any and item is _any:
            return dict(value)
        out = {}
        for name, element in value.items():
            try:
                out[key(name)] = item(element)
            except _Invalid as error:
                raise error.at(name) from None
        return out

    return convert


def _converter(tp: Any) -> Converter:
    """The conversion of one annotation (see the module docstring for what is known)."""
    simple = {str: _str, int: _int, float: _float, bool: _bool, bytes: _bytes, _NONE: _none}
    if tp is Any or tp is object:
        return _any
    if tp in simple:
        return simple[tp]
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is Literal:
        return _literal(args)
    if origin is Union or origin is types.UnionType:
        others = [arg for arg in args if arg is not _NONE]
        inner = (
            _converter(others[0]) if len(others) == 1 else _union([_converter(a) for a in others])
        )
        return _optional(inner) if len(others) < len(args) else inner
    if origin is list:
        return _sequence(_converter(args[0]) if args else _any, "list", list)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _sequence(_converter(args[0]), "tuple", tuple)
        if not args:
            return _sequence(_any, "tuple", tuple)
        return _fixed_tuple([_converter(arg) for arg in args])
    if origin is dict:
        key, item = args if args else (Any, Any)
        return _mapping(_converter(key), _converter(item))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum(tp)
    if isinstance(tp, type) and issubclass(tp, Model):
        return tp._convert
    raise TypeError(f"livefw.model: no conversion for the annotation {tp!r}")


def _bounded(convert: Converter, info: FieldInfo) -> Converter:
    if info.ge is None and info.gt is None:
        return convert
    ge, gt = info.ge, info.gt

    def bounded(value: Any) -> Any:
        value = convert(value)
        if ge is not None and not value >= ge:
            raise _Invalid("greater_than_equal", f"Input should be greater than or equal to {ge}")
        if gt is not None and not value > gt:
            raise _Invalid("greater_than", f"Input should be greater than {gt}")
        return value

    return bounded


# ------------------------------------------------------------------ the class


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise ValidationError(
        type(self).__name__,
        [{"loc": (name,), "msg": "Instance is frozen", "type": "frozen_instance"}],
    )


def _frozen_hash(self: Any) -> int:
    return hash((type(self), tuple(self._as_dict().values())))


#: names a model's annotations may not use as fields
_RESERVED = frozenset({"model_extra"})


@typing.dataclass_transform(kw_only_default=True, field_specifiers=(Field, FieldInfo))
class _ModelMeta(type):
    """Turns annotations into slots and field specs; resolves the types on first use."""

    __field_specs__: dict[str, FieldInfo]
    __model_frozen__: bool
    __model_extra_mode__: str

    def __new__(
        mcs,
        name: str,
        bases: tuple[type, ...],
        namespace: dict[str, Any],
        frozen: bool | None = None,
        extra: Literal["ignore", "forbid", "allow"] | None = None,
        **kwargs: Any,
    ) -> _ModelMeta:
        annotations = namespace.get("__annotations__", {})
        own: dict[str, FieldInfo] = {}
        for field_name, annotation in annotations.items():
            text = annotation if isinstance(annotation, str) else repr(annotation)
            if field_name.startswith("_") or field_name in _RESERVED or "ClassVar" in text:
                continue
            value = namespace.pop(field_name, _MISSING)
            info = value if isinstance(value, FieldInfo) else FieldInfo(value)
            info._source = (annotation, namespace.get("__module__", ""))
            own[field_name] = info
        inherited: dict[str, FieldInfo] = {}
        parent_frozen, parent_extra = False, "ignore"
        for base in reversed(bases):
            if isinstance(base, _ModelMeta):
                inherited.update(base.__field_specs__)
                parent_frozen = base.__model_frozen__
                parent_extra = base.__model_extra_mode__
        slots = [field_name for field_name in own if field_name not in inherited]
        mode = extra or parent_extra
        if mode == "allow" and not any(
            isinstance(base, _ModelMeta) and base.__model_extra_mode__ == "allow" for base in bases
        ):
            slots.append("_extra")
        namespace["__slots__"] = tuple(slots)
        namespace["__field_specs__"] = {**inherited, **own}
        is_frozen = parent_frozen if frozen is None else frozen
        namespace["__model_frozen__"] = is_frozen
        namespace["__model_extra_mode__"] = mode
        if is_frozen and not parent_frozen:
            namespace.setdefault("__setattr__", _frozen_setattr)
            namespace.setdefault("__delattr__", _frozen_setattr)
        if "__hash__" not in namespace and (is_frozen or not parent_frozen):
            namespace["__hash__"] = _frozen_hash if is_frozen else None
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)
        cls.__fields_ready__ = False  # type: ignore[attr-defined]
        return cls

    @property
    def model_fields(cls) -> dict[str, FieldInfo]:
        """Name -> :class:`FieldInfo` (with its resolved ``annotation``), in order."""
        cls._ready()  # type: ignore[attr-defined]
        return dict(cls.__field_specs__)


class Model(metaclass=_ModelMeta):
    """Base class of livefw's records (see the module docstring)."""

    __slots__ = ()
    __field_specs__: ClassVar[dict[str, FieldInfo]]
    __model_frozen__: ClassVar[bool]
    __model_extra_mode__: ClassVar[str]
    __fields_ready__: ClassVar[bool]
    _dumper: ClassVar[Callable[[Any], dict[str, Any]]]
    _plan: ClassVar[list[tuple[str, Converter, FieldInfo, type]]]

    @property
    def model_extra(self) -> dict[str, Any] | None:
        """The undeclared keys an ``extra="allow"`` model kept (else None)."""
        extra: dict[str, Any] | None = getattr(self, "_extra", None)
        return extra

    def __init__(self, **values: Any) -> None:
        try:
            self._fill(values)
        except _Invalid as error:
            raise type(self)._error(error) from None

    # ------------------------------------------------------------- building

    @classmethod
    def _ready(cls) -> None:
        if cls.__dict__.get("__fields_ready__"):
            return
        plan = []
        for name, info in cls.__field_specs__.items():
            annotation, module = info._source
            if isinstance(annotation, str):
                # livefw's own annotation text, as typing.get_type_hints evaluates it
                annotation = eval(annotation, vars(sys.modules[module]))
            info.annotation = annotation
            unbounded = info.ge is None and info.gt is None
            exact = annotation if annotation in _EXACT and unbounded else _Unmatched
            plan.append((name, _bounded(_converter(annotation), info), info, exact))
        cls._plan = plan
        # {"name": o.name, ...} as one expression: the dumps' inner loop (machine.json
        # at 10,000 simulated devices holds ~40,000 records); names are identifiers
        # from livefw's own class bodies
        body = ", ".join(f"{name!r}: o.{name}" for name in cls.__field_specs__)
        cls._dumper = staticmethod(eval(f"lambda o: {{{body}}}"))
        cls.__fields_ready__ = True

    def _fill(self, values: Mapping[str, Any]) -> None:
        cls = type(self)
        if not cls.__dict__.get("__fields_ready__"):
            cls._ready()
        put = object.__setattr__
        get = values.get
        for name, convert, info, exact in cls._plan:
            value = get(name, _MISSING)
            if type(value) is exact:  # already what the field holds: nothing to convert
                put(self, name, value)
                continue
            if value is _MISSING:
                if info.default_factory is not None:
                    value = info.default_factory()
                elif info.default is _MISSING:
                    raise _Invalid("missing", "Field required", (name,))
                else:
                    value = info.default
                    if isinstance(value, list | dict | set):
                        value = type(value)(value)
                put(self, name, value)
                continue
            try:
                put(self, name, convert(value))
            except _Invalid as error:
                raise error.at(name) from None
        if not values.keys() <= cls.__field_specs__.keys():
            extras = {k: v for k, v in values.items() if k not in cls.__field_specs__}
            if cls.__model_extra_mode__ == "forbid":
                raise _Invalid(
                    "extra_forbidden", "Extra inputs are not permitted", (next(iter(extras)),)
                )
            if cls.__model_extra_mode__ == "allow":
                put(self, "_extra", extras)
                return
        if cls.__model_extra_mode__ == "allow":
            put(self, "_extra", {})

    @classmethod
    def _convert(cls, value: Any) -> Any:
        """The conversion of a field whose annotation is this model."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise _Invalid(
                "model_type", f"Input should be a valid dictionary or instance of {cls.__name__}"
            )
        instance = cls.__new__(cls)
        instance._fill(value)
        return instance

    @classmethod
    def _error(cls, error: _Invalid) -> ValidationError:
        return ValidationError(
            cls.__name__, [{"loc": error.loc, "msg": error.msg, "type": error.kind}]
        )

    @classmethod
    def model_validate(cls: type[M], obj: Any) -> M:
        """``obj`` (a mapping, or an instance) as a validated instance.

        Raises:
            ValidationError: a value does not fit (see :meth:`ValidationError.errors`).
        """
        try:
            result: M = cls._convert(obj)
        except _Invalid as error:
            raise cls._error(error) from None
        return result

    @classmethod
    def model_validate_json(cls: type[M], data: str | bytes) -> M:
        """:meth:`model_validate` of a JSON document.

        Raises:
            ValidationError: not JSON (type ``json_invalid``), or a value does not fit.
        """
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as error:
            raise ValidationError(
                cls.__name__, [{"loc": (), "msg": f"Invalid JSON: {error}", "type": "json_invalid"}]
            ) from None
        return cls.model_validate(obj)

    # ------------------------------------------------------------- instances

    def _as_dict(self) -> dict[str, Any]:
        """The fields (then the extras) by name, in order; values as they are."""
        cls = type(self)
        values = cls._dumper(self)
        if cls.__model_extra_mode__ == "allow" and self.model_extra:
            values.update(self.model_extra)
        return values

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._as_dict() == other._as_dict()

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={value!r}" for name, value in self._as_dict().items())
        return f"{type(self).__name__}({inner})"

    def model_copy(self: M, *, update: Mapping[str, Any] | None = None) -> M:
        """A shallow copy, with ``update`` applied unvalidated (as pydantic's)."""
        cls = type(self)
        copy = cls.__new__(cls)
        for name in cls.__field_specs__:
            object.__setattr__(copy, name, getattr(self, name))
        if cls.__model_extra_mode__ == "allow":
            object.__setattr__(copy, "_extra", dict(self.model_extra or {}))
        for name, value in (update or {}).items():
            object.__setattr__(copy, name, value)
        return copy

    def model_dump(
        self, *, mode: Literal["python", "json"] = "python", exclude: Iterable[str] = ()
    ) -> dict[str, Any]:
        """The fields (and extras) as a dict; nested models as dicts.

        ``mode="json"``: only JSON types (tuples as lists, enums as their values).
        """
        skip = set(exclude)
        as_json = mode == "json"
        return {
            name: _dump(value, as_json)
            for name, value in self._as_dict().items()
            if name not in skip
        }

    def model_dump_json(self, *, indent: int | None = None, exclude: Iterable[str] = ()) -> str:
        """The fields as JSON: compact, or indented by ``indent``; non-ASCII kept."""
        obj: Any = self
        if exclude:
            skip = set(exclude)
            obj = {name: value for name, value in self._as_dict().items() if name not in skip}
        return json.dumps(
            obj,
            default=_json_default,
            ensure_ascii=False,
            indent=indent,
            separators=(",", ":") if indent is None else (",", ": "),
        )


def _dump(value: Any, as_json: bool) -> Any:
    if type(value) in _SCALARS:
        return value
    if isinstance(value, Model):
        return {name: _dump(item, as_json) for name, item in value._as_dict().items()}
    if isinstance(value, list):
        return [_dump(item, as_json) for item in value]
    if isinstance(value, tuple):
        items = [_dump(item, as_json) for item in value]
        return items if as_json else tuple(items)
    if isinstance(value, dict):
        return {key: _dump(item, as_json) for key, item in value.items()}
    if as_json and isinstance(value, enum.Enum):
        return value.value
    if as_json and isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Model):
        return value._as_dict()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
