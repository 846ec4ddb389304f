"""Typed dataclass configs ↔ JSON-ready dicts, with the field types checked on the way in.

Every config of the library (tokenizer, transformer, training, data, sampling) is a dataclass whose annotations are
plain types: int, float, bool, str, tuple[int, ...] and `X | None`. `config_from_dict` refuses unknown fields and
values of the wrong type with one line that names the source and the field, so a damaged or hand-edited config.json
never reaches a constructor as a confusing traceback.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from functools import cache
from typing import Any, TypeVar

from nextscale.errors import UsageError

T = TypeVar("T")


@cache
def field_types(config_class: type) -> dict[str, Any]:
    """{field name: resolved annotation} of a dataclass (string annotations resolved)."""
    hints = typing.get_type_hints(config_class)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_class)}


def unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """`X | None` → (X, True); anything else → (annotation, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def coerce(annotation: Any, value: Any, where: str) -> Any:
    """`value` checked against `annotation` (and lists turned into tuples); raises ValueError naming `where`."""
    inner, optional = unwrap_optional(annotation)
    if value is None:
        if optional:
            return None
        raise UsageError(f"{where} must not be empty (null)")
    if dataclasses.is_dataclass(inner) and isinstance(inner, type):
        if not isinstance(value, dict):
            raise UsageError(f"{where} must be an object with the fields of {inner.__name__}")
        return config_from_dict(inner, value, where)
    if typing.get_origin(inner) is tuple:
        item_type = typing.get_args(inner)[0]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{where} must be a list, got {type(value).__name__}")
        return tuple(coerce(item_type, item, f"{where}[{i}]") for i, item in enumerate(value))
    if inner is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false, got {value!r}")
        return value
    if inner is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{where} must be an integer, got {value!r}")
        return value
    if inner is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise UsageError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if inner is str:
        if not isinstance(value, str):
            raise UsageError(f"{where} must be a string, got {value!r}")
        return value
    return value  # other annotations (Any, dicts) are taken as they are


def config_from_dict(config_class: type[T], data: dict, source: str = "config") -> T:
    """Build `config_class` from `data`, refusing unknown fields and wrongly typed values (ValueError naming
    `source` and the field). Missing fields take their defaults. The constructor's own validation still runs."""
    if not isinstance(data, dict):
        raise UsageError(f"{source} must be a JSON object with the fields of {config_class.__name__}")
    types_ = field_types(config_class)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise UsageError(f"{source}: {config_class.__name__} has no field(s) {', '.join(unknown)}")
    values = {name: coerce(types_[name], value, f"{source}: {name}") for name, value in data.items()}
    try:
        return config_class(**values)
    except (TypeError, ValueError) as err:
        raise UsageError(f"{source}: {err}") from None


def config_to_dict(config: Any) -> dict:
    """A dataclass config as a JSON-ready dict (tuples become lists, nested configs become dicts)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return plain(config)
