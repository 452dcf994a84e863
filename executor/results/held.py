"""Measured activation memory, and the simulator's prediction made from it.

From the samples of :mod:`executor.compute.memory` (bytes held at each op boundary):

* the measured peak of each pipeline rank: the highest sample over the timed steps;
* the bytes one microbatch holds on each stage: what its F adds (plus what the RECV_F
  just before it delivered: the input it received is part of what it keeps), median
  over microbatches and steps;
* the W share: the part of that a split backward's I leaves for W, median over I ops
  (default 0.5 where the schedule has none).

The prediction is the simulator's peak for the same lowered schedule and costs, with
``act_memory`` per stage and ``w_memory_fraction`` set to those measured figures, and
each received output gradient counted until its B ends, or under a split backward its W
(the stage keeps the gradient its I was given for W; its size is the stage's output, known
from the model), since the run counts those buffers too.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

import pandas as pd
import simulator
from schedules import OpKind
from simulator.memory import peak_memory

__all__ = ["measured_peaks", "per_microbatch", "op_bytes", "predicted_peaks", "memory_timeline"]


def measured_peaks(memory: pd.DataFrame, ranks: int) -> list[int]:
    peaks = memory.groupby("rank")["bytes"].max()
    return [int(peaks.get(r, 0)) for r in range(ranks)]


def _deltas(ops: tuple, memory: pd.DataFrame):
    """(op, bytes it added) of every op of every rank; an F's includes the input that the
    RECV_F just before it delivered (the input it received is part of what it keeps)."""
    for (_, rank), frame in memory.groupby(["step", "rank"]):
        after = dict(zip(frame["op"], frame["bytes"]))
        rank_ops = ops[rank]
        for i, op in enumerate(rank_ops):
            delta = after[i] - after[i - 1]
            if op.kind is OpKind.F:
                before = rank_ops[i - 1] if i else None
                if before is not None and before.kind is OpKind.RECV_F and before.mb == op.mb:
                    delta += after[i - 1] - after[i - 2]
            yield op, delta


def per_microbatch(ops: tuple, memory: pd.DataFrame, stages: int) -> tuple[list[float], float]:
    """(bytes one microbatch holds per stage, W share) read off the samples."""
    held: dict[int, list[float]] = {s: [] for s in range(stages)}
    kept: list[float] = []
    added: dict[tuple[int, int], float] = {}
    for op, delta in _deltas(ops, memory):
        if op.kind is OpKind.F:
            added[(op.stage, op.mb)] = delta
            held[op.stage].append(delta)
        elif op.kind is OpKind.I and added.get((op.stage, op.mb)):
            kept.append(max(0.0, 1.0 + delta / added[(op.stage, op.mb)]))
    sizes = [statistics.median(v) if v else 0.0 for _, v in sorted(held.items())]
    return sizes, (statistics.median(kept) if kept else 0.5)


def op_bytes(ops: tuple, memory: pd.DataFrame) -> dict[tuple[int, str], float]:
    """{(stage, kind): median bytes}: what each F holds, what each B, I and W frees."""
    seen: dict[tuple[int, str], list[float]] = {}
    for op, delta in _deltas(ops, memory):
        if op.kind.is_compute and op.pair is None:
            seen.setdefault((op.stage, op.kind.value), []).append(abs(delta))
    return {key: float(statistics.median(values)) for key, values in seen.items()}


def predicted_peaks(lowered, costs: simulator.Costs, memory: pd.DataFrame, grad_bytes: list[float]) -> list[float]:
    """The simulator's peak per rank; ``grad_bytes[s]``: one received output gradient of stage s."""
    sizes, share = per_microbatch(lowered.ops, memory, lowered.num_stages)
    share = min(1.0, share)
    result = simulator.simulate(lowered, replace(costs, act_memory=sizes, w_memory_fraction=share))
    peaks = peak_memory(result.trace, lowered.num_ranks, sizes, share, grad_memory=grad_bytes)
    return [p.bytes for p in peaks]


def memory_timeline(memory: pd.DataFrame, trace: pd.DataFrame, ops: tuple) -> pd.DataFrame:
    """rank, time, bytes: the metered step's samples on the timeline of ``trace`` (one
    timed step; the counter for trace.json). The metered step ran apart from the timed
    ones, so each sample is placed by identity: the one after op i of a rank at that op's
    end in ``trace``, the step's first at 0, one inside an overlapped pair at its forward's end."""
    ends = {(r, k, s, mb): e for r, k, s, mb, e in trace[["rank", "kind", "stage", "mb", "end"]].itertuples(index=False)}

    def end_of(rank: int, op) -> float | None:
        return ends.get((rank, op.kind.value, op.stage, -1 if op.mb is None else op.mb))

    rows = []
    for rank, frame in memory.groupby("rank"):
        inside = []  # bytes sampled inside an overlapped pair, placed once the pair is reached
        for i, held_bytes in zip(frame["op"], frame["bytes"]):
            if i == -2:
                inside.append(held_bytes)
                continue
            if i == -1:
                rows.append((rank, 0.0, held_bytes))
                continue
            op = ops[rank][i]
            if op.pair is not None:
                forward, backward = op.pair
                rows += [(rank, end_of(rank, forward), b) for b in inside]
                op = backward
            inside = []
            rows.append((rank, end_of(rank, op), held_bytes))
    out = pd.DataFrame(rows, columns=["rank", "time", "bytes"]).dropna()
    return out.sort_values(["rank", "time"], kind="stable").reset_index(drop=True)
