"""``python -m schedules``: print a schedule's step x rank grid and its bubble fraction.

    python -m schedules 1f1b --ranks 4 --microbatches 8
    python -m schedules interleaved-1f1b --ranks 4 --microbatches 8 --chunks 2 --comms
    python -m schedules --file torch_schedule.csv --comm blocking
    python -m schedules zb-auto --ranks 8 --microbatches 24 --t-f 18.5 --t-i 18.1 --t-w 9.3 --t-comm 0.6 --memory-limit 16
    python -m schedules --list

The schedule is validated under ``--comm`` before it is printed. The bubble fraction is
this project's definition, 1 - busy / (p * makespan): the share of rank-time spent idle
(uniform unit costs t_f = t_i = t_w = 1, free communication). The schedules built for
costs (zb-1p, zb-2p, zb-auto) take them from ``--t-f --t-i --t-w --t-comm``.

Bad input prints one line on stderr and exits with status 2 before any work: a flag the
schedule does not use (``--ranks`` beside ``--file``, ``--t-f`` for a schedule that is not
built for costs, ``--memory-limit`` for one whose name fixes it), a
size this machine cannot hold (:mod:`schedules.bounds`), a ``--csv`` path that cannot be
written or already exists (``--force`` replaces it). A failure while running exits 1,
Ctrl-C 130 (:func:`cliguard.run_cli`).
"""

from __future__ import annotations

import argparse
from typing import Sequence

from cliguard import Parser, claim_file, run_cli, save_all

from . import analytic
from .bounds import BYTES_PER_OP, GRID_BYTES_PER_CELL, check_fits, lowered_ops, number
from .csvio import load_csv, write_csv
from .dryrun import dry_run
from .grid import format_grid
from .ir import COMM_MODES, OpKind, Schedule, ScheduleError
from .lowered import Lowered
from .registry import Spec, StageCosts, build, default_chunks, names, spec
from .validate import validate

__all__ = ["main", "parser", "add_synthesis_flags", "check_synthesis_flags"]

_UNIT = {OpKind.F: 1.0, OpKind.I: 1.0, OpKind.W: 1.0, OpKind.B: 2.0, OpKind.OVERLAP_F_B: 3.0}  # B = I + W
_SIZE = ("ranks", "microbatches", "chunks")
_COSTS = ("t_f", "t_i", "t_w", "t_comm")  # the flags of a schedule built for costs
_SYNTHESIS = (*_COSTS, "memory_limit")


def parser() -> Parser:
    ap = Parser(
        prog="python -m schedules",
        description="Print a pipeline schedule as a step x rank grid with its bubble fraction "
        "(share of rank-time idle, unit costs, free communication).",
    )
    ap.add_argument("name", nargs="?", help=f"schedule to build: {', '.join(names())}")
    ap.add_argument("--file", help="load a schedule from a torch-format CSV instead of building one "
                    "(then --ranks, --microbatches, --chunks and the costs flags are refused: the file sets them)")
    ap.add_argument("--list", action="store_true", help="list every schedule with its formula and constraints, and exit")
    ap.add_argument("--ranks", type=int, default=4, help="pipeline ranks p (default 4)")
    ap.add_argument("--microbatches", type=int, default=8, help="microbatches m per step (default 8)")
    ap.add_argument("--chunks", type=int, default=None,
                    help="model stages per rank v (default: the schedule's own, 2 for zbv and interleaved-1f1b)")
    ap.add_argument("--comms", action="store_true", help="show (and write) the lowered schedule with SEND/RECV")
    ap.add_argument("--comm", choices=COMM_MODES, default="async",
                    help="communication semantics to validate under (default async)")
    ap.add_argument("--csv", metavar="OUT", help="also write the schedule to OUT in torch's CSV format "
                    "(refused if OUT exists, unless --force)")
    ap.add_argument("--force", action="store_true", help="let --csv replace an existing file")
    add_synthesis_flags(ap)
    return ap


def add_synthesis_flags(ap: argparse.ArgumentParser, costs: bool = True) -> None:
    """The flags of the schedules built for costs (also taken by ``python -m simulator``, which
    has its own --t-f/--t-i/--t-w, hence ``costs=False`` there)."""
    if costs:
        for flag, what in (("--t-f", "forward"), ("--t-i", "backward-for-inputs"), ("--t-w", "backward-for-weights")):
            ap.add_argument(flag, type=float, default=1.0,
                            help=f"zb-1p, zb-2p, zb-auto: {what} time per stage (default 1)")
    ap.add_argument("--t-comm", type=float, default=None,
                    help="zb-1p, zb-2p, zb-auto: communication time per hop they plan with (default 0)")
    ap.add_argument("--memory-limit", type=float, default=None,
                    help="zb-auto: activations a stage may hold, in microbatches (default 2 * ranks: "
                         "ZB-2p; ranks gives ZB-1p)")


