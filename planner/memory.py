"""Memory of every GPU of a layout: what must fit under the cap.

Per GPU (one tensor-parallel rank of one pipeline rank), in the order the parts are added
up (the first part that takes the sum over the cap is the one reported as overflowing):
  weights, gradients  dtype_bytes per parameter of the rank's stages (its 1/t share);
  optimizer    the rest of state_bytes_per_param per parameter, divided by dp with a
               distributed optimizer (ZeRO-1 shards the state over the replicas);
  activations  the peak of the simulator's activation accounting (:mod:`simulator.memory`)
               for this schedule, plus what recomputation rebuilds during one layer's
               backward (full: that layer's activations; selective: its attention core);
  buffers      one receive buffer per incoming stage boundary and direction (a
               forward input from the previous rank, a gradient from the next), each the
               boundary size; boundaries between stages on one rank need none.

A rank runs its compute ops one after another, so when each microbatch's activations
are allocated and freed follows from the op order alone: the peak is the same for every
choice of op durations. :func:`activation_peaks` computes it from the op order before any
SimPy run, and the tests check it against the simulated trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

import schedules
from schedules import OpKind

from .layout import Layout, Stages
from .transformer import TransformerSpec

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RankMemory", "PARTS", "Placement", "order_trace", "OrderPeaks", "placement_of", "rank_memory"]

PARTS = ("weights", "gradients", "optimizer", "activations", "buffers")


@dataclass(frozen=True)
class RankMemory:
    """Bytes of one GPU, part by part."""

    rank: int
    """Its pipeline rank."""
    parts: dict[str, float]
    """PARTS -> bytes."""

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def overflow(self, cap: float) -> str | None:
        """The part that takes the running sum over ``cap`` (None if the total fits)."""
        running = 0.0
        for name in PARTS:
            running += self.parts[name]
            if running > cap:
                return name
        return None


def order_trace(schedule: schedules.Schedule) -> pd.DataFrame:
    """Each rank's compute ops back to back, one time unit each (the shared trace schema)."""
    import pandas as pd  # a third of a second to load: only for this trace, not for a plan

    from simulator import TRACE_COLUMNS

    compute = [[part for op in rank_ops for part in op.parts if part.kind in schedules.COMPUTE_KINDS]
               for rank_ops in schedule.ops]  # an overlapped pair: its F and B, one after the other
    ops = [op for rank_ops in compute for op in rank_ops]
    step = np.concatenate([np.arange(len(rank_ops), dtype=float) for rank_ops in compute] or [np.zeros(0)])
    return pd.DataFrame({
        "rank": np.repeat(np.arange(len(compute)), [len(rank_ops) for rank_ops in compute]),
        "stage": [op.stage for op in ops], "mb": [op.mb for op in ops], "kind": [op.kind.value for op in ops],
        "stream": "compute", "start": step, "end": step + 1.0,
    }, columns=TRACE_COLUMNS)


class OrderPeaks:
    """Activation peaks of a schedule from its op order, for any per-stage bytes.

    Per rank, a matrix with one row per compute op and one column per stage of the rank
    holds how many of that stage's act_memory are held after the op (an F adds 1, a B
    frees 1, an I frees 1 - w, a W frees w; frees and allocations follow the op order, as
    in :mod:`simulator.memory`), so a peak is one matrix-vector product: the search asks
    for many stage sizes on one schedule."""

    def __init__(self, schedule: schedules.Schedule, w_fraction: float = 0.5):
        coef = {OpKind.F: 1.0, OpKind.B: -1.0, OpKind.I: -(1.0 - w_fraction), OpKind.W: -w_fraction}
        self.stages = [np.asarray(list(schedule.stages_of(r)), dtype=np.int64) for r in range(schedule.num_ranks)]
        self.held: list[np.ndarray] = []
        for rank, rank_ops in enumerate(schedule.ops):
            column = {int(s): i for i, s in enumerate(self.stages[rank])}
            parts = [p for op in rank_ops for p in op.parts if p.kind in coef]
            steps = np.zeros((len(parts), len(column)))
            for row, part in enumerate(parts):
                steps[row, column[part.stage]] = coef[part.kind]
            self.held.append(np.cumsum(steps, axis=0))

    def peaks(self, act_memory: Sequence[float]) -> list[float]:
        """Highest activation bytes of every rank (0 for a rank with no compute)."""
        act = np.asarray(act_memory, dtype=float)
        return [float(max(0.0, (held @ act[stages]).max())) if len(held) else 0.0
                for held, stages in zip(self.held, self.stages)]


Placement = Sequence[Sequence[int]]
"""The model stages of each pipeline rank, rank by rank."""


def placement_of(schedule: schedules.Schedule) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(schedule.stages_of(r)) for r in range(schedule.num_ranks))


def rank_memory(spec: TransformerSpec, layout: Layout, placement: Placement, stages: Stages,
                peaks: Sequence[float] | None) -> list[RankMemory]:
    """Every pipeline rank's memory on one of its GPUs; ``peaks`` are the activation peaks
    per rank (:class:`OrderPeaks` or a simulation's); None counts weights, gradients and
    optimizer state alone (activations and buffers read 0)."""
    where = {s: rank for rank, own in enumerate(placement) for s in own}
    boundary = spec.boundary_bytes(layout.tp)
    buffers = [0.0] * len(placement)
    for s in range(len(where) - 1):
        if peaks is not None and where[s] != where[s + 1]:
            buffers[where[s + 1]] += boundary  # the forward input of stage s + 1
            buffers[where[s]] += boundary  # the gradient coming back to stage s
    rebuilt = spec.recompute_buffer_bytes(layout.recompute, layout.tp, layout.sequence_parallel)
    shard = layout.dp if layout.distributed_optimizer else 1
    out = []
    for rank, own in enumerate(placement):
        parts = spec.state_bytes(sum(stages.params[s] for s in own))
        parts["optimizer"] /= shard
        held = 0.0 if peaks is None else peaks[rank] + (rebuilt if any(stages.layers[s] for s in own) else 0.0)
        parts["activations"] = held
        parts["buffers"] = buffers[rank]
        out.append(RankMemory(rank, parts))
    return out
