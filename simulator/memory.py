"""Activation memory over time, read off any trace (simulated or measured).

Accounting, per rank and per (stage, microbatch):
  * the forward F allocates ``act_memory[stage]`` when it starts (it is what F stores for
    the backward) and counts the microbatch as in flight;
  * a full backward B frees all of it when it ends, and the microbatch leaves flight;
  * a split backward's I frees ``(1 - w) * act_memory[stage]`` when it ends and the
    microbatch leaves flight (its input gradient is gone downstream); W frees the
    remaining ``w * act_memory[stage]`` (what the weight gradient still needs: the layer
    inputs and output gradients) when it ends. ``w`` is ``Costs.w_memory_fraction``.
At one instant frees come before allocations: a rank's compute is sequential, so a
backward ending at t is done before the forward starting at t allocates.

So in-flight counts give the closed forms (GPipe m on rank 0, 1F1B min(m, p - r) on
rank r, ZB-H1 the same as 1F1B, since I frees as early as 1F1B's B), while bytes also
show ZB-H1's deferred W passes, each holding the share w until it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["memory_timeline", "peak_memory", "peak_memory_of", "PeakMemory"]


@dataclass(frozen=True)
class PeakMemory:
    """Highest activation memory of one rank and the most microbatch-stages in flight."""

    bytes: float
    inflight: int


def _per_stage(value: float | Sequence[float], stages: np.ndarray) -> np.ndarray:
    if isinstance(value, (int, float)):
        return np.full(len(stages), float(value))
    table = np.asarray(value, dtype=float)
    if len(stages) and stages.max() >= len(table):
        raise ValueError(f"act_memory has {len(table)} values but the trace has stage {stages.max()}")
    return table[stages]


def _received_gradients(trace: pd.DataFrame, grad_memory: float | Sequence[float]) -> dict[str, np.ndarray]:
    """Events of received output gradients: held from their RECV_B's end until the last op
    of the same rank, stage and microbatch that needs it ends: its B, or under a split
    backward its W, whose weight gradient is made from the output gradient its I was
    given (a measured run counts those buffers, and keeps them until then)."""
    recv = trace[trace["kind"] == "RECV_B"]
    back = trace[trace["kind"].isin(["B", "W"])].merge(recv[["rank", "stage", "mb"]], on=["rank", "stage", "mb"])
    size_in = _per_stage(grad_memory, recv["stage"].to_numpy().astype(np.int64))
    size_out = _per_stage(grad_memory, back["stage"].to_numpy().astype(np.int64))
    return {"rank": np.concatenate([recv["rank"].to_numpy(), back["rank"].to_numpy()]),
            "time": np.concatenate([recv["end"].to_numpy(), back["end"].to_numpy()]),
            "alloc": np.concatenate([np.ones(len(recv), bool), np.zeros(len(back), bool)]),
            "bytes": np.concatenate([size_in, -size_out]), "inflight": np.zeros(len(recv) + len(back), np.int64)}


def _compute_events(kind: np.ndarray, stage: np.ndarray, rank: np.ndarray, start: np.ndarray, end: np.ndarray,
                    act_memory: float | Sequence[float], w_fraction: float) -> dict[str, np.ndarray]:
    """The allocation (F) and free (B, I, W) events of compute ops, in row order; ``kind``
    holds the op kind names."""
    rows = np.isin(kind, ["F", "B", "I", "W"])
    kind = kind[rows]
    stage = stage[rows].astype(np.int64)
    size = _per_stage(act_memory, stage)
    forward = kind == "F"
    share = np.select([forward, kind == "B", kind == "I", kind == "W"],
                      [size, -size, -(1 - w_fraction) * size, -w_fraction * size])
    count = np.select([forward, kind == "W"], [1, 0], -1)
    return {"rank": rank[rows], "time": np.where(forward, start[rows], end[rows]), "alloc": forward,
            "bytes": share, "inflight": count}


def _trace_events(trace: pd.DataFrame, act_memory: float | Sequence[float], w_fraction: float,
                  grad_memory: float | Sequence[float] | None) -> dict[str, np.ndarray]:
    events = _compute_events(*(trace[c].to_numpy() for c in ("kind", "stage", "rank", "start", "end")),
                             act_memory, w_fraction)
    if grad_memory is not None:
        extra = _received_gradients(trace, grad_memory)
        events = {c: np.concatenate([events[c], extra[c]]) for c in events}
    return events


def _running(events: dict[str, np.ndarray]) -> pd.DataFrame:
    """Each rank's bytes and in-flight count after each event, events by (rank, time), frees first."""
    import pandas as pd

    frame = pd.DataFrame(events).sort_values(["rank", "time", "alloc"], kind="stable", ignore_index=True)
    by_rank = frame.groupby("rank", sort=False)
    frame["bytes"] = by_rank["bytes"].cumsum()
    frame["inflight"] = by_rank["inflight"].cumsum()
    return frame[["rank", "time", "bytes", "inflight"]]


