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
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["memory_timeline", "peak_memory", "PeakMemory"]


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


def _received_gradients(trace: pd.DataFrame, grad_memory: float | Sequence[float]) -> pd.DataFrame:
    """Events of received output gradients: held from their RECV_B's end until the B or I
    of the same rank, stage and microbatch ends (a measured run counts those buffers)."""
    recv = trace[trace["kind"] == "RECV_B"]
    back = trace[trace["kind"].isin(["B", "I"])].merge(recv[["rank", "stage", "mb"]], on=["rank", "stage", "mb"])
    size_in = _per_stage(grad_memory, recv["stage"].to_numpy().astype(np.int64))
    size_out = _per_stage(grad_memory, back["stage"].to_numpy().astype(np.int64))
    return pd.DataFrame({"rank": np.concatenate([recv["rank"].to_numpy(), back["rank"].to_numpy()]),
                         "time": np.concatenate([recv["end"].to_numpy(), back["end"].to_numpy()]),
                         "alloc": np.concatenate([np.ones(len(recv), bool), np.zeros(len(back), bool)]),
                         "bytes": np.concatenate([size_in, -size_out]), "inflight": 0})


def memory_timeline(trace: pd.DataFrame, act_memory: float | Sequence[float] = 1.0,
                    w_fraction: float = 0.5, grad_memory: float | Sequence[float] | None = None) -> pd.DataFrame:
    """Columns rank, time, bytes, inflight: the value after each allocation or free.

    ``grad_memory`` (bytes of one received output gradient per stage; None: not counted)
    adds what a measured run also holds: each received gradient until its backward ends."""
    kind = trace["kind"].to_numpy()
    rows = np.isin(kind, ["F", "B", "I", "W"])
    kind = kind[rows]
    stage = trace["stage"].to_numpy()[rows].astype(np.int64)
    size = _per_stage(act_memory, stage)
    forward = kind == "F"
    share = np.select([forward, kind == "B", kind == "I", kind == "W"],
                      [size, -size, -(1 - w_fraction) * size, -w_fraction * size])
    count = np.select([forward, kind == "W"], [1, 0], -1)
    time = np.where(forward, trace["start"].to_numpy()[rows], trace["end"].to_numpy()[rows])
    events = pd.DataFrame({"rank": trace["rank"].to_numpy()[rows], "time": time, "alloc": forward,
                           "bytes": share, "inflight": count})
    if grad_memory is not None:
        events = pd.concat([events, _received_gradients(trace, grad_memory)], ignore_index=True)
    events = events.sort_values(["rank", "time", "alloc"], kind="stable", ignore_index=True)
    by_rank = events.groupby("rank", sort=False)
    events["bytes"] = by_rank["bytes"].cumsum()
    events["inflight"] = by_rank["inflight"].cumsum()
    return events[["rank", "time", "bytes", "inflight"]]


def peak_memory(trace: pd.DataFrame, ranks: int, act_memory: float | Sequence[float] = 1.0,
                w_fraction: float = 0.5, grad_memory: float | Sequence[float] | None = None) -> tuple[PeakMemory, ...]:
    """Per-rank peaks (0 for a rank with no compute)."""
    timeline = memory_timeline(trace, act_memory, w_fraction, grad_memory)
    peaks = timeline.groupby("rank")[["bytes", "inflight"]].max()
    return tuple(
        PeakMemory(float(peaks.at[r, "bytes"]), int(peaks.at[r, "inflight"])) if r in peaks.index
        else PeakMemory(0.0, 0)
        for r in range(ranks)
    )
