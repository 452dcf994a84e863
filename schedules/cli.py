"""``python -m schedules``: print a schedule's step x rank grid and its bubble fraction.

    python -m schedules 1f1b --ranks 4 --microbatches 8
    python -m schedules interleaved-1f1b --ranks 4 --microbatches 8 --chunks 2 --comms
    python -m schedules --file torch_schedule.csv --comm blocking
    python -m schedules zb-auto --ranks 8 --microbatches 24 --t-f 18.5 --t-i 18.1 --t-w 9.3 --t-comm 0.6 --memory-limit 16
    python -m schedules --list

The schedule is validated under ``--comm`` before it is printed. The bubble fraction is
this project's definition, 1 - busy / (p * makespan): the share of rank-time spent idle
(uniform unit costs t_f = t_i = t_w = 1, free communication). Usage errors print one line
on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import analytic
from .csvio import load_csv, write_csv
from .dryrun import dry_run
from .grid import format_grid
from .ir import COMMS, OpKind, Schedule, ScheduleError
from .lowered import Lowered
from .registry import build, names, spec
from .synthesis import NAME as SYNTHESIZED, SUMMARY as SYNTHESIS_SUMMARY, synthesize
from .validate import validate

__all__ = ["main", "parser"]

USAGE_ERROR = 2
_UNIT = {OpKind.F: 1.0, OpKind.I: 1.0, OpKind.W: 1.0, OpKind.B: 2.0, OpKind.OVERLAP_F_B: 3.0}  # B = I + W


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="python -m schedules",
        description="Print a pipeline schedule as a step x rank grid with its bubble fraction "
        "(share of rank-time idle, unit costs, free communication).",
    )
    ap.add_argument("name", nargs="?", help=f"schedule to build: {', '.join(names() + [SYNTHESIZED])}")
    ap.add_argument("--file", help="load a schedule from a torch-format CSV instead of building one (--ranks etc. then unused)")
    ap.add_argument("--list", action="store_true", help="list every schedule with its formula and constraints, and exit")
    ap.add_argument("--ranks", type=int, default=4, help="pipeline ranks p (default 4)")
    ap.add_argument("--microbatches", type=int, default=8, help="microbatches m per step (default 8)")
    ap.add_argument("--chunks", type=int, default=None,
                    help="model stages per rank v (default: the schedule's own, 2 for zbv and interleaved-1f1b)")
    ap.add_argument("--comms", action="store_true", help="show (and write) the lowered schedule with SEND/RECV")
    ap.add_argument("--comm", choices=COMMS, default="async",
                    help="communication semantics to validate under (default async)")
    ap.add_argument("--csv", metavar="OUT", help="also write the schedule to OUT in torch's CSV format")
    add_synthesis_flags(ap)
    return ap


def add_synthesis_flags(ap: argparse.ArgumentParser, costs: bool = True) -> None:
    """The zb-auto flags (also taken by ``python -m simulator --schedule zb-auto``, which has
    its own --t-f/--t-i/--t-w, hence ``costs=False`` there)."""
    if costs:
        for flag, what in (("--t-f", "forward"), ("--t-i", "backward-for-inputs"), ("--t-w", "backward-for-weights")):
            ap.add_argument(flag, type=float, default=1.0, help=f"zb-auto: {what} time per stage (default 1)")
    ap.add_argument("--t-comm", type=float, default=None,
                    help="zb-auto: communication time per hop it plans with (default 0)")
    ap.add_argument("--memory-limit", type=float, default=None,
                    help="zb-auto: activations a stage may hold, in microbatches (default 2 * ranks: "
                         "ZB-2p; ranks gives ZB-1p)")


def _load(args: argparse.Namespace) -> Schedule:
    if args.file is not None:
        if args.name is not None:
            raise ScheduleError(f"give a schedule name or --file, not both (got {args.name!r} and --file)")
        return load_csv(args.file)
    if args.name is None:
        raise ScheduleError("name a schedule, or give --file or --list")
    if args.name == SYNTHESIZED:
        return synthesize(args.ranks, args.microbatches, args.t_f, args.t_i, args.t_w,
                          t_comm=args.t_comm or 0.0, memory_limit=args.memory_limit)
    return build(args.name, ranks=args.ranks, microbatches=args.microbatches, chunks=args.chunks)


def listing() -> str:
    """Every schedule: name, default chunks, paper and formula, constraints."""
    lines = []
    for name in names():
        entry = spec(name)
        rules = "; ".join(r for r in (entry.chunk_rule, entry.microbatch_rule) if r)
        lines.append(f"{name:<17} {entry.summary}\n{'':<17} constraints: {rules} (default chunks {entry.default_chunks})")
    lines.append(f"{SYNTHESIZED:<17} {SYNTHESIS_SUMMARY}\n{'':<17} constraints: chunks must be 1; "
                 f"flags --t-f --t-i --t-w --t-comm --memory-limit (>= 1)")
    return "\n".join(lines)


def _analytic_line(schedule: Schedule, from_file: bool) -> str:
    label = "analytic bubble fraction (share of rank-time idle, t_f = t_i = t_w = 1)"
    if from_file:
        return f"{label}: no closed form (schedule loaded from a file)"
    try:
        value = analytic.bubble_fraction(
            schedule.name, schedule.num_ranks, schedule.num_microbatches, schedule.chunks
        )
    except ValueError as err:
        reason = str(err)
        return f"{label}: {reason}" if reason.startswith("no closed form") else f"{label}: no closed form ({reason})"
    return f"{label}: {value:.4f}"


def _dry_run_line(lowered: Lowered, comm: str) -> str:
    run = dry_run(lowered.program, comm, durations=_UNIT)
    busy = sum(_UNIT[op.kind] for _, op in lowered if op.kind.is_compute)
    span = run.makespan
    bubble = 1.0 - busy / (lowered.num_ranks * span) if span else 0.0
    return f"unit-cost dry run ({comm}, free communication): makespan {span:g}, bubble fraction {bubble:.4f}"


def run(args: argparse.Namespace) -> str:
    """Everything but the printing, so that errors surface before any output."""
    if args.list:
        return listing()
    schedule = _load(args)
    lowered = validate(schedule, comm=args.comm)
    shown = lowered.program if args.comms else schedule.compute_only()
    if args.csv is not None:
        try:
            write_csv(shown, args.csv)
        except OSError as err:
            raise ScheduleError(f"cannot write {args.csv!r}: {err.strerror}") from None
    title = (f"{schedule.name}: {schedule.num_ranks} ranks, {schedule.num_microbatches} microbatches, "
             f"{schedule.num_stages} stages, {shown.num_ops()} ops")
    return "\n".join([title, format_grid(shown), _analytic_line(schedule, args.file is not None),
                      _dry_run_line(lowered, args.comm)])


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # argparse itself exits 2 on bad flags
    try:
        text = run(args)
    except ScheduleError as err:
        # Validation messages carry a grid below their first line; the CLI promises one line.
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return USAGE_ERROR
    print(text)
    return 0
