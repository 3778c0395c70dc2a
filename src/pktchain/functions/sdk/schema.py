"""Function configuration: a dataclass declares it, one call validates all of it.

A function's configuration is a (frozen) dataclass whose field types say what
is accepted: ``int``, ``float``, ``str``, ``bool``, enums (by value), IP
addresses and networks (from strings), ``X | None``, ``list[X]`` /
``tuple[X, ...]``, ``dict[str, X]`` and nested dataclasses. Range and other
checks, and the field's help text, ride in its metadata (:func:`check`).
:func:`load_config` reads a mapping (from YAML, JSON, the API or the command
line) into that dataclass and reports every wrong field at once, each with its
dotted path (``rules[2].dport``), as a :class:`ConfigError`: Click's habit of
validating a whole configuration before anything runs.

This is hand-written rather than pydantic on purpose: ``pktchain fn`` must
start in well under 0.1 s and pydantic alone takes longer than that to import.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from enum import Enum
from typing import Any, TypeVar

from pktchain.errors import ConfigError, FieldError

__all__ = ["ConfigError", "FieldError", "check", "describe", "load_config", "sections", "walk"]

T = TypeVar("T")

_IP_TYPES: dict[type, Callable[[str], Any]] = {
    ipaddress.IPv4Address: ipaddress.IPv4Address,
    ipaddress.IPv6Address: ipaddress.IPv6Address,
    ipaddress.IPv4Network: lambda text: ipaddress.IPv4Network(text, strict=False),
    ipaddress.IPv6Network: lambda text: ipaddress.IPv6Network(text, strict=False),
}


def check(
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    test: Callable[[Any], str | None] | None = None,
    help: str = "",
) -> dict[str, Any]:
    """Field metadata: ``field(default=1, metadata=check(minimum=1, help="..."))``.

    ``test`` returns an error message, or None when the value is fine. ``help``
    says what the field means, in a line: ``pktchain fn KIND --help-config``,
    ``--schema`` and the function's page in docs/functions/ show it.
    """
    return {"minimum": minimum, "maximum": maximum, "test": test, "help": help}


def load_config(cls: type[T], data: Mapping[str, Any] | None, *, subject: str = "") -> T:
    """Build `cls` from `data`, or raise ConfigError listing every wrong field."""
    errors: list[FieldError] = []
    value = _convert(cls, {} if data is None else data, "", errors)
    if errors:
        raise ConfigError(errors, subject=subject or _name(cls))
    return typing.cast("T", value)


def describe(cls: type[Any]) -> list[dict[str, Any]]:
    """The schema as data (for ``pktchain fn --schema`` and the API): one row per field.

    A row has the field's ``name``, ``type``, ``default`` (or ``required``),
    ``minimum`` and ``maximum`` when bounded, and ``help``; a field that holds
    a dataclass, or a collection of them, has their rows as ``fields``.
    """
    hints = typing.get_type_hints(cls)
    rows = []
    for spec in dataclasses.fields(cls):
        if not spec.init:
            continue
        kind = hints[spec.name]
        row: dict[str, Any] = {"name": spec.name, "type": _type_name(kind)}
        if spec.default is not dataclasses.MISSING:
            row["default"] = _plain(spec.default)
        elif spec.default_factory is not dataclasses.MISSING:
            row["default"] = _plain(spec.default_factory())
        else:
            row["required"] = True
        for key in ("minimum", "maximum"):
            if spec.metadata.get(key) is not None:
                row[key] = spec.metadata[key]
        if spec.metadata.get("help"):
            row["help"] = spec.metadata["help"]
        for nested, _many in _nested(kind):
            row["fields"] = describe(nested)
            break
        rows.append(row)
    return rows


def walk(cls: type[Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field of `cls` with its :func:`describe` row, nested ones under their path.

    The path of a field of a nested dataclass is dotted (``health.interval``),
    with ``[]`` after a collection of them (``rules[].dport``: the field of each
    rule).
    """
    hints = typing.get_type_hints(cls)
    for row in describe(cls):
        path = prefix + row["name"]
        yield path, row
        for nested, many in _nested(hints[row["name"]]):
            yield from walk(nested, f"{path}[]." if many else f"{path}.")


def sections(cls: type[Any], path: str = "") -> Iterator[tuple[str, type[Any]]]:
    """`cls` (path "") and every dataclass nested in it, each with its path.

    The path is that of the field holding it (``health``), with ``[]`` when
    the field holds a collection of them (``services[].backends[]``).
    """
    yield path, cls
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        if not spec.init:
            continue
        where = f"{path}.{spec.name}" if path else spec.name
        for nested, many in _nested(hints[spec.name]):
            yield from sections(nested, f"{where}[]" if many else where)


