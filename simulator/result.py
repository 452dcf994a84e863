"""``simulate(schedule, costs, comm_mode)``: validate (or take a ``Lowered``), run the SimPy model, summarise.

Bubble fraction is this project's definition (see REFERENCE.md): the share of rank-time
not spent computing, 1 - sum of busy compute / (ranks * makespan). The optimizer step,
when it costs time, counts as busy: it is work, not a pipeline bubble.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property, partial
from itertools import chain
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

import schedules
from schedules import Lowered, Schedule
from schedules.ir import gc_paused

from .costs import Costs
from .memory import PeakMemory, peak_memory_of
from .encode import CODES, COMPUTE, KINDS
from .model import Model

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["simulate", "SimResult"]

# Trace kind names by row (KINDS, then the optimizer step's row).
_NAMES = np.array([k.value for k in KINDS] + ["OPTIMIZER"], dtype=object)
_OPTIMIZER = len(KINDS)


@dataclass(frozen=True)
class SimResult:
    """What one simulated step costs."""

    schedule: Lowered
    """The validated schedule that ran (``schedule.ops``: its final lists; ``schedule.comm_mode``:
    the semantics it ran under)."""
    costs: Costs
    columns: dict[str, np.ndarray] = field(repr=False)
    """The trace as arrays: rank, stage, mb, kind (a row of ``_NAMES``), start, end."""
    makespan: float
    """Step time: from 0 until the last rank finished its optimizer step."""
    busy: tuple[float, ...]
    """Compute seconds per rank (F, B, I, W and the optimizer step)."""
    peak_memory: tuple[PeakMemory, ...]
    """Per rank: highest activation bytes and microbatch-stages in flight (see :mod:`simulator.memory`)."""
    wall_time: float
    """Seconds the simulation itself took (model and summaries, not the checks and lowering
    before it, nor the trace frame)."""

    @cached_property
    def trace(self) -> pd.DataFrame:
        """One row per op execution in the shared schema (:mod:`timeline`). Made on first use
        (it loads pandas, longer than the whole summary takes) and kept: the columns do not change."""
        import pandas as pd

        from timeline import TRACE_COLUMNS, stream_of

        c, s = self.columns, self.schedule
        kind = _NAMES[c["kind"]]
        streams = np.array([stream_of(name) for name in _NAMES], dtype=object)[c["kind"]]
        trace = pd.DataFrame({"rank": c["rank"], "stage": c["stage"], "mb": c["mb"], "kind": kind,
                              "stream": streams, "start": c["start"], "end": c["end"]}, columns=TRACE_COLUMNS)
        trace.attrs.update(schedule=s.name, ranks=s.num_ranks, microbatches=s.num_microbatches, chunks=s.chunks,
                           comm=self.comm_mode)
        return trace

    @property
    def comm_mode(self) -> str:
        return self.schedule.comm_mode

    @property
    def ranks(self) -> int:
        return self.schedule.num_ranks

    @property
    def events(self) -> int:
        """Op executions simulated (rows of the trace)."""
        return len(self.columns["rank"])

    @property
    def bubble_fraction(self) -> float:
        if self.makespan == 0:
            return 0.0
        return 1.0 - sum(self.busy) / (self.ranks * self.makespan)

    @property
    def bubble_per_rank(self) -> tuple[float, ...]:
        return tuple(1.0 - b / self.makespan if self.makespan else 0.0 for b in self.busy)

    def per_rank_rows(self) -> list[dict]:
        """Per rank: rank, busy (seconds), bubble_fraction, peak_memory_bytes, peak_inflight."""
        return [{"rank": r, "busy": b, "bubble_fraction": f, "peak_memory_bytes": p.bytes,
                 "peak_inflight": p.inflight}
                for r, (b, f, p) in enumerate(zip(self.busy, self.bubble_per_rank, self.peak_memory))]

    @property
    def per_rank(self) -> pd.DataFrame:
        """rank, busy (seconds), bubble_fraction, peak_memory_bytes, peak_inflight."""
        import pandas as pd

        return pd.DataFrame(self.per_rank_rows(), columns=["rank", "busy", "bubble_fraction", "peak_memory_bytes",
                                                           "peak_inflight"])

    def summary(self) -> dict:
        """The CLI's --json object."""
        s = self.schedule
        return {
            "schedule": s.name, "ranks": s.num_ranks, "microbatches": s.num_microbatches,
            "chunks": s.chunks, "comm": self.comm_mode, "makespan": self.makespan,
            "bubble_fraction": self.bubble_fraction, "per_rank": self.per_rank_rows(),
        }


