"""``python -m simulator sweep``: simulate a grid of schedules, ranks and microbatches.

Writes one tidy table, a row per (schedule, ranks, microbatches, chunks, comm): makespan,
simulated and analytic bubble fraction (the closed form, which assumes free communication
and senders that never wait; empty where there is none) and the highest per-rank peak
memory. Combinations a schedule does not accept (interleaved-1f1b
with m not divisible by p, say) are skipped and counted on stderr; so are, with
``--costs costs.json``, layouts the profile does not cover (each other combination is
simulated with its own layout's costs).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path
from typing import Callable, Sequence, Union

import pandas as pd
from tqdm import tqdm

import schedules

from .cli import Parser, UsageError, add_cost_flags, costs_from_args
from .costs import Costs
from .profile import ProfileError
from .result import simulate

__all__ = ["sweep", "sweep_main"]


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"values must be >= 1, got {text!r}")
    return values


def _parser() -> Parser:
    parser = Parser(prog="python -m simulator sweep", description="Simulate a grid of schedules.")
    parser.add_argument("--schedules", default="all", help="comma-separated names, or all (default)")
    parser.add_argument("--ranks", type=_ints, default=[2, 4, 8], help="comma-separated p values")
    parser.add_argument("--microbatches", type=_ints, default=[4, 8, 16, 32], help="comma-separated m values")
    parser.add_argument("--chunks", type=int, default=None, help="chunks for multi-chunk schedules (default: each one's)")
    add_cost_flags(parser)
    parser.add_argument("--out", metavar="TABLE.csv", help="write the table here (default: print CSV)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


def sweep(names: Sequence[str], ranks: Sequence[int], microbatches: Sequence[int], comms: Sequence[str],
          costs: Union[Costs, Callable[[schedules.Schedule], Costs]], chunks: int | None = None,
          progress: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """The table, and one reason per skipped combination. ``costs``: one set for every
    schedule, or a function of the schedule (a profile's layouts: one not profiled is skipped)."""
    rows, skipped = [], []
    grid = list(itertools.product(names, ranks, microbatches, comms))
    for name, p, m, comm in tqdm(grid, desc="sweep", disable=not progress, file=sys.stderr):
        v = schedules.default_chunks(name)
        if chunks is not None and v > 1:  # --chunks applies to the multi-chunk schedules only
            v = chunks
        try:
            schedule = schedules.build(name, ranks=p, microbatches=m, chunks=v)
            layout_costs = costs(schedule) if callable(costs) else costs
            result = simulate(schedule, layout_costs, comm)
        except (schedules.ScheduleError, ProfileError) as err:
            skipped.append(f"{name} p={p} m={m}: {str(err).splitlines()[0]}")
            continue
        rows.append({
            "schedule": name, "ranks": p, "microbatches": m, "chunks": v, "comm": comm,
            "makespan": result.makespan, "bubble_fraction": result.bubble_fraction,
            "analytic_bubble_fraction": _nan_if_none(layout_costs.closed_form_bubble(name, p, m, v)),
            "peak_memory_bytes": max(pm.bytes for pm in result.peak_memory),
            "peak_inflight": max(pm.inflight for pm in result.peak_memory),
        })
    return pd.DataFrame(rows), skipped


def sweep_main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    names = schedules.names() if args.schedules == "all" else [n.strip() for n in args.schedules.split(",")]
    unknown = [n for n in names if n not in schedules.names()]
    if unknown:
        raise UsageError(f"unknown schedule {unknown[0]!r}; choose from: all, {', '.join(schedules.names())}")
    comms = [c.strip() for c in args.comm.split(",")]
    if any(c not in schedules.COMMS for c in comms):
        raise UsageError(f"--comm takes {', '.join(schedules.COMMS)} (comma-separated), got {args.comm!r}")
    table, skipped = sweep(names, args.ranks, args.microbatches, comms, costs_from_args(args),
                           args.chunks, progress=not args.quiet)
    if skipped:
        print(f"skipped {len(skipped)} combination(s), e.g. {skipped[0]}", file=sys.stderr)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
        print(f"wrote {len(table)} rows to {args.out}", file=sys.stderr)
    else:
        print(table.to_csv(index=False), end="")
    return 0
