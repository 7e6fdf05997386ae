"""One serialiser for every config dataclass: fields in, JSON-ready data out, with a format tag.

A config class names its file format in a ``FORMAT`` class attribute ("effigy-quant-config/1"); the
data carries it so that a file made for another kind of config, or by a later version, is refused by
name instead of half-loaded. Nested config dataclasses (a ``QuantSpec`` inside a ``QuantConfig``) are
rebuilt from the field types, tuples come back as tuples, and unknown fields are an error.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from effigy.errors import EffigyError

T = TypeVar("T")


def config_to_dict(config: Any) -> dict:
    """``config``'s fields as JSON-ready data (nested dataclasses as dicts, tuples as lists), with its
    class's ``FORMAT`` tag under ``"format"`` where the class has one."""
    data = {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
    tag = getattr(type(config), "FORMAT", None)
    return data if tag is None else {"format": tag, **data}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_from_dict(cls: type[T], data: dict, error: type[EffigyError] = EffigyError,
                     untagged_ok: bool = False) -> T:
    """Rebuild a ``cls`` from :func:`config_to_dict`'s output.

    Args:
        cls: the config dataclass.
        data: the mapping read from JSON.
        error: the :class:`EffigyError` subclass a malformed file raises.
        untagged_ok: accept data without a ``"format"`` key (files written before the tag existed).

    Returns:
        The config; fields missing from ``data`` take their defaults.
    """
    if not isinstance(data, dict):
        raise error(f"expected a {cls.__name__} as a JSON object, got {type(data).__name__}.")
    tag = getattr(cls, "FORMAT", None)
    found = data.get("format")
    if tag is not None and found != tag and not (found is None and untagged_ok):
        raise error(f"not a {cls.__name__} file (format {found!r}, expected {tag!r}).")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known) - {"format"})
    if unknown:
        raise error(f"unknown {cls.__name__} fields {unknown}; is this file from another effigy version?")
    hints = typing.get_type_hints(cls)
    values = {name: _typed(hints[name], value, error, f"{cls.__name__}.{name}") for name, value in data.items()
              if name in known}
    try:
        return cls(**values)
    except TypeError as problem:
        raise error(f"malformed {cls.__name__}: {problem}") from None


def _typed(hint: Any, value: Any, error: type[EffigyError], field: str) -> Any:
    """``value`` as the type ``hint`` names (a nested config dataclass, a tuple, a scalar), or one error
    naming the field: ``"no"`` is not a bool, ``"abc"`` is not a tuple of names, ``4.7`` is not an int."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    for option in options:
        matched, typed = _match(option, value, error, field)
        if matched:
            return typed
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise error(f"{field} must be {names}, got {value!r:.60}.")


def _match(option: Any, value: Any, error: type[EffigyError], field: str) -> tuple[bool, Any]:
    origin = typing.get_origin(option) or option
    if option is type(None) or option is None:
        return value is None, None
    if dataclasses.is_dataclass(option):
        return (True, config_from_dict(option, value, error, untagged_ok=True)) if isinstance(value, dict) else \
            (False, None)
    if origin is tuple:
        if not isinstance(value, list):
            return False, None
        args = [a for a in typing.get_args(option) if a is not Ellipsis]
        return True, tuple(_typed(args[0], v, error, field) for v in value) if args else tuple(value)
    if origin is dict:
        return isinstance(value, dict), value
    if option is bool:
        return isinstance(value, bool), value
    if option is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if option is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), float(value) if isinstance(
            value, (int, float)) else value
    if option is Any:
        return True, value
    return isinstance(value, origin) if isinstance(origin, type) else True, value


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def read_json_file(path: Any, what: str, error: type[EffigyError] = EffigyError) -> Any:
    """The JSON data of ``path``, or one short line naming the file and what it should have been: a missing
    file, a folder, binary or non-JSON content all end here (never a decoder traceback or a quoted blob).

    Args:
        path: the file.
        what: what the file should be ("an allocation from `effigy kvquant calibrate`").
        error: the :class:`EffigyError` subclass to raise.
    """
    import json
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise error(f"no file at {path}: pass {what}.")
    if not path.is_file():
        raise error(f"{path} is not a file: pass {what}.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as problem:
        reason = problem.strerror if isinstance(problem, OSError) else type(problem).__name__
        raise error(f"{path} is not {what} (unreadable as JSON: {reason}).") from None


def require(condition: bool, path: Any, rule: str, error: type[EffigyError] = EffigyError) -> None:
    """One schema rule of a file: ``rule`` names the field and what it must be."""
    if not condition:
        raise error(f"{path}: {rule}.")
