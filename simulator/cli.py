"""``python -m simulator``: simulate one schedule and print (or write) what it costs.

    python -m simulator --schedule 1f1b --ranks 4 --microbatches 8 --gantt out/1f1b.png
    python -m simulator --schedule-file torch.csv --costs-from trace.csv --json
    python -m simulator --schedule zb-h1 --ranks 2 --microbatches 8 --costs out/profile/costs.json
    python -m simulator --schedule zb-auto --ranks 8 --microbatches 24 --t-f 18.5 --t-i 18.1 --t-w 9.3 --t-comm 0.6 --memory-limit 16
    python -m simulator --schedule zb-1p --ranks 2 --microbatches 8 --costs out/profile/costs.json
    python -m simulator sweep --schedules all --ranks 2,4,8 --microbatches 4,8,16,32 --out table.csv

Bad input prints one line on stderr and exits with code 2 before any work: values the
costs refuse, a flag the schedule does not use (``--ranks`` beside ``--schedule-file``,
``--memory-limit`` for a built schedule), a size this machine cannot hold
(:mod:`simulator.bounds`), an output path that cannot be written or already exists
(``--force`` replaces it), an input file that is no schedule, trace or costs.json. A
failure while running exits 1 (an output that could not be written at the end is saved
to a temporary folder, named in the error), Ctrl-C 130 (:func:`cliguard.run_cli`).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
from pathlib import Path
from typing import Sequence

import schedules
from cliguard import Parser, UsageError, claim_file, run_cli, save_all
from schedules.bounds import number
from schedules.cli import add_synthesis_flags, check_synthesis_flags
from schedules.ir import gc_paused

from .bounds import BYTES_PER_OP, OUTPUT_BYTES_PER_OP, check_run
from .costs import Costs
from .flags import CostSource, add_cost_flags, costs_from_args
from .result import SimResult, simulate

__all__ = ["main", "format_summary"]

PROG = "python -m simulator"


def _parser() -> Parser:
    parser = Parser(prog=PROG, description="Simulate one step of a pipeline schedule "
                    "(subcommand: `python -m simulator sweep --help`).")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--schedule", choices=schedules.names(),
                      help="registered schedule; zb-1p, zb-2p and zb-auto are built for the layout's costs "
                      "(their mean stage, --t-comm per hop), zb-auto under --memory-limit")
    what.add_argument("--schedule-file", metavar="X.csv", help="schedule in torch's CSV format (it sets ranks, "
                      "microbatches and chunks: those flags are then refused)")
    parser.add_argument("--ranks", type=int, default=4, help="pipeline ranks p (default 4)")
    parser.add_argument("--microbatches", type=int, default=8, help="microbatches m (default 8)")
    parser.add_argument("--chunks", type=int, default=None, help="model stages per rank (default: the schedule's)")
    add_cost_flags(parser)
    add_synthesis_flags(parser, costs=False)  # --t-comm is also the link latency unless --latency
    parser.add_argument("--gantt", metavar="OUT.png", help="write a Gantt chart (PNG, SVG, PDF, ...)")
    parser.add_argument("--trace", metavar="OUT.json", help="write a Perfetto / chrome://tracing trace")
    parser.add_argument("--csv", metavar="OUT.csv", help="write the trace as CSV (shared schema)")
    parser.add_argument("--force", action="store_true", help="let --gantt, --trace and --csv replace existing files")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return parser


_OUTPUTS = {"gantt": "--gantt", "trace": "--trace", "csv": "--csv"}
_SIZE = ("ranks", "microbatches", "chunks")
_SYNTHESIS = ("t_comm", "memory_limit")  # of the schedules built for costs (--t-f etc. are every schedule's)


def _check_flags(args: argparse.Namespace, given: dict) -> None:
    """Refuse a flag the schedule would ignore, and a --comm it does not know (cheap checks,
    before anything is read or built)."""
    if args.schedule_file:
        unused = [f for f in _SIZE + _SYNTHESIS if f in given]
        if unused:
            raise UsageError(f"--{unused[0].replace('_', '-')} is set by the schedule file; drop it")
    else:
        check_synthesis_flags(schedules.spec(args.schedule), given, _SYNTHESIS)
    if args.comm not in schedules.COMM_MODES:
        raise UsageError(f"--comm must be one of {', '.join(schedules.COMM_MODES)}, got {args.comm!r}")


def _outputs(args: argparse.Namespace) -> list[str]:
    """The output flags given, each path checked for clashes and (--gantt) a format."""
    given = [flag for dest, flag in _OUTPUTS.items() if getattr(args, dest) is not None]
    seen: dict[Path, str] = {}
    for flag in given:
        path = Path(getattr(args, flag[2:])).resolve()
        if path in seen:
            raise UsageError(f"{seen[path]} and {flag} name the same file {str(path)!r}")
        seen[path] = flag
    if args.gantt:  # "" is claimed (and refused) below
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        formats = FigureCanvasAgg.get_supported_filetypes()
        if Path(args.gantt).suffix.lower().lstrip(".") not in formats:
            raise UsageError(f"--gantt {args.gantt!r}: name a picture file ending in one of "
                             f"{', '.join('.' + f for f in sorted(formats))}")
    return given


def _check_size(args: argparse.Namespace, outputs: list[str]) -> int:
    """Whether this machine holds the run and its outputs (a built schedule's size from its
    flags; a file's, as it loads); the bytes per op the run needs."""
    per_op = BYTES_PER_OP + sum(OUTPUT_BYTES_PER_OP[flag] for flag in outputs)
    if args.schedule_file:
        return per_op
    chunks = args.chunks or schedules.default_chunks(args.schedule)
    if min(args.ranks, args.microbatches, chunks, args.dp or 1) < 1:
        return per_op  # the builder (or Costs) says why, in its own words
    check_run(f"{args.schedule} with ranks={number(args.ranks)}, microbatches="
              f"{number(args.microbatches)}, chunks={number(chunks)}"
              + (f", dp={number(args.dp)}" if args.dp else ""),
              args.ranks * chunks, args.microbatches, args.ranks * (args.dp or 1), outputs)
    return per_op


def _schedule(args: argparse.Namespace, source: CostSource, per_op: int = BYTES_PER_OP) -> tuple[schedules.Schedule,
                                                                                                   Costs]:
    """The schedule and its costs: a schedule built for costs is built for its layout's."""
    if args.schedule_file:
        schedule = schedules.load_csv(args.schedule_file, bytes_per_op=per_op)
        return schedule, source(schedule)
    if not schedules.spec(args.schedule).costed:
        schedule = schedules.build(args.schedule, ranks=args.ranks, microbatches=args.microbatches,
                                   chunks=args.chunks, bytes_per_op=per_op)
        return schedule, source(schedule)
    costs = source.layout(args.ranks, 1, args.microbatches)
    if args.t_comm is not None and args.latency is None:
        costs = dataclasses.replace(costs, latency=args.t_comm)
    schedule = schedules.build(args.schedule, ranks=args.ranks, microbatches=args.microbatches, bytes_per_op=per_op,
                               costs=costs.stage_costs(args.ranks, args.t_comm), memory_limit=args.memory_limit)
    return schedule, costs


def format_summary(result: SimResult) -> str:
    s = result.schedule
    lines = [
        f"{s.name}  p={s.num_ranks}  m={s.num_microbatches}  chunks={s.chunks}  comm={result.comm_mode}",
        f"makespan         {result.makespan:.6g} s",
        f"bubble fraction  {result.bubble_fraction:.2%}",
        f"{'rank':>4}  {'busy %':>7}  {'bubble %':>8}  {'peak memory (bytes)':>19}  {'in flight':>9}",
    ]
    for row in result.per_rank_rows():
        busy = row["busy"] / result.makespan if result.makespan else 0.0
        lines.append(f"{row['rank']:>4}  {busy:>7.1%}  {row['bubble_fraction']:>8.1%}  "
                     f"{row['peak_memory_bytes']:>19.6g}  {row['peak_inflight']:>9}")
    return "\n".join(lines)


def _writers(result: SimResult) -> dict[str, object]:
    """Per output flag: a function writing it to the path it is given."""

    def gantt(path: Path) -> None:
        from timeline.gantt import plot_gantt

        plot_gantt(result.trace, path)

    def trace(path: Path) -> None:
        from .chrome import to_chrome_trace

        to_chrome_trace(result.trace, path, result.costs.act_memory, result.costs.w_memory_fraction)

    return {"--csv": lambda path: result.trace.to_csv(path, index=False), "--gantt": gantt, "--trace": trace}


def _run(argv: Sequence[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check_flags(args, parser.given)
    outputs = _outputs(args)
    per_op = _check_size(args, outputs)
    # Between build and summary the only objects made are Ops, ints and floats, by the
    # hundred thousand and without cycles: a collection would only walk them again. They
    # live until the process exits, so they are then frozen out of the collector's sight
    # (also of the last collection at exit).
    with gc_paused():
        source = costs_from_args(args)
        targets = {flag: claim_file(getattr(args, flag[2:]), force=args.force, flag=flag) for flag in outputs}
        schedule, costs = _schedule(args, source, per_op)
        result = simulate(schedule, costs, comm_mode=args.comm)
        gc.freeze()
    write = _writers(result)
    try:  # every output is attempted, the summary printed, whatever fails
        save_all([(flag, targets[flag], write[flag]) for flag in outputs])
    finally:
        if args.json:
            print(json.dumps(result.summary(), default=_json_number))
        else:
            print(format_summary(result))
    return 0


def _json_number(value):
    return value.item() if hasattr(value, "item") else str(value)


def _main(argv: Sequence[str]) -> int:
    if argv[:1] == ["sweep"]:
        from .sweep import sweep_main

        return sweep_main(argv[1:])
    return _run(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 done, 2 bad input (one line), 1 a failure while running, 130 Ctrl-C."""
    return run_cli(PROG, _main, argv)