def _nested(kind: Any, many: bool = False) -> Iterator[tuple[type[Any], bool]]:
    """The dataclasses inside a field's type; ``many`` when they are items of a collection."""
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        yield kind, many
        return
    origin = typing.get_origin(kind)
    collection = origin in (list, tuple, dict)
    for arg in typing.get_args(kind):
        yield from _nested(arg, many or collection)


def _convert(kind: Any, value: Any, path: str, errors: list[FieldError]) -> Any:
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _convert(options[0], value, path, errors)
        for option in options:
            trial: list[FieldError] = []
            converted = _convert(option, value, path, trial)
            if not trial:
                return converted
        errors.append(FieldError(path, f"expected {_type_name(kind)}, got {value!r}"))
        return None
    if origin is typing.Literal:
        if value not in args:
            errors.append(FieldError(path, f"must be one of {', '.join(map(repr, args))}"))
        return value
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return _dataclass(kind, value, path, errors)
    if origin in (list, tuple) or kind in (list, tuple):
        if not isinstance(value, list | tuple):
            errors.append(FieldError(path, f"expected a list, got {_what(value)}"))
            return ()
        item = args[0] if args else Any
        items = [_convert(item, v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or kind is tuple else items
    if origin is dict or kind is dict:
        if not isinstance(value, Mapping):
            errors.append(FieldError(path, f"expected a mapping, got {_what(value)}"))
            return {}
        item = args[1] if len(args) == 2 else Any
        return {str(k): _convert(item, v, _join(path, str(k)), errors) for k, v in value.items()}
    if isinstance(kind, type) and issubclass(kind, Enum):
        try:
            return kind(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in kind)
            errors.append(FieldError(path, f"must be one of {choices}, got {value!r}"))
            return None
    if kind in _IP_TYPES:
        if isinstance(value, kind):
            return value
        try:
            return _IP_TYPES[kind](str(value))
        except ValueError as exc:
            errors.append(FieldError(path, str(exc)))
            return None
    if kind is bool:
        if not isinstance(value, bool):
            errors.append(FieldError(path, f"expected true or false, got {value!r}"))
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(FieldError(path, f"expected an integer, got {value!r}"))
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(FieldError(path, f"expected a number, got {value!r}"))
            return value
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            errors.append(FieldError(path, f"expected a string, got {value!r}"))
        return value
    errors.append(FieldError(path, f"unsupported field type {_type_name(kind)}"))
    return value


def _dataclass(kind: type[Any], value: Any, path: str, errors: list[FieldError]) -> Any:
    if isinstance(value, kind):
        return value
    if not isinstance(value, Mapping):
        errors.append(FieldError(path, f"expected a mapping, got {_what(value)}"))
        return None
    hints = typing.get_type_hints(kind)
    specs = {spec.name: spec for spec in dataclasses.fields(kind) if spec.init}
    for key in value:
        if key not in specs:
            known = ", ".join(sorted(specs))
            errors.append(FieldError(_join(path, str(key)), f"unknown field (known: {known})"))
    before = len(errors)
    kwargs: dict[str, Any] = {}
    for name, spec in specs.items():
        where = _join(path, name)
        if name not in value:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                errors.append(FieldError(where, "required"))
            continue
        mark = len(errors)
        converted = _convert(hints[name], value[name], where, errors)
        if len(errors) == mark and converted is not None:
            _constraints(spec, converted, where, errors)
        kwargs[name] = converted
    if len(errors) > before:
        return None
    try:
        made = kind(**kwargs)
    except (TypeError, ValueError) as exc:
        # __post_init__ checks that involve several fields.
        errors.append(FieldError(path, str(exc)))
        return None
    return made


def _constraints(
    spec: dataclasses.Field[Any], value: Any, path: str, errors: list[FieldError]
) -> None:
    minimum = spec.metadata.get("minimum")
    maximum = spec.metadata.get("maximum")
    if minimum is not None and isinstance(value, int | float) and value < minimum:
        errors.append(FieldError(path, f"must be at least {minimum}, got {value}"))
    if maximum is not None and isinstance(value, int | float) and value > maximum:
        errors.append(FieldError(path, f"must be at most {maximum}, got {value}"))
    test = spec.metadata.get("test")
    if test is not None:
        message = test(value)
        if message:
            errors.append(FieldError(path, message))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _what(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _name(cls: type[Any]) -> str:
    return getattr(cls, "__name__", str(cls))


def _type_name(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(kind))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(kind))
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in typing.get_args(kind))
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if kind is type(None):
        return "null"
    return getattr(kind, "__name__", str(kind))


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    return value
