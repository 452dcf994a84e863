"""``python -m planner``: from a model and a cluster to the pipeline layout to run.

    python -m planner --model gpt3-175b --describe --json
    python -m planner --model gpt3-175b --gpu a100-80gb --gpus 1024 --gpus-per-node 8 --global-batch 1536
    mpiexec -n 4 python -m planner --model llama3-8b --gpus 8 --global-batch 64 --json
    python -m planner --profile out/profile/costs.json --verify 6

Bad input prints one line on stderr and exits with code 2 before any work; a search in
which no layout fits explains why and exits with code 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import schedules
from simulator.sweep import whole_numbers
from simulator.workers import mpi_world_size, open_workers

from .hardware import DEFAULT_EFFICIENCY, GPUS, LINKS
from .layout import SPLITS, Machine
from .options import OptionError, choices, load_config, override, parse_bytes, parse_sets
from .presets import MODELS
from .report import explain_rejections, format_table, plans_frame, plot_pareto, size
from .search import PlanConfig, Search, plan
from .verify import format_verify
from .transformer import RECOMPUTE

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["main", "config_from_args"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise OptionError(message)


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m planner", description="Search pipeline x data-parallel layouts, schedules, "
                 "chunks, microbatches and layer splits for a transformer on a cluster; simulate the best.")
    ap.add_argument("--model", default=None, help=f"model preset: {', '.join(MODELS)} (default gpt3-175b)")
    ap.add_argument("--gpu", default="a100-80gb",
                    help=f"GPU preset: {', '.join(GPUS)}, or this-cpu (measured here, for --verify) (default a100-80gb)")
    ap.add_argument("--gpus", type=int, default=None, help="GPUs in all (default 1024; with --profile its world)")
    ap.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node sharing the intra link (default 8)")
    ap.add_argument("--intra-link", default=None, help=f"link inside a node: {', '.join(LINKS)} (default: the GPU's)")
    ap.add_argument("--inter-link", default="infiniband", help="link between nodes (default infiniband)")
    ap.add_argument("--global-batch", type=int, default=None,
                    help="sequences per step over all replicas (default 1536; with --profile its batch)")
    ap.add_argument("--microbatch-size", type=whole_numbers, default=(1,), help="sequences per microbatch, comma-separated (default 1)")
    ap.add_argument("--schedules", default="all", help="comma-separated schedule names, or all (default)")
    ap.add_argument("--chunks", type=whole_numbers, default=(1, 2, 3, 4), help="chunk counts to try where a schedule takes them (default 1,2,3,4)")
    ap.add_argument("--split", default="uniform,balanced", help="layer splits: uniform, balanced or both (default)")
    ap.add_argument("--recompute", default="none,full", help="none, full, or both comma-separated (default both)")
    ap.add_argument("--memory-cap", default=None, help="bytes a rank may use, e.g. 80GiB (default: the GPU's memory)")
    ap.add_argument("--efficiency", type=float, default=None, help=f"achieved share of peak FLOP/s (default {DEFAULT_EFFICIENCY})")
    ap.add_argument("--config", metavar="FILE.json", help="overrides: sections model, gpu, intra_link, inter_link")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="one override, e.g. model.layers=48 (repeatable)")
    ap.add_argument("--top", type=int, default=10, help="layouts to simulate with SimPy besides each schedule's best (default 10)")
    ap.add_argument("--comm", choices=schedules.COMMS, default="async", help="communication semantics (default async)")
    ap.add_argument("--workers", type=int, default=None, help="processes for the simulations (default: the machine's cores; under mpiexec every rank)")
    ap.add_argument("--describe", action="store_true", help="print the model's parameters, FLOPs and memory, then exit")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--csv", metavar="FILE", help="write the ranked table as CSV")
    ap.add_argument("--plot", metavar="FILE.png", help="write a Pareto plot of peak memory against step time")
    ap.add_argument("--schedule-out", metavar="FILE.csv", help="write the best layout's schedule as a torch CSV")
    ap.add_argument("--quiet", action="store_true", help="no progress bar or summary on stderr")
    ap.add_argument("--verify", type=int, default=None, metavar="K",
                    help="run the K best layouts under the executor here and compare rankings (needs --profile, "
                         "or --model executor-transformer --gpu this-cpu --gpus 2)")
    ap.add_argument("--verify-out", default="out/verify", help="folder for the executor runs (default out/verify)")
    ap.add_argument("--verify-steps", type=int, default=10, help="timed steps of each --verify run (default 10)")
    ap.add_argument("--profile", metavar="COSTS.json", help="plan from this profile of `python -m executor profile` "
                    "instead of from FLOPs: its model, world and layouts")
    return ap


def _preset(table: dict, name: str, flag: str):
    if name not in table:
        raise OptionError(f"{flag}: unknown preset {name!r}; choose from {', '.join(table)}")
    return table[name]


def config_from_args(args: argparse.Namespace) -> PlanConfig:
    """Every value checked and every override applied, before any work."""
    values = parse_sets(args.set, load_config(args.config))
    model = override(_preset(MODELS, args.model or "gpt3-175b", "--model"), values.get("model", {}), "model")
    gpus = 1024 if args.gpus is None else args.gpus
    global_batch = 1536 if args.global_batch is None else args.global_batch
    if args.gpu == "this-cpu":
        from .verify import this_cpu

        base_gpu = this_cpu()
    else:
        base_gpu = _preset(GPUS, args.gpu, "--gpu")
    gpu = override(base_gpu, values.get("gpu", {}), "gpu")
    intra = override(_preset(LINKS, args.intra_link or gpu.intra_link, "--intra-link"), values.get("intra_link", {}), "intra_link")
    inter = override(_preset(LINKS, args.inter_link, "--inter-link"), values.get("inter_link", {}), "inter_link")
    efficiency = args.efficiency if args.efficiency is not None else values.get("efficiency", DEFAULT_EFFICIENCY)
    if isinstance(efficiency, bool) or not isinstance(efficiency, (int, float)) or not 0 < efficiency <= 1:
        raise OptionError(f"efficiency must be within (0, 1], got {efficiency!r}")
    for flag, value in (("--gpus", gpus), ("--gpus-per-node", args.gpus_per_node),
                        ("--global-batch", global_batch), ("--top", args.top)):
        if value < 1:
            raise OptionError(f"{flag} must be >= 1, got {value}")
    if args.verify is not None:
        from .verify import check_runnable

        check_runnable(model, gpus)
    cap = args.memory_cap if args.memory_cap is not None else values.get("memory_cap", gpu.memory_bytes)
    machine = Machine(gpu, gpus, args.gpus_per_node, intra, inter, float(efficiency))
    return PlanConfig(
        model=model, machine=machine, global_batch=global_batch, memory_cap=parse_bytes(cap),
        microbatch_sizes=args.microbatch_size, schedule_names=choices(args.schedules, schedules.names(), "--schedules"),
        chunks=args.chunks, splits=choices(args.split, SPLITS, "--split"),
        recompute=choices(args.recompute, RECOMPUTE, "--recompute"), top=args.top, comm=args.comm)


def _describe(config: PlanConfig, as_json: bool) -> None:
    figures = dataclasses.replace(config.model, microbatch_size=config.microbatch_sizes[0]).describe()
    if as_json:
        print(json.dumps(figures))
        return
    for key, value in figures.items():
        print(f"{key:<38} {value:.6g}" if isinstance(value, float) else f"{key:<38} {value}")


class _Found(NamedTuple):
    """A search and how to report and check it."""

    search: Search
    cap: float
    title: str
    check: Callable[[list], "pd.DataFrame"]
    """--verify: runs the best plans under the executor, one row each."""
    efficiency: float | None
    """The efficiency the FLOPs model assumed (None: costs from a profile)."""


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
        reason = search.skipped[0] if search.skipped else "no schedule given"
        print(f"python -m planner: no layout to try ({len(search.skipped)} combinations skipped, e.g. {reason})",
              file=sys.stderr)
        return 1
    if not search.plans:
        print(f"python -m planner: no layout fits in {size(cap)} per rank", file=sys.stderr)
        if args.quiet:
            print(explain_rejections(search, cap), file=sys.stderr)
        return 1
    frame = plans_frame(search.plans)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    if args.schedule_out:
        best = search.plans[0].layout
        schedules.write_csv(schedules.build(best.schedule, ranks=best.pp, microbatches=best.microbatches,
                                            chunks=best.chunks), args.schedule_out)
    if args.json:
        print(json.dumps(frame.to_dict("records")))
    else:
        print(format_table(search.plans))
    if args.verify:
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
    return _Found(search, config.memory_cap, title, check, config.machine.efficiency)


def _plan_profiled(args: argparse.Namespace, config, workers) -> _Found:
    from .profile_cli import efficiency_report, verify_profiled
    from .profiled import plan_profiled

    search = plan_profiled(config, workers, progress=not args.quiet)
    if not args.quiet:
        print(efficiency_report(config), file=sys.stderr)

    def check(plans: list):
        return verify_profiled(config, plans, args.verify, Path(args.verify_out), args.verify_steps)

    model = config.profile.conditions["model"]
    title = f"{model.get('model')} profiled on {config.profile.conditions['host']} ({config.profile.source})"
    return _Found(search, config.memory_cap, title, check, None)


def _check_common(args: argparse.Namespace) -> None:
    """Checks that hold for plans from FLOPs and from a profile alike."""
    for flag, value in (("--workers", args.workers), ("--verify", args.verify), ("--verify-steps", args.verify_steps)):
        if value is not None and value < 1:
            raise OptionError(f"{flag} must be >= 1, got {value}")
    if args.verify is not None and mpi_world_size() > 1:
        raise OptionError("--verify launches mpiexec itself: run it without mpiexec")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    lead = mpi_world_size() == 1 or _mpi_rank() == 0
    try:
        args = _parser().parse_args(argv)
        _check_common(args)
        if args.profile is not None:
            from .profile_cli import profile_config

            profiled = profile_config(args, lead)
        else:
            profiled = None
            config = config_from_args(args)
            if args.describe:
                if lead:
                    _describe(config, args.json)
                return 0
        with open_workers(args.workers) as workers:
            if workers is None:  # an MPI rank that ran simulations for rank 0
                return 0
            found = _plan_flops(args, config, workers) if profiled is None else _plan_profiled(args, profiled, workers)
        return _report(found, args)
    except (OptionError, ValueError, OSError) as err:
        if lead:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(f"python -m planner: error: {first}", file=sys.stderr)
        return 2


def _mpi_rank() -> int:
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank()
