"""Typed configuration from TOML files and ``--set key=value`` overrides.

Every job reads its defaults from a TOML file in ``conf/``, applies command-line overrides
(``--set mel.n_mels=64``) and turns the nested dict into frozen dataclasses. Unknown keys are
refused so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from ser_udfs.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A configuration file or override that cannot be used."""


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file into a nested dict, with a clear error for a missing or bad file."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def parse_override_value(text: str) -> Any:
    """Parse the value of one ``key=value`` override as a TOML value, else keep it as a string.

    ``64`` → int, ``0.5`` → float, ``true`` → bool, ``[1, 2]`` → list, ``"a b"`` → str,
    ``centre`` → ``"centre"``.
    """
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a deep copy of ``config`` with dotted ``key=value`` overrides applied.

    Parameters
    ----------
    config
        Nested dict, e.g. from :func:`load_toml`.
    overrides
        Strings such as ``"mel.n_mels=64"``; the key path must already exist in ``config``.
    """
    result = json.loads(json.dumps(config))
    for item in overrides:
        key, sep, raw_value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. mel.n_mels=64)")
        parts = key.strip().split(".")
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if not isinstance(child, dict):
                known = ", ".join(sorted(node))
                raise ConfigError(
                    f"override {item!r}: no section {'.'.join(parts[: depth + 1])!r} (known: {known})"
                )
            node = child
        if parts[-1] not in node:
            known = ", ".join(sorted(node))
            raise ConfigError(f"override {item!r}: unknown key {key.strip()!r} (known here: {known})")
        node[parts[-1]] = parse_override_value(raw_value.strip())
    return result


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        return from_dict(annotation, value, where=where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        item_type = args[0] if args else Any
        return tuple(_coerce(v, item_type, f"{where}[]") for v in value)
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        return dict(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a nested dict, refusing unknown keys.

    Missing keys take the dataclass defaults; values are type-checked against the annotations.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
            f"known: {', '.join(sorted(names))}"
        )
    kwargs = {
        name: _coerce(value, hints[name], f"{where}.{name}" if where else name)
        for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (tuples become lists), JSON-serialisable."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def resolve_config(
    cls: type[T], path: str | Path, overrides: Sequence[str] = ()
) -> T:
    """Load ``path``, apply ``overrides`` and build ``cls``: what every job does with its config."""
    return from_dict(cls, apply_overrides(load_toml(path), overrides))


def to_toml(config: Any) -> str:
    """A config dataclass as TOML text that :func:`resolve_config` reads back (a ``None`` value,
    which TOML cannot hold, is written as a comment)."""
    lines: list[str] = []

    def emit(table: dict[str, Any], name: str) -> None:
        scalars = {key: value for key, value in table.items() if not isinstance(value, dict)}
        if name and scalars:
            lines.extend(["", f"[{name}]"])
        for key, value in scalars.items():
            lines.append(f"# {key}: not set" if value is None else f"{key} = {_toml_value(value)}")
        for key, value in table.items():
            if isinstance(value, dict):
                emit(value, f"{name}.{key}" if name else key)

    emit(to_dict(config), "")
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)

