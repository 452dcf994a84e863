"""Presets plus overrides: turn names, a JSON file and ``--set`` pairs into the planner's values.

A JSON file (``--config FILE.json``) may hold the sections ``model``, ``gpu``,
``intra_link`` and ``inter_link`` (each: field -> value, applied over the preset) and the
top-level keys ``efficiency`` and ``memory_cap``. ``--set section.field=value`` does the
same from the command line and wins over the file, e.g. ``--set model.layers=48``,
``--set gpu.peak_flops=4e14``, ``--set inter_link.bandwidth=5e10``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["OptionError", "choices", "parse_bytes", "read_json_object", "load_config", "parse_sets", "override", "SECTIONS"]

SECTIONS = ("model", "gpu", "intra_link", "inter_link")
_TOP = ("efficiency", "memory_cap")
_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}


class OptionError(ValueError):
    """A bad preset name, file or override: reported in one line, exit code 2."""


def choices(text: str, allowed: Sequence[str], flag: str, every: Sequence[str] | None = None) -> tuple[str, ...]:
    """Comma-separated values, each one of ``allowed`` (``all`` means ``every``, default
    every one, for --schedules)."""
    values = tuple(v.strip() for v in text.split(","))
    if text.strip() == "all" and flag == "--schedules":
        return tuple(allowed if every is None else every)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise OptionError(f"{flag}: unknown value {bad[0]!r}; choose from {', '.join(allowed)}")
    return values


def parse_bytes(text: str | float) -> float:
    """``80GiB``, ``141 GB``, ``8.6e10`` -> bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if match is None or match.group(2).lower() not in _UNITS:
            raise OptionError(f"expected a size such as 80GiB, 141GB or 8.6e10, got {text!r}")
        value, unit = float(match.group(1)), match.group(2).lower()
    if not value > 0:
        raise OptionError(f"a memory size must be > 0, got {text!r}")
    return value * _UNITS[unit]


def read_json_object(path: str, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; a missing, unreadable or malformed file is one line
    naming ``what`` and the file."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise OptionError(f"cannot read {what} {path!r}: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise OptionError(f"{what} {path!r} is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise OptionError(f"{what} {path!r} must hold a JSON object")
    return data


def load_config(path: str | None) -> dict[str, Any]:
    """The JSON file's sections (empty without a file), checked for unknown keys."""
    if path is None:
        return {}
    data = read_json_object(path, "config")
    for key, value in data.items():
        if key not in SECTIONS + _TOP:
            raise OptionError(f"config {path!r}: unknown key {key!r}; expected {', '.join(SECTIONS + _TOP)}")
        if key in SECTIONS and not isinstance(value, dict):
            raise OptionError(f"config {path!r}: {key!r} must be an object of field: value")
    return data


def parse_sets(pairs: Sequence[str], config: dict[str, Any]) -> dict[str, Any]:
    """Apply ``section.field=value`` pairs over ``config`` (values read as JSON, else text)."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise OptionError(f"--set takes section.field=value, got {pair!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if key in _TOP:
            merged[key] = value
            continue
        section, dot, name = key.partition(".")
        if not dot or section not in SECTIONS:
            raise OptionError(f"--set {pair!r}: key must be one of {', '.join(_TOP)} or "
                              f"<{'|'.join(SECTIONS)}>.<field>")
        merged.setdefault(section, {})[name] = value
    return merged


def override(base, values: Mapping[str, Any], section: str):
    """``base`` (a frozen dataclass) with ``values`` replaced; unknown fields and bad values
    raise OptionError."""
    known = {f.name for f in dataclasses.fields(base)}
    for name in values:
        if name not in known:
            raise OptionError(f"{section} has no field {name!r}; fields: {', '.join(sorted(known))}")
    try:
        return dataclasses.replace(base, **values)
    except (TypeError, ValueError) as err:
        said = str(err)
        raise OptionError(said if said.startswith(f"{section} ") else f"{section}: {said}") from None