class _Ran(NamedTuple):
    """A model run of the final lists (what :func:`schedules.validate_with` hands back)."""

    model: Model
    began: float

    @property
    def stuck(self) -> dict[int, int]:
        return self.model.stuck


def _run(costs: Costs, program: Schedule, comm_mode: str) -> _Ran:
    costs.check_layout(program.num_stages, program.num_ranks)  # wrong lengths fail here, before the run
    began = time.perf_counter()
    with gc_paused():  # encoding makes lists of ints by the hundred thousand
        model = Model(program, costs, comm_mode)
    model.run()
    return _Ran(model, began)


def simulate(schedule: Schedule | Lowered, costs: Costs | None = None, comm_mode: str | None = None) -> SimResult:
    """Simulate one step of a :class:`schedules.Lowered` (under the ``comm_mode`` it was
    validated for), or of a Schedule after validating it (raising
    :class:`schedules.ScheduleError`) under ``comm_mode`` (default async).

    With ``costs.dp > 1`` the lists hold a REDUCE_GRAD per stage; a Lowered given must hold
    them, else ValueError (one holding them at dp = 1 reduces over one replica, in no
    time), and so is a ``comm_mode`` beside a Lowered.
    """
    costs = Costs() if costs is None else costs
    if isinstance(schedule, Lowered):
        lowered = schedule
        # A Lowered may carry REDUCE_GRAD at dp = 1 (a schedule file written with them): an
        # all-reduce over one replica moves nothing and takes no time. Missing ones are refused.
        if comm_mode is not None or (costs.dp > 1 and not lowered.reduce_grad):
            raise ValueError(f"this Lowered is for comm_mode={lowered.comm_mode}, reduce_grad={lowered.reduce_grad}"
                             + (f"; a comm_mode beside it is refused (asked {comm_mode})" if comm_mode is not None
                                else f"; asked dp={costs.dp}") + ": validate the schedule for that")
        ran = _run(costs, lowered.program, lowered.comm_mode)
        if ran.stuck:  # the validator's run ruled this out; guard against a model bug
            raise RuntimeError(f"simulation stopped with ranks {sorted(ran.stuck)} unfinished")
    else:
        # The model's run of the final lists stands in for the validator's dry run: whether
        # they finish does not depend on costs, and a deadlock is reported the same way.
        lowered, ran = schedules.validate_with(partial(_run, costs), schedule, comm_mode or "async",
                                               reduce_grad=costs.dp > 1)
    model = ran.model
    with gc_paused():  # hundreds of thousands of ints and floats in lists: no cycles to find
        columns = _columns(lowered, model)
        end = columns["end"]
        makespan = float(end.max()) if len(end) else 0.0
        compute = np.flatnonzero(np.append(CODES == COMPUTE, True)[columns["kind"]])  # the optimizer computes
        busy = np.bincount(columns["rank"][compute], weights=(end - columns["start"])[compute],
                           minlength=lowered.num_ranks)
        peaks = peak_memory_of(_NAMES[columns["kind"]], columns["stage"], columns["rank"], columns["start"], end,
                               lowered.num_ranks, costs.act_memory, costs.w_memory_fraction)
    return SimResult(lowered, costs, columns, makespan, tuple(float(b) for b in busy), peaks,
                     time.perf_counter() - ran.began)


def _columns(lowered: Lowered, model: Model) -> dict[str, np.ndarray]:
    """The trace's columns: every op as it ran, then each rank's optimizer step if it costs time."""
    ops = model.ops
    start = np.array(list(chain.from_iterable(model.start)), dtype=float)
    end = np.array(list(chain.from_iterable(model.end)), dtype=float)
    if ops.pre is not None:  # host time folded into compute ops: each op keeps its own times
        start, end = start + ops.pre, end - ops.post
    columns = {"rank": ops.rank, "stage": ops.stage, "mb": ops.mb, "kind": ops.kind, "start": start, "end": end}
    if not any(model.step):
        return columns
    ranks = lowered.num_ranks
    optimizer = {"rank": np.arange(ranks), "stage": np.full(ranks, -1), "mb": np.full(ranks, -1),
                 "kind": np.full(ranks, _OPTIMIZER), "start": np.array(model.stepped, dtype=float),
                 "end": np.array(model.finish, dtype=float)}
    return {name: np.concatenate([columns[name], optimizer[name]]) for name in columns}
