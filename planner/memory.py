"""Memory of every rank of a layout: what must fit under the cap.

Per rank, in the order the parts are added up (the first part that takes the sum over the
cap is the one reported as overflowing):
  weights, gradients, optimizer  state bytes of the parameters of the rank's stages;
  activations  the peak of the simulator's activation accounting
               (:func:`simulator.peak_memory`) for this schedule, plus, with full
               recomputation, one layer's full activations rebuilt during a backward;
  buffers      one receive buffer per incoming stage boundary and direction (a
               forward input from the previous rank, a gradient from the next), each the
               boundary size; boundaries between stages on one rank need none.

A rank runs its compute ops one after another, so when each microbatch's activations
are allocated and freed follows from the op order alone: the peak is the same for every
choice of op durations. So it is computed before any SimPy run, on a trace whose ops
take one time unit each, and the tests check it against the simulated trace.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

import schedules
from simulator import TRACE_COLUMNS, peak_memory

from .layout import Stages
from .transformer import TransformerSpec

__all__ = ["RankMemory", "PARTS", "order_trace", "rank_memory"]

PARTS = ("weights", "gradients", "optimizer", "activations", "buffers")


@dataclass(frozen=True)
class RankMemory:
    """Bytes of one rank, part by part."""

    rank: int
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
    compute = [[part for op in rank_ops for part in op.parts if part.kind in schedules.COMPUTE_KINDS]
               for rank_ops in schedule.ops]  # an overlapped pair: its F and B, one after the other
    ops = [op for rank_ops in compute for op in rank_ops]
    step = np.concatenate([np.arange(len(rank_ops), dtype=float) for rank_ops in compute] or [np.zeros(0)])
    return pd.DataFrame({
        "rank": np.repeat(np.arange(len(compute)), [len(rank_ops) for rank_ops in compute]),
        "stage": [op.stage for op in ops], "mb": [op.mb for op in ops], "kind": [op.kind.value for op in ops],
        "stream": "compute", "start": step, "end": step + 1.0,
    }, columns=TRACE_COLUMNS)


def rank_memory(spec: TransformerSpec, schedule: schedules.Schedule, stages: Stages, recompute: str,
                trace: pd.DataFrame, w_fraction: float = 0.5) -> list[RankMemory]:
    """Every rank's memory; ``trace`` is :func:`order_trace` of the schedule or a simulated one."""
    peaks = peak_memory(trace, schedule.num_ranks, stages.act_memory, w_fraction)
    where = schedule.stage_to_rank
    buffers = [0.0] * schedule.num_ranks
    for s in range(schedule.num_stages - 1):
        if where[s] != where[s + 1]:
            buffers[where[s + 1]] += spec.boundary_bytes()  # the forward input of stage s + 1
            buffers[where[s]] += spec.boundary_bytes()  # the gradient coming back to stage s
    rebuilt = spec.recompute_buffer_bytes(recompute)
    out = []
    for rank in range(schedule.num_ranks):
        own = schedule.stages_of(rank)
        parts = spec.state_bytes(sum(stages.params[s] for s in own))
        parts["activations"] = peaks[rank].bytes + (rebuilt if any(stages.layers[s] for s in own) else 0.0)
        parts["buffers"] = buffers[rank]
        out.append(RankMemory(rank, parts))
    return out