def memory_timeline(trace: pd.DataFrame, act_memory: float | Sequence[float] = 1.0,
                    w_fraction: float = 0.5, grad_memory: float | Sequence[float] | None = None) -> pd.DataFrame:
    """Columns rank, time, bytes, inflight: the value after each allocation or free.

    ``grad_memory`` (bytes of one received output gradient per stage; None: not counted)
    adds what a measured run also holds: each received gradient until its B, or its W under a
    split backward, ends."""
    return _running(_trace_events(trace, act_memory, w_fraction, grad_memory))


def _exact_sums(values: np.ndarray) -> bool:
    """Whether every running sum of ``values``, in any order, is exact in float64: so when all
    are whole multiples of one power of two u and their absolute sum stays below 2**52 u
    (every partial sum is then a multiple of u that float64 holds exactly)."""
    values = values[values != 0]
    if not len(values):
        return True
    mantissa, exponent = np.frexp(values)  # values = mantissa * 2**exponent, 0.5 <= |mantissa| < 1
    whole = (mantissa * 2.0 ** 53).astype(np.int64)  # the 53 significant bits, exactly
    lowest = np.frexp((whole & -whole).astype(float))[1] - 1  # the lowest set bit's place
    unit = int((exponent - 53 + lowest).min())
    return float(np.abs(values).sum()) < 2.0 ** (52 + unit)  # 52: room for the rounded sum


def _peaks(events: dict[str, np.ndarray], ranks: int) -> tuple[PeakMemory, ...]:
    """Per-rank peaks of the running sums (0 for a rank with no events).

    pandas sums a group with Kahan compensation; where every running sum is exact (counts,
    and byte sizes that are whole or binary fractions) the compensation stays zero and a
    plain running sum per rank gives the same floats, without loading pandas."""
    if not _exact_sums(events["bytes"]):
        timeline = _running(events)
        peaks = timeline.groupby("rank")[["bytes", "inflight"]].max()
        return tuple(PeakMemory(float(peaks.at[r, "bytes"]), int(peaks.at[r, "inflight"])) if r in peaks.index
                     else PeakMemory(0.0, 0) for r in range(ranks))
    order = np.lexsort((events["alloc"], events["time"], events["rank"]))  # stable, as sort_values
    rank = events["rank"][order]
    size, count = events["bytes"][order], events["inflight"][order]
    bounds = np.searchsorted(rank, np.arange(ranks + 1))
    out = []
    for r in range(ranks):
        a, b = bounds[r], bounds[r + 1]
        if a == b:
            out.append(PeakMemory(0.0, 0))
            continue
        out.append(PeakMemory(float(np.cumsum(size[a:b]).max()), int(np.cumsum(count[a:b]).max())))
    return tuple(out)


def peak_memory(trace: pd.DataFrame, ranks: int, act_memory: float | Sequence[float] = 1.0,
                w_fraction: float = 0.5, grad_memory: float | Sequence[float] | None = None) -> tuple[PeakMemory, ...]:
    """Per-rank peaks (0 for a rank with no compute)."""
    return _peaks(_trace_events(trace, act_memory, w_fraction, grad_memory), ranks)


def peak_memory_of(kind: np.ndarray, stage: np.ndarray, rank: np.ndarray, start: np.ndarray, end: np.ndarray,
                   ranks: int, act_memory: float | Sequence[float] = 1.0,
                   w_fraction: float = 0.5) -> tuple[PeakMemory, ...]:
    """:func:`peak_memory` of a trace given as columns (``kind`` the op kind names)."""
    return _peaks(_compute_events(kind, stage, rank, start, end, act_memory, w_fraction), ranks)
