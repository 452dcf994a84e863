"""Least-squares fit of ``seconds = latency + bytes / bandwidth``: links, rings, ping-pongs.

A pure function of measured (size, time) samples, so that calibration from a trace, a
profile's ping-pong and a profile's all-reduce all fit the same way. Samples are first
reduced to one median per size (a few slow repetitions do not tilt the line), then a
straight line goes through the medians, each residual relative to its median: sizes
spread over decades (8 bytes to megabytes) then count alike, and the largest do not
decide the latency alone. Where the line cannot be read as a link the fit
falls back, and says why:

* fewer than two sizes: latency and bandwidth cannot be told apart; the whole median
  time is latency (bandwidth inf), which predicts the measured size exactly;
* time not growing with size: latency only, the median over sizes;
* a negative intercept: refit through the origin (bandwidth only, latency 0).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["LinkFit", "fit_link"]


class LinkFit(NamedTuple):
    latency: float
    """Seconds per message, whatever its size."""
    bandwidth: float
    """Bytes per second; inf when the samples cannot tell it."""
    note: str
    """Why the fit fell back (empty when it did not)."""


def fit_link(sizes: Sequence[float], seconds: Sequence[float], what: str = "transfer") -> LinkFit:
    """Fit ``seconds = latency + size / bandwidth`` over per-size medians; ``what`` names the
    samples in the note (e.g. "all-reduce")."""
    x_all, y_all = np.asarray(sizes, dtype=float), np.asarray(seconds, dtype=float)
    if x_all.shape != y_all.shape or x_all.ndim != 1 or len(x_all) == 0:
        raise ValueError(f"fit_link needs as many sizes as times (at least one), got {x_all.shape} and {y_all.shape}")
    if not (np.isfinite(x_all).all() and np.isfinite(y_all).all()) or (x_all < 0).any() or (y_all < 0).any():
        raise ValueError("fit_link takes finite sizes and times >= 0")
    x = np.unique(x_all)
    y = np.array([np.median(y_all[x_all == size]) for size in x])
    if len(x) < 2:
        return LinkFit(float(y[0]), math.inf, f"one {what} size: its time taken as latency only")
    weights = 1.0 / np.where(y > 0, y, y[y > 0].min() if (y > 0).any() else 1.0)
    slope, intercept = np.polyfit(x, y, 1, w=weights)
    if slope <= 0:
        return LinkFit(float(np.median(y)), math.inf, f"{what} time does not grow with size: latency only")
    if intercept < 0:  # no negative latency: the best line through the origin
        return LinkFit(0.0, float((x @ x) / (x @ y)), "")
    return LinkFit(float(intercept), float(1.0 / slope), "")