def check_synthesis_flags(entry: Spec, given, flags=_SYNTHESIS) -> None:
    """Refuse a costs flag among ``given`` that the schedule ``entry`` does not read, and
    --chunks for a schedule built for costs (one stage a rank)."""
    if entry.costed and "chunks" in given:
        raise ScheduleError(f"--chunks does not apply: {entry.name} has one stage per rank; drop --chunks")
    unused = [f for f in flags if f in given and not (entry.limit_given if f == "memory_limit" else entry.costed)]
    if unused:
        owners = [n for n in names() if (spec(n).limit_given if unused[0] == "memory_limit" else spec(n).costed)]
        also = f" (also {', '.join(owners[:-1])})" if len(owners) > 1 else ""
        raise ScheduleError(f"{_flag(unused[0])} is a {owners[-1]} flag{also}; {entry.name} does not use it")


def _check_flags(args: argparse.Namespace, given: dict) -> None:
    """Refuse a flag the chosen schedule would ignore (cheap checks, before anything is built)."""
    if args.list:
        extra = [f for f in given if f != "list"] + (["name"] if args.name is not None else [])
        if extra:
            raise ScheduleError(f"--list takes no other argument (got {_flag(extra[0])})")
        return
    if args.file is not None:
        if args.name is not None:
            raise ScheduleError(f"give a schedule name or --file, not both (got {args.name!r} and --file)")
        unused = [f for f in _SIZE + _SYNTHESIS if f in given]
        if unused:
            raise ScheduleError(f"{_flag(unused[0])} is set by the schedule file; drop it")
        return
    if args.name is None:
        raise ScheduleError("name a schedule, or give --file or --list")
    check_synthesis_flags(spec(args.name), given)  # an unknown name fails here


def _flag(dest: str) -> str:
    return "a schedule name" if dest == "name" else "--" + dest.replace("_", "-")


def _check_size(args: argparse.Namespace) -> None:
    """Whether this machine holds the built schedule, before it is built (its grid, with fewer
    cells than ops, is made after the validation's peak; a file is checked as it loads)."""
    if args.list or args.file is not None:
        return
    chunks = args.chunks or default_chunks(args.name)
    if min(args.ranks, args.microbatches, chunks) < 1:
        return  # the builder says why, in its own words
    check_fits(f"{args.name} with ranks={number(args.ranks)}, microbatches={number(args.microbatches)}, "
               f"chunks={number(chunks)}", lowered_ops(args.ranks * chunks, args.microbatches), BYTES_PER_OP)


def _load(args: argparse.Namespace) -> Schedule:
    if args.file is not None:
        return load_csv(args.file)
    costs = StageCosts(args.t_f, args.t_i, args.t_w, args.t_comm or 0.0) if spec(args.name).costed else None
    return build(args.name, ranks=args.ranks, microbatches=args.microbatches, chunks=args.chunks, costs=costs,
                 memory_limit=args.memory_limit)


def listing() -> str:
    """Every schedule: name, default chunks, paper and formula, constraints."""
    lines = []
    for name in names():
        entry = spec(name)
        flags = " --memory-limit (>= 1)" if entry.limit_given else ""
        built_for = f"flags --t-f --t-i --t-w --t-comm{flags}" if entry.costed else ""
        rules = "; ".join(r for r in (entry.chunk_rule, entry.microbatch_rule, built_for) if r)
        lines.append(f"{name:<17} {entry.summary}\n{'':<17} constraints: {rules} (default chunks {entry.default_chunks})")
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


def _dry_run_line(lowered: Lowered) -> str:
    run = dry_run(lowered, durations=_UNIT)
    busy = sum(_UNIT[op.kind] for _, op in lowered if op.kind.is_compute)
    span = run.makespan
    bubble = 1.0 - busy / (lowered.num_ranks * span) if span else 0.0
    return f"unit-cost dry run ({lowered.comm_mode}, free communication): makespan {span:g}, bubble fraction {bubble:.4f}"


def run(args: argparse.Namespace) -> tuple[str, Schedule | None]:
    """Everything but the printing and the writing, so that errors surface before any
    output: the text to print and the lists to write to ``--csv`` (None: --list)."""
    if args.list:
        return listing(), None
    schedule = _load(args)
    if args.file is not None:  # the grid of a file's lists: ranks x its longest list (x 3 once lowered)
        longest = max(len(rank_ops) for rank_ops in schedule.ops) * (3 if args.comms and not schedule.has_comms else 1)
        check_fits(f"the grid of {args.file!r} ({schedule.num_ranks} ranks x up to {longest} steps)",
                   schedule.num_ranks * longest, GRID_BYTES_PER_CELL, unit="cell")
    lowered = validate(schedule, comm_mode=args.comm)
    shown = lowered.program if args.comms else schedule.compute_only()
    title = (f"{schedule.name}: {schedule.num_ranks} ranks, {schedule.num_microbatches} microbatches, "
             f"{schedule.num_stages} stages, {shown.num_ops()} ops")
    return "\n".join([title, format_grid(shown), _analytic_line(schedule, args.file is not None),
                      _dry_run_line(lowered)]), shown


def _main(argv: Sequence[str]) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    _check_flags(args, ap.given)
    _check_size(args)
    target = claim_file(args.csv, force=args.force, flag="--csv") if args.csv is not None else None
    text, shown = run(args)
    try:
        if target is not None:
            save_all([("--csv", target, lambda path: write_csv(shown, path))])
    finally:
        print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 done, 2 bad input (one line), 1 a failure while running, 130 Ctrl-C."""
    return run_cli("python -m schedules", _main, argv, name_errors=False)
