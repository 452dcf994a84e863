"""``python -m simulator sweep``: simulate a grid of schedules, ranks and microbatches.

Writes one tidy table, a row per (schedule, ranks, microbatches, chunks, comm): makespan,
simulated and analytic bubble fraction (the closed form, which assumes free communication
and senders that never wait; empty where there is none) and the highest per-rank peak
memory. Combinations a schedule does not accept (interleaved-1f1b
with m not divisible by p, say) are skipped and counted on stderr; so are, with
``--costs costs.json``, layouts the profile does not cover (each other combination is
simulated with its own layout's costs).

``--workers N`` runs the simulations in a process pool; under ``mpiexec -n N python -m
simulator sweep ...`` they are spread over every rank (:mod:`simulator.workers`). Rows
come back in grid order, so the table is the same in every mode.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, Union

import schedules

from .cli import Parser, UsageError, add_cost_flags, costs_from_args
from .costs import Costs
from .profile import ProfileError
from .result import simulate
from .workers import Workers, open_workers

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["sweep", "sweep_main", "whole_numbers"]


def whole_numbers(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated whole numbers >= 1 (also the planner's)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"values must be >= 1, got {text!r}")
    return values


def _parser() -> Parser:
    parser = Parser(prog="python -m simulator sweep", description="Simulate a grid of schedules.")
    parser.add_argument("--schedules", default="all", help="comma-separated names, or all (default)")
    parser.add_argument("--ranks", type=whole_numbers, default=[2, 4, 8], help="comma-separated p values")
    parser.add_argument("--microbatches", type=whole_numbers, default=[4, 8, 16, 32], help="comma-separated m values")
    parser.add_argument("--chunks", type=int, default=None, help="chunks for multi-chunk schedules (default: each one's)")
    add_cost_flags(parser)
    parser.add_argument("--out", metavar="TABLE.csv", help="write the table here (default: print CSV)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes for the simulations (default 1; under mpiexec every rank works)")
    return parser


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


CostsOf = Union[Costs, Callable[[schedules.Schedule], Costs]]


def _one(job: tuple[str, int, int, str, CostsOf, int | None]) -> dict | str:
    """One grid point: its row, or why the schedule (or the profile) does not take it."""
    name, p, m, comm, costs, chunks = job
    v = schedules.default_chunks(name)
    if chunks is not None and v > 1:  # --chunks applies to the multi-chunk schedules only
        v = chunks
    try:
        schedule = schedules.build(name, ranks=p, microbatches=m, chunks=v)
        costs = costs(schedule) if callable(costs) else costs
        result = simulate(schedule, costs, comm)
    except (schedules.ScheduleError, ProfileError) as err:
        return f"{name} p={p} m={m}: {str(err).splitlines()[0]}"
    return {
        "schedule": name, "ranks": p, "microbatches": m, "chunks": v, "comm": comm,
        "makespan": result.makespan, "bubble_fraction": result.bubble_fraction,
        "analytic_bubble_fraction": _nan_if_none(costs.closed_form_bubble(name, p, m, v)),
        "peak_memory_bytes": max(pm.bytes for pm in result.peak_memory),
        "peak_inflight": max(pm.inflight for pm in result.peak_memory),
    }


def sweep(names: Sequence[str], ranks: Sequence[int], microbatches: Sequence[int], comms: Sequence[str],
          costs: CostsOf, chunks: int | None = None, progress: bool = True,
          workers: Workers | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The table, and one reason per skipped combination. ``costs``: one set for every
    schedule, or a function of the schedule (a profile's layouts: one not profiled is
    skipped); ``workers`` (default: this process) runs the simulations."""
    import pandas as pd  # a third of a second to load: not for the planner, which borrows whole_numbers

    grid = [(name, p, m, comm, costs, chunks) for name, p, m, comm in itertools.product(names, ranks, microbatches, comms)]
    done = (workers or Workers("serial")).map(_one, grid, progress=progress, desc="sweep")
    return pd.DataFrame([d for d in done if isinstance(d, dict)]), [d for d in done if isinstance(d, str)]


def sweep_main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    names = schedules.names() if args.schedules == "all" else [n.strip() for n in args.schedules.split(",")]
    unknown = [n for n in names if n not in schedules.names()]
    if unknown:
        raise UsageError(f"unknown schedule {unknown[0]!r}; choose from: all, {', '.join(schedules.names())}")
    comms = [c.strip() for c in args.comm.split(",")]
    if any(c not in schedules.COMMS for c in comms):
        raise UsageError(f"--comm takes {', '.join(schedules.COMMS)} (comma-separated), got {args.comm!r}")
    costs = costs_from_args(args)
    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    with open_workers(args.workers) as workers:
        if workers is None:  # an MPI rank that ran simulations for rank 0
            return 0
        table, skipped = sweep(names, args.ranks, args.microbatches, comms, costs, args.chunks,
                               progress=not args.quiet, workers=workers)
    if skipped:
        print(f"skipped {len(skipped)} combination(s), e.g. {skipped[0]}", file=sys.stderr)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
        print(f"wrote {len(table)} rows to {args.out}", file=sys.stderr)
    else:
        print(table.to_csv(index=False), end="")
    return 0
