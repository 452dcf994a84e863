"""``simulate(schedule, costs, comm)``: validate (or take a ``Lowered``), run the SimPy model, summarise.

Bubble fraction is this project's definition (see REFERENCE.md): the share of rank-time
not spent computing, 1 - sum of busy compute / (ranks * makespan). The optimizer step,
when it costs time, counts as busy: it is work, not a pipeline bubble.
"""

from __future__ import annotations

import time
from itertools import chain
from dataclasses import dataclass

import numpy as np
import pandas as pd

import schedules
from schedules import Lowered, Schedule

from .costs import Costs
from .memory import PeakMemory, peak_memory
from .encode import KINDS
from .model import Model
from timeline import TRACE_COLUMNS, makespan_of, stream_of

__all__ = ["simulate", "SimResult"]

_KINDS = np.array([k.value for k in KINDS], dtype=object)
_STREAMS = np.array([stream_of(k.value) for k in KINDS], dtype=object)


@dataclass(frozen=True)
class SimResult:
    """What one simulated step costs."""

    schedule: Lowered
    """The validated schedule that ran (``schedule.ops``: its final lists)."""
    comm: str
    costs: Costs
    trace: pd.DataFrame
    """One row per op execution in the shared schema (:mod:`timeline`)."""
    makespan: float
    """Step time: from 0 until the last rank finished its optimizer step."""
    busy: tuple[float, ...]
    """Compute seconds per rank (F, B, I, W and the optimizer step)."""
    peak_memory: tuple[PeakMemory, ...]
    """Per rank: highest activation bytes and microbatch-stages in flight (see :mod:`simulator.memory`)."""
    wall_time: float
    """Seconds the simulation itself took (model and trace, not validation)."""

    @property
    def ranks(self) -> int:
        return self.schedule.num_ranks

    @property
    def events(self) -> int:
        """Op executions simulated (rows of the trace)."""
        return len(self.trace)

    @property
    def bubble_fraction(self) -> float:
        if self.makespan == 0:
            return 0.0
        return 1.0 - sum(self.busy) / (self.ranks * self.makespan)

    @property
    def bubble_per_rank(self) -> tuple[float, ...]:
        return tuple(1.0 - b / self.makespan if self.makespan else 0.0 for b in self.busy)

    @property
    def per_rank(self) -> pd.DataFrame:
        """rank, busy (seconds), bubble_fraction, peak_memory_bytes, peak_inflight."""
        return pd.DataFrame({
            "rank": range(self.ranks),
            "busy": self.busy,
            "bubble_fraction": self.bubble_per_rank,
            "peak_memory_bytes": [p.bytes for p in self.peak_memory],
            "peak_inflight": [p.inflight for p in self.peak_memory],
        })

    def summary(self) -> dict:
        """The CLI's --json object."""
        s = self.schedule
        return {
            "schedule": s.name, "ranks": s.num_ranks, "microbatches": s.num_microbatches,
            "chunks": s.chunks, "comm": self.comm, "makespan": self.makespan,
            "bubble_fraction": self.bubble_fraction, "per_rank": self.per_rank.to_dict("records"),
        }


def simulate(schedule: Schedule | Lowered, costs: Costs | None = None, comm: str | None = None) -> SimResult:
    """Simulate one step of a :class:`schedules.Lowered`, or of a Schedule after validating
    it (raising :class:`schedules.ScheduleError`) under ``comm`` (default async).

    With ``costs.dp > 1`` the lists hold a REDUCE_GRAD per stage; a Lowered given must
    match ``comm`` and that, else ValueError.
    """
    costs = Costs() if costs is None else costs
    if isinstance(schedule, Lowered):
        lowered = schedule
        if comm not in (None, lowered.comm) or lowered.reduce_grad != (costs.dp > 1):
            raise ValueError(f"this Lowered is for comm={lowered.comm}, reduce_grad={lowered.reduce_grad}; "
                             f"asked comm={comm or lowered.comm}, dp={costs.dp}: validate the schedule for that")
    else:
        lowered = schedules.validate(schedule, comm or "async", reduce_grad=costs.dp > 1)
    comm = lowered.comm
    costs.check_layout(lowered.num_stages, lowered.num_ranks)  # wrong lengths fail here, before the run
    began = time.perf_counter()
    model = Model(lowered.program, costs, comm)
    model.run()
    trace = _trace(lowered, model)
    makespan = makespan_of(trace)
    busy = _busy(trace, lowered.num_ranks)
    peaks = peak_memory(trace, lowered.num_ranks, costs.act_memory, costs.w_memory_fraction)
    trace.attrs.update(schedule=lowered.name, ranks=lowered.num_ranks,
                       microbatches=lowered.num_microbatches, chunks=lowered.chunks, comm=comm)
    return SimResult(lowered, comm, costs, trace, makespan, busy, peaks, time.perf_counter() - began)


def _trace(lowered: Lowered, model: Model) -> pd.DataFrame:
    ops = model.ops
    start = np.array(list(chain.from_iterable(model.start)), dtype=float)
    end = np.array(list(chain.from_iterable(model.end)), dtype=float)
    if ops.pre is not None:  # host time folded into compute ops: each op keeps its own times
        start, end = start + ops.pre, end - ops.post
    trace = pd.DataFrame({
        "rank": ops.rank, "stage": ops.stage, "mb": ops.mb,
        "kind": _KINDS[ops.kind], "stream": _STREAMS[ops.kind], "start": start, "end": end,
    }, columns=TRACE_COLUMNS)
    if not any(model.step):
        return trace
    ranks = lowered.num_ranks
    optimizer = pd.DataFrame({"rank": range(ranks), "stage": -1, "mb": -1, "kind": "OPTIMIZER",
                              "stream": "compute", "start": model.stepped, "end": model.finish})
    return pd.concat([trace, optimizer], ignore_index=True)


def _busy(trace: pd.DataFrame, ranks: int) -> tuple[float, ...]:
    compute = trace[trace["stream"].to_numpy() == "compute"]
    spent = np.bincount(compute["rank"].to_numpy(), weights=(compute["end"] - compute["start"]).to_numpy(),
                        minlength=ranks)
    return tuple(float(b) for b in spent)
