"""``python -m planner``: from a model and a cluster to the layout to run.

    python -m planner --model gpt3-175b --describe --json
    python -m planner --model gpt3-175b --gpu a100-80gb --gpus 1024 --gpus-per-node 8 --global-batch 1536
    python -m planner --model config.json --gpus 64 --global-batch 512 --tp 8 --emit megatron
    mpiexec -n 4 python -m planner --model llama3-8b --gpus 8 --global-batch 64 --json
    python -m planner --profile out/profile/costs.json --verify 6

Bad input prints one line on stderr and exits with code 2 before any work (every output
path is claimed first: an existing file needs ``--force``); a search in which no layout
fits explains why and exits with code 1 (:func:`cliguard.run_cli` is the one error path).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import cliguard
import schedules
from simulator.workers import mpi_world_size, open_workers

from .args import PROG, config_from_args, parser, worker_count
from .describe import describe, format_describe
from .emit import EMITTERS
from .layout import stage_costs
from .options import OptionError
from .report import explain_rejections, format_table, plans_frame, plot_pareto, size
from .search import Search, build_schedule, plan, spec_for
from .space import PlanConfig

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["main"]

_OUTPUTS = (("csv", "--csv"), ("plot", "--plot"), ("schedule_out", "--schedule-out"))


class _Found(NamedTuple):
    """A search and how to report and check it."""

    search: Search
    cap: float
    title: str
    check: Callable[[list], "pd.DataFrame"]
    """--verify: runs the best plans under the executor, one row each."""
    efficiency: float | None
    """The GEMM efficiency the FLOPs model assumed (None: costs from a profile)."""
    config: PlanConfig | None
    """The FLOPs model's config (None: costs from a profile)."""


def _claim_outputs(args: argparse.Namespace) -> None:
    """Every file and folder this run will write, checked (and refused if it exists,
    unless --force) before any work starts."""
    for name, flag in _OUTPUTS:
        if getattr(args, name):
            cliguard.claim_file(getattr(args, name), force=args.force, flag=flag)
    if args.verify is not None:
        if args.verify_out is None:
            args.verify_out = str(cliguard.fresh_dir("out", "verify", flag="--verify-out"))
        else:
            cliguard.claim_dir(args.verify_out, force=args.force, flag="--verify-out")


def _write_best(found: _Found, args: argparse.Namespace) -> None:
    best = found.search.plans[0].layout
    if args.schedule_out:
        schedule = build_schedule(found.config, best) if found.config else schedules.build(
            best.schedule, ranks=best.pp, microbatches=best.microbatches, chunks=best.chunks)
        schedules.write_csv(schedule, args.schedule_out)
    if args.emit:
        config = found.config
        spec = spec_for(config.model, best.microbatch_size)
        layers = stage_costs(spec, best, config.machine).layers
        print(EMITTERS[args.emit](spec, best, config.global_batch, layers))


def _report(found: _Found, args: argparse.Namespace) -> int:
    """Print and write what the search found; with --verify run the best plans.
    Called once the workers are closed, so no pool shares the cores with --verify's runs."""
    search, cap = found.search, found.cap
    if not args.quiet:
        fits = len(search.fitting)
        print(f"{len(search.candidates)} layouts, {fits} fit in {size(cap)}, {len(search.plans)} simulated "
              f"(pre-filter {search.seconds['enumerate']:.1f} s, simulation {search.seconds['simulate']:.1f} s); "
              f"{len(search.skipped)} combinations skipped", file=sys.stderr)
        why = explain_rejections(search, cap)
        if why:
            print(why, file=sys.stderr)
    if args.plot:
        plot_pareto(search, args.plot, cap, found.title)
    if not search.candidates:
        reason = search.skipped[0] if search.skipped else "the flags leave nothing to try"
        print(f"{PROG}: no layout to try ({len(search.skipped)} combinations skipped, e.g. {reason})", file=sys.stderr)
        return 1
    if not search.plans:
        print(f"{PROG}: no layout fits in {size(cap)} per GPU", file=sys.stderr)
        if args.quiet:
            print(explain_rejections(search, cap), file=sys.stderr)
        return 1
    frame = plans_frame(search.plans)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    if args.json:
        print(json.dumps(frame.to_dict("records")))
    elif not args.emit:
        print(format_table(search.plans))
    _write_best(found, args)
    if args.verify:
        from .verify import format_verify  # pandas and the executor's launcher: only for --verify

        table = found.check(search.plans)
        print(format_verify(table, found.efficiency), file=sys.stderr if args.json else sys.stdout)
        return 1 if len(table) and table["failure"].notna().any() else 0  # a run that failed is a failed check
    return 0


def _plan_flops(args: argparse.Namespace, config: PlanConfig, workers) -> _Found:
    search = plan(config, workers, progress=not args.quiet)

    def check(plans: list):
        from .verify import verify

        return verify(config, plans, args.verify, Path(args.verify_out), args.verify_steps)

    title = f"{config.model.name} on {config.machine.gpus} x {config.machine.gpu.name}"
    return _Found(search, config.memory_cap, title, check, config.machine.gpu.gemm_efficiency, config)


def _plan_profiled(args: argparse.Namespace, config, workers) -> _Found:
    from .profile_cli import efficiency_report, verify_profiled
    from .profiled import plan_profiled

    search = plan_profiled(config, workers, progress=not args.quiet)
    if not args.quiet:
        print(efficiency_report(config), file=sys.stderr)

    def check(plans: list):
        return verify_profiled(config, plans, args.verify, Path(args.verify_out), args.verify_steps)

    model = config.profile.conditions.model
    title = f"{model.get('model')} profiled on {config.profile.conditions.host} ({config.profile.source})"
    return _Found(search, config.memory_cap, title, check, None, None)


def _check_common(args: argparse.Namespace) -> None:
    """Checks that hold for plans from FLOPs and from a profile alike."""
    for flag, value in (("--workers", args.workers), ("--verify", args.verify), ("--verify-steps", args.verify_steps)):
        if value is not None and value < 1:
            raise OptionError(f"{flag} must be >= 1, got {value}")
    if args.verify is not None and mpi_world_size() > 1:
        raise OptionError("--verify launches mpiexec itself: run it without mpiexec")
    if args.emit and args.json:
        raise OptionError("--emit prints the best layout for another tool: drop --json (or use --csv for the table)")


def _run(argv: Sequence[str], lead: bool) -> int:
    args = parser().parse_args(list(argv))
    _check_common(args)
    if args.profile is not None:
        from .profile_cli import profile_config

        profiled, config = profile_config(args, lead), None
    else:
        profiled, config = None, config_from_args(args)
        if args.describe:
            if lead:
                figures = describe(config)
                print(json.dumps(figures) if args.json else format_describe(figures))
            return 0
    if lead:
        _claim_outputs(args)
    workers, note = worker_count(args.workers)
    if note and lead and mpi_world_size() == 1:
        print(note, file=sys.stderr)
    with open_workers(workers) as pool:
        if pool is None:  # an MPI rank that ran simulations for rank 0
            return 0
        found = _plan_flops(args, config, pool) if profiled is None else _plan_profiled(args, profiled, pool)
    return _report(found, args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    lead = mpi_world_size() == 1 or _mpi_rank() == 0
    if lead:
        return cliguard.run_cli(PROG, lambda a: _run(a, True), argv)
    try:  # the other MPI ranks: rank 0 reports
        return _run(argv, False)
    except (ValueError, OSError):
        return 2


def _mpi_rank() -> int:
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank()
