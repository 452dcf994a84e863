"""Checks of single :class:`simulator.Costs` values, each failing in one line that names the field."""

from __future__ import annotations

import math
import numbers
from typing import Mapping, Sequence

__all__ = ["check_number", "check_finite", "values_of"]


def check_number(name: str, value: float, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"Costs.{name} must be a number, got {value!r}")
    if math.isnan(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"Costs.{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")


def check_finite(name: str, value: float, positive: bool = False) -> None:
    check_number(name, value, positive)
    if math.isinf(value):
        raise ValueError(f"Costs.{name} must be finite, got {value!r}")


def values_of(name: str, value, keyed: bool) -> list[float]:
    """The numbers inside a scalar, a sequence or (``keyed``) a link mapping."""
    if isinstance(value, Mapping):
        if not keyed:
            raise ValueError(f"Costs.{name} takes a number or one number per stage, not a mapping")
        for key in value:
            if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, int) for k in key)):
                raise ValueError(f"Costs.{name} keys must be (src_rank, dst_rank) pairs, got {key!r}")
        return list(value.values())
    if isinstance(value, (str, bytes)):
        raise ValueError(f"Costs.{name} must be a number, got {value!r}")
    if isinstance(value, Sequence) and not keyed:
        if len(value) == 0:
            raise ValueError(f"Costs.{name} is an empty list")
        return list(value)
    return [value]
