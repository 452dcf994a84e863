"""``python -m simulator sweep``: simulate a grid of schedules, ranks and microbatches.

Writes one tidy table, a row per (schedule, ranks, microbatches, chunks, comm): makespan,
simulated and analytic bubble fraction (the closed form, which assumes free communication
and senders that never wait; empty where there is none) and the highest per-rank peak
memory. Combinations a schedule does not accept (interleaved-1f1b
with m not divisible by p, say) are skipped and counted on stderr; so are, with
``--costs costs.json``, layouts the profile does not cover (each other combination is
simulated with its own layout's costs).

``--workers N`` runs the simulations in a process pool (at most one process a core);
under ``mpiexec -n N python -m simulator sweep ...`` they are spread over every rank
(:mod:`simulator.workers`). Rows come back in grid order, so the table is the same in
every mode.

Before any simulation: every value list is checked (no repeats, ``--chunks`` only where
a schedule takes it), the whole grid and its largest point against the memory available
(:mod:`simulator.bounds`; the largest point as many times as simulations run at once),
and ``--out`` claimed (refused if it exists, unless ``--force``; under MPI by rank 0,
which alone writes, and every rank leaves if it is refused).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from typing import TYPE_CHECKING, Sequence, Union

import schedules
from cliguard import Parser, UsageError, claim_file, save_all
from schedules.bounds import check_fits

from .bounds import MEASURED, SWEEP_BYTES_PER_POINT, check_run
from .flags import CostSource, add_cost_flags, costs_from_args
from .costs import Costs
from .profile import ProfileError
from .result import simulate
from .workers import Workers, capped, lead_decides, open_workers

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
    parser.add_argument("--out", metavar="TABLE.csv", help="write the table here (default: print CSV); "
                        "refused if it exists, unless --force")
    parser.add_argument("--force", action="store_true", help="let --out replace an existing file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes for the simulations (default 1, at most the cores; under mpiexec every rank works)")
    return parser


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


CostsOf = Union[Costs, CostSource]


def _one(job: tuple[str, int, int, str, CostsOf, int | None]) -> dict | str:
    """One grid point: its row, or why the schedule (or the profile) does not take it."""
    name, p, m, comm_mode, costs, chunks = job
    v = _chunks_of(name, chunks)
    try:
        costs = costs.layout(p, v, m) if isinstance(costs, CostSource) else costs
        planned = costs.stage_costs(p * v) if schedules.spec(name).costed else None  # built for its layout's costs
        schedule = schedules.build(name, ranks=p, microbatches=m, chunks=v, costs=planned)
        result = simulate(schedule, costs, comm_mode)
    except (schedules.ScheduleError, ProfileError) as err:
        return f"{name} p={p} m={m}: {str(err).splitlines()[0]}"
    return {
        "schedule": name, "ranks": p, "microbatches": m, "chunks": v, "comm": comm_mode,
        "makespan": result.makespan, "bubble_fraction": result.bubble_fraction,
        "analytic_bubble_fraction": _nan_if_none(costs.closed_form_bubble(name, p, m, v)),
        "peak_memory_bytes": max(pm.bytes for pm in result.peak_memory),
        "peak_inflight": max(pm.inflight for pm in result.peak_memory),
    }


def sweep(names: Sequence[str], ranks: Sequence[int], microbatches: Sequence[int], comm_modes: Sequence[str],
          costs: CostsOf, chunks: int | None = None, progress: bool = True,
          workers: Workers | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The table, and one reason per skipped combination. ``costs``: one set for every
    schedule, or the flags' :class:`CostSource` (a profile's layouts: one not profiled is
    skipped); ``workers`` (default: this process) runs the simulations."""
    import pandas as pd  # a third of a second to load: not for the planner, which borrows whole_numbers

    grid = [(name, p, m, comm_mode, costs, chunks)
            for name, p, m, comm_mode in itertools.product(names, ranks, microbatches, comm_modes)]
    done = (workers or Workers("serial")).map(_one, grid, progress=progress, desc="sweep")
    return pd.DataFrame([d for d in done if isinstance(d, dict)]), [d for d in done if isinstance(d, str)]


def _chunks_of(name: str, chunks: int | None) -> int:
    """The chunks a grid point of ``name`` runs with: --chunks applies to the multi-chunk schedules."""
    v = schedules.default_chunks(name)
    return chunks if chunks is not None and v > 1 else v


def _check_grid(args: argparse.Namespace, names: list[str], comm_modes: list[str], workers: int) -> None:
    """The cheap checks of the lists, then whether the grid and its largest point fit."""
    for flag, values in (("--schedules", names), ("--ranks", args.ranks), ("--microbatches", args.microbatches),
                         ("--comm", comm_modes)):
        repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if repeated is not None:
            raise UsageError(f"{flag} names {repeated} twice")
    if args.chunks is not None:
        if args.chunks < 1:
            raise UsageError(f"--chunks must be >= 1, got {args.chunks}")
        if all(schedules.default_chunks(name) == 1 for name in names):
            raise UsageError(f"--chunks applies to multi-chunk schedules only; none of {', '.join(names)} is one")
    points = len(names) * len(args.ranks) * len(args.microbatches) * len(comm_modes)
    check_fits(f"the sweep's grid of {points} points", points, SWEEP_BYTES_PER_POINT, unit="point",
               measured_by=MEASURED)
    stages, name = max((p * _chunks_of(n, args.chunks), n) for n in names for p in args.ranks)
    check_run(f"its largest point ({name}, {stages} stages, microbatches={max(args.microbatches)})", stages,
              max(args.microbatches), max(args.ranks) * (args.dp or 1), workers=min(workers, points))


def sweep_main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    names = schedules.names() if args.schedules == "all" else [n.strip() for n in args.schedules.split(",")]
    unknown = [n for n in names if n not in schedules.names()]
    if unknown:
        raise UsageError(f"unknown schedule {unknown[0]!r}; choose from: all, {', '.join(schedules.names())}")
    comm_modes = [c.strip() for c in args.comm.split(",")]
    if any(c not in schedules.COMM_MODES for c in comm_modes):
        raise UsageError(f"--comm takes {', '.join(schedules.COMM_MODES)} (comma-separated), got {args.comm!r}")
    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    workers = capped(args.workers)
    _check_grid(args, names, comm_modes, workers)
    costs = costs_from_args(args)
    target = lead_decides(lambda: claim_file(args.out, force=args.force)) if args.out else None
    with open_workers(workers) as pool:
        if pool is None:  # an MPI rank that ran simulations for rank 0
            return 0
        table, skipped = sweep(names, args.ranks, args.microbatches, comm_modes, costs, args.chunks,
                               progress=not args.quiet, workers=pool)
    if skipped:
        print(f"skipped {len(skipped)} combination(s), e.g. {skipped[0]}", file=sys.stderr)
    if target is None:
        print(table.to_csv(index=False), end="")
        return 0
    save_all([("--out", target, lambda path: table.to_csv(path, index=False))])
    print(f"wrote {len(table)} rows to {target}", file=sys.stderr)
    return 0
