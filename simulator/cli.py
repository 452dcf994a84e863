"""``python -m simulator``: simulate one schedule and print (or write) what it costs.

    python -m simulator --schedule 1f1b --ranks 4 --microbatches 8 --gantt out/1f1b.png
    python -m simulator --schedule-file torch.csv --costs-from trace.csv --json
    python -m simulator --schedule zb-h1 --ranks 2 --microbatches 8 --costs out/profile/costs.json
    python -m simulator --schedule zb-auto --ranks 8 --microbatches 24 --t-f 18.5 --t-i 18.1 --t-w 9.3 --t-comm 0.6 --memory-limit 16
    python -m simulator sweep --schedules all --ranks 2,4,8 --microbatches 4,8,16,32 --out table.csv

Bad input prints one line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import schedules
from schedules.cli import SYNTHESIZED, add_synthesis_flags
from schedules.ir import gc_paused

from .costs import Costs
from .profile import Profile
from .result import SimResult, simulate

__all__ = ["main", "Parser", "add_cost_flags", "costs_from_args", "CostSource", "format_summary", "UsageError"]


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors reach :func:`main`, which reports them in one line."""

    def error(self, message: str):
        raise UsageError(message)


def _number_list(text: str) -> float | list[float]:
    """A number, or comma-separated numbers (one per stage)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers, got {text!r}") from None
    return values[0] if len(values) == 1 else values


# flag -> (Costs field, help). Defaults are None so that --costs-from values survive.
_COST_FLAGS = {
    "--t-f": ("t_f", "forward time per stage (s); one value or one per stage, comma-separated"),
    "--t-i": ("t_i", "backward-for-inputs time per stage (s)"),
    "--t-w": ("t_w", "backward-for-weights time per stage (s)"),
    "--t-b": ("t_b", "full (fused) backward time per stage (s); default t_i + t_w"),
    "--act-bytes": ("act_bytes", "activation bytes per microbatch per stage boundary"),
    "--grad-bytes": ("grad_bytes", "gradient bytes per stage (all-reduced when --dp > 1)"),
    "--act-memory": ("act_memory", "activation memory per microbatch per stage (bytes; default 1 = count)"),
}


def add_cost_flags(parser: argparse.ArgumentParser) -> None:
    for flag, (_, text) in _COST_FLAGS.items():
        parser.add_argument(flag, type=_number_list, default=None, help=text)
    parser.add_argument("--bandwidth", type=float, default=None, help="link bandwidth in bytes/s (default: inf)")
    parser.add_argument("--latency", type=float, default=None, help="per-transfer latency in s (default: 0)")
    parser.add_argument("--dp", type=int, default=None, help="data-parallel degree (adds gradient all-reduces)")
    parser.add_argument("--optimizer-time", type=float, default=None, help="optimizer step time in s")
    parser.add_argument("--w-memory-fraction", type=float, default=None,
                        help="share of a stage's activations W holds after I (default 0.5)")
    parser.add_argument("--ranks-per-node", type=int, default=None,
                        help="ranks per node, placed in order (default: one a node)")
    parser.add_argument("--share", type=_number_list, default=None,
                        help="per-rank compute rate with k = 1,2,... ranks of a node busy (default: all 1.0)")
    parser.add_argument("--comm-interference", type=float, default=None,
                        help="fraction compute slows while the rank's own transfers are in flight (default 0)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--costs", metavar="COSTS.json", default=None,
                        help="a profile (`python -m executor profile`): the costs of each layout; flags override")
    source.add_argument("--costs-from", metavar="TRACE.csv", default=None,
                        help="calibrate costs from a measured trace; explicit flags override them")
    parser.add_argument("--comm", default="async", help="async or blocking (sweep: comma-separated)")


@dataclass(frozen=True)
class CostSource:
    """The costs of each schedule as the flags give them: a profile's layout (``--costs``) or
    one set for every schedule (defaults or ``--costs-from``), then the explicit flags."""

    base: Costs
    profile: Profile | None = None
    overrides: dict = field(default_factory=dict)

    def __call__(self, schedule: schedules.Schedule) -> Costs:
        return self.layout(schedule.num_ranks, schedule.chunks, schedule.num_microbatches)

    def layout(self, ranks: int, chunks: int, microbatches: int) -> Costs:
        if self.profile is None:
            return dataclasses.replace(self.base, **self.overrides)
        overrides = dict(self.overrides)
        costs = self.profile.costs(ranks=ranks, chunks=chunks, microbatches=microbatches,
                                   dp=overrides.pop("dp", None))  # --dp picks the layout
        return dataclasses.replace(costs, **overrides)


def costs_from_args(args: argparse.Namespace) -> CostSource:
    base, profile = Costs(), None
    if args.costs:
        profile = Profile.load(args.costs)
    if args.costs_from:
        import pandas as pd  # only here: loading it takes longer than a whole simulation

        from timeline import check_trace

        try:
            measured = pd.read_csv(args.costs_from)
        except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
            raise UsageError(f"cannot read trace {args.costs_from!r}: {err}") from None
        base = Costs.from_trace(check_trace(measured), act_bytes=args.act_bytes)
    fields = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _) in _COST_FLAGS.items()}
    for name in ("bandwidth", "latency", "dp", "optimizer_time", "w_memory_fraction", "ranks_per_node",
                 "comm_interference"):
        fields[name] = getattr(args, name)
    if args.share is not None:
        fields["share"] = tuple(args.share) if isinstance(args.share, list) else (args.share,)
    return CostSource(base, profile, {k: v for k, v in fields.items() if v is not None})


def _parser() -> Parser:
    parser = Parser(prog="python -m simulator", description="Simulate one step of a pipeline schedule "
                    "(subcommand: `python -m simulator sweep --help`).")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--schedule", choices=schedules.names() + [SYNTHESIZED],
                      help="built-in schedule, or zb-auto: synthesized for --t-f/--t-i/--t-w/--t-comm under --memory-limit")
    what.add_argument("--schedule-file", metavar="X.csv", help="schedule in torch's CSV format")
    parser.add_argument("--ranks", type=int, default=4, help="pipeline ranks p (default 4)")
    parser.add_argument("--microbatches", type=int, default=8, help="microbatches m (default 8)")
    parser.add_argument("--chunks", type=int, default=None, help="model stages per rank (default: the schedule's)")
    add_cost_flags(parser)
    add_synthesis_flags(parser, costs=False)  # zb-auto; --t-comm is also the link latency unless --latency
    parser.add_argument("--gantt", metavar="OUT.png", help="write a Gantt chart (PNG or SVG)")
    parser.add_argument("--trace", metavar="OUT.json", help="write a Perfetto / chrome://tracing trace")
    parser.add_argument("--csv", metavar="OUT.csv", help="write the trace as CSV (shared schema)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return parser


def _schedule(args: argparse.Namespace, costs: Costs | None) -> schedules.Schedule:
    if args.schedule == SYNTHESIZED:
        times = [costs.t_f, costs.t_i, costs.t_w]
        if any(not isinstance(t, float) for t in times):
            if args.costs is None:
                raise UsageError("zb-auto takes one --t-f, --t-i and --t-w for every stage, not per-stage lists")
            times = [sum(t) / len(t) if isinstance(t, tuple) else t for t in times]  # a profile's stages: their mean
        return schedules.synthesize(args.ranks, args.microbatches, *times, t_comm=args.t_comm or 0.0,
                                    memory_limit=args.memory_limit, w_memory_fraction=costs.w_memory_fraction)
    if args.schedule_file:
        return schedules.load_csv(args.schedule_file)
    return schedules.build(args.schedule, ranks=args.ranks, microbatches=args.microbatches, chunks=args.chunks)


def format_summary(result: SimResult) -> str:
    s = result.schedule
    lines = [
        f"{s.name}  p={s.num_ranks}  m={s.num_microbatches}  chunks={s.chunks}  comm={result.comm}",
        f"makespan         {result.makespan:.6g} s",
        f"bubble fraction  {result.bubble_fraction:.2%}",
        f"{'rank':>4}  {'busy %':>7}  {'bubble %':>8}  {'peak memory (bytes)':>19}  {'in flight':>9}",
    ]
    for row in result.per_rank_rows():
        busy = row["busy"] / result.makespan if result.makespan else 0.0
        lines.append(f"{row['rank']:>4}  {busy:>7.1%}  {row['bubble_fraction']:>8.1%}  "
                     f"{row['peak_memory_bytes']:>19.6g}  {row['peak_inflight']:>9}")
    return "\n".join(lines)


def _write_outputs(result: SimResult, args: argparse.Namespace) -> None:
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        result.trace.to_csv(args.csv, index=False)
    if args.gantt:
        from timeline.gantt import plot_gantt

        plot_gantt(result.trace, args.gantt)
    if args.trace:
        from .chrome import to_chrome_trace

        to_chrome_trace(result.trace, args.trace, result.costs.act_memory, result.costs.w_memory_fraction)


def _run(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.comm not in schedules.COMMS:
        raise UsageError(f"--comm must be one of {', '.join(schedules.COMMS)}, got {args.comm!r}")
    # Between build and summary the only objects made are Ops, ints and floats, by the
    # hundred thousand and without cycles: a collection would only walk them again. They
    # live until the process exits, so they are then frozen out of the collector's sight
    # (also of the last collection at exit).
    with gc_paused():
        source = costs_from_args(args)
        if args.schedule == SYNTHESIZED:  # the synthesis is made for the layout's costs
            costs = source.layout(args.ranks, 1, args.microbatches)
            if args.t_comm is not None and args.latency is None:
                costs = dataclasses.replace(costs, latency=args.t_comm)
            schedule = _schedule(args, costs)
        else:
            schedule = _schedule(args, None)
            costs = source(schedule)
        result = simulate(schedule, costs, comm=args.comm)
        gc.freeze()
    _write_outputs(result, args)
    if args.json:
        print(json.dumps(result.summary(), default=_json_number))
    else:
        print(format_summary(result))
    return 0


def _json_number(value):
    return value.item() if hasattr(value, "item") else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["sweep"]:
            from .sweep import sweep_main

            return sweep_main(argv[1:])
        return _run(argv)
    except (UsageError, ValueError) as err:  # ScheduleError is a ValueError
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"python -m simulator: error: {first}", file=sys.stderr)
        return 2
