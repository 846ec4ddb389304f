"""Command-line options generated from the dataclass configs, so that flags and fields cannot drift apart.

Each field `name: type = default  # comment` becomes `--name` (underscores as dashes) with the field's type, its
comment as help and its default shown. Options default to None ("not given"), so a command can layer its values:
the dataclass defaults, then a preset or recipe, then the flags the user typed (`given`). Booleans become
`--flag/--no-flag`. A command may rename a flag (`output_dir` → `--out`), add choices, or leave a field out.
`to_argv` goes the other way: values back to the flags that set them (reproducing commands, the quickstart's steps).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import re
import typing
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from nextscale.config_io import field_types, unwrap_optional

_FIELD_LINE = re.compile(r"^\s+(\w+)\s*:[^#]*?(?:#\s*(?P<comment>.*))?$")


@cache
def field_comments(config_class: type) -> dict[str, str]:
    """{field: its trailing comment} read from the class source; fields without a comment are absent."""
    try:
        source = inspect.getsource(config_class)
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(config_class)}
    comments = {}
    for line in source.splitlines():
        match = _FIELD_LINE.match(line)
        if match and match.group(1) in names and match.group("comment") and match.group(1) not in comments:
            comments[match.group(1)] = match.group("comment").strip()
    return comments


def flag_of(name: str, renames: Mapping[str, str] | None = None) -> str:
    return (renames or {}).get(name, "--" + name.replace("_", "-"))


def _value_type(annotation: Any):
    """A converter of one command-line word to `annotation`'s type; argparse reports its errors as usage errors."""
    inner, _ = unwrap_optional(annotation)
    if typing.get_origin(inner) is tuple:
        what = "list of integers like 1_2_3_4"
    else:
        what = {int: "integer", float: "finite number"}.get(inner, "value")

    def parse(text: str) -> Any:
        try:
            if inner is int:
                return int(text)
            if inner is float:
                value = float(text)
                if not math.isfinite(value):
                    raise ValueError(text)
                return value
            if typing.get_origin(inner) is tuple:
                from nextscale.scales import parse_patch_nums  # deferred: it loads torch

                return parse_patch_nums(text)
            return text
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an' if what[0] in 'aeiou' else 'a'} {what}") from None

    parse.__name__ = what
    return parse


def add_config_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    config_class: type,
    *,
    defaults: Mapping[str, Any] | None = None,
    exclude: Iterable[str] = (),
    renames: Mapping[str, str] | None = None,
    choices: Mapping[str, Iterable] | None = None,
    helps: Mapping[str, str] | None = None,
    show_defaults: bool = True,
    preset: tuple[str, Mapping[str, Any]] | None = None,
) -> None:
    """Add one option per field of `config_class` (except `exclude`). `defaults` only changes what the help shows
    (the command applies it when layering); options themselves default to None. `show_defaults=False` for fields
    whose default comes from elsewhere; `preset=(name, values)` shows those as "the preset's; NAME: value"."""
    comments = field_comments(config_class)
    shown = {f.name: f.default for f in dataclasses.fields(config_class) if f.default is not dataclasses.MISSING}
    shown.update(defaults or {})
    for name, annotation in field_types(config_class).items():
        if name in exclude:
            continue
        flag = flag_of(name, renames)
        text = (helps or {}).get(name) or comments.get(name, "")
        options = list((choices or {}).get(name, ())) or None
        default_text = shown.get(name)
        if isinstance(default_text, tuple):
            default_text = "_".join(map(str, default_text))
        suffix = f" (default: {default_text})" if name in shown and default_text is not None else ""
        if not show_defaults:
            suffix = ""
        if preset is not None and preset[1].get(name) is not None:  # argparse lists the choices themselves
            suffix = f" (default: the preset's; {preset[0]}: {format_value(preset[1][name])})"
        help_text = (text + suffix).strip().replace("%", "%%") or None  # argparse formats help with %
        kwargs: dict[str, Any] = dict(dest=name, default=None, help=help_text)
        inner, _ = unwrap_optional(annotation)
        if inner is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if options:
            kwargs["choices"] = options
        else:
            kwargs["metavar"] = flag.lstrip("-").upper().replace("-", "_")
        parser.add_argument(flag, type=_value_type(annotation), **kwargs)


def format_value(value: Any) -> str:
    """One flag value as a command line spells it: 4 rather than 4.0, 1_2_3 for a schedule."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (tuple, list)):
        return "_".join(map(str, value))
    return str(value)


def to_argv(values: Mapping[str, Any], renames: Mapping[str, str] | None = None) -> list[str]:
    """The flags that set `values` ({field: value}) on the command line, in their order: `--name value`, a boolean
    as `--name` or `--no-name`; None (not given) is left out. The inverse of `add_config_options` + `given`."""
    argv: list[str] = []
    for name, value in values.items():
        if value is None:
            continue
        flag = flag_of(name, renames)
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag.removeprefix("--"))
        else:
            argv += [flag, format_value(value)]
    return argv


def given(args: argparse.Namespace, config_class: type, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The fields of `config_class` the user set on the command line (options left at None are absent)."""
    return {
        name: getattr(args, name)
        for name in field_types(config_class)
        if name not in exclude and getattr(args, name, None) is not None
    }


def build_config(config_class: type, args: argparse.Namespace, *layers: Mapping[str, Any], **fixed: Any):
    """`config_class` from its defaults, then each of `layers` (presets, recipes), then the given flags, then
    `fixed` (values the command sets itself)."""
    values: dict[str, Any] = {}
    for layer in layers:
        values.update(layer)
    values.update(given(args, config_class, exclude=fixed))
    values.update(fixed)
    return config_class(**values)
