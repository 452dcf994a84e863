"""``python -m planner``: from a model and a cluster to the pipeline layout to run.

    python -m planner --model gpt3-175b --describe --json
    python -m planner --model gpt3-175b --gpu a100-80gb --gpus 1024 --gpus-per-node 8 --global-batch 1536
    mpiexec -n 4 python -m planner --model llama3-8b --gpus 8 --global-batch 64 --json

Bad input prints one line on stderr and exits with code 2 before any work; a search in
which no layout fits explains why and exits with code 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Sequence

import schedules
from simulator.workers import mpi_world_size, open_workers

from .hardware import DEFAULT_EFFICIENCY, GIB, GPUS, LINKS
from .layout import SPLITS, Machine
from .options import OptionError, load_config, override, parse_bytes, parse_sets
from .presets import MODELS
from .report import explain_rejections, format_table, plans_frame, plot_pareto
from .search import PlanConfig, Search, plan
from .transformer import RECOMPUTE

__all__ = ["main", "config_from_args"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise OptionError(message)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"values must be >= 1, got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m planner", description="Search pipeline x data-parallel layouts, schedules, "
                 "chunks, microbatches and layer splits for a transformer on a cluster; simulate the best.")
    ap.add_argument("--model", default="gpt3-175b", help=f"model preset: {', '.join(MODELS)} (default gpt3-175b)")
    ap.add_argument("--gpu", default="a100-80gb",
                    help=f"GPU preset: {', '.join(GPUS)}, or this-cpu (measured here, for --verify) (default a100-80gb)")
    ap.add_argument("--gpus", type=int, default=1024, help="GPUs in all (default 1024)")
    ap.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node sharing the intra link (default 8)")
    ap.add_argument("--intra-link", default=None, help=f"link inside a node: {', '.join(LINKS)} (default: the GPU's)")
    ap.add_argument("--inter-link", default="infiniband", help="link between nodes (default infiniband)")
    ap.add_argument("--global-batch", type=int, default=1536, help="sequences per step over all replicas (default 1536)")
    ap.add_argument("--microbatch-size", type=_ints, default=(1,), help="sequences per microbatch, comma-separated (default 1)")
    ap.add_argument("--schedules", default="all", help="comma-separated schedule names, or all (default)")
    ap.add_argument("--chunks", type=_ints, default=(1, 2, 3, 4), help="chunk counts to try where a schedule takes them (default 1,2,3,4)")
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
                    help="run the K best recompute-free layouts under the executor here and compare rankings "
                         "(needs --model executor-transformer --gpu this-cpu --gpus 2)")
    ap.add_argument("--verify-out", default="out/verify", help="folder for the executor runs (default out/verify)")
    return ap


def _choices(text: str, allowed: Sequence[str], flag: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(","))
    if text.strip() == "all" and flag == "--schedules":
        return tuple(allowed)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise OptionError(f"{flag}: unknown value {bad[0]!r}; choose from {', '.join(allowed)}")
    return values


def _preset(table: dict, name: str, flag: str):
    if name not in table:
        raise OptionError(f"{flag}: unknown preset {name!r}; choose from {', '.join(table)}")
    return table[name]


def config_from_args(args: argparse.Namespace) -> PlanConfig:
    """Every value checked and every override applied, before any work."""
    values = parse_sets(args.set, load_config(args.config))
    model = override(_preset(MODELS, args.model, "--model"), values.get("model", {}), "model")
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
    for flag, value in (("--gpus", args.gpus), ("--gpus-per-node", args.gpus_per_node),
                        ("--global-batch", args.global_batch), ("--top", args.top)):
        if value < 1:
            raise OptionError(f"{flag} must be >= 1, got {value}")
    if args.workers is not None and args.workers < 1:
        raise OptionError(f"--workers must be >= 1, got {args.workers}")
    if args.verify is not None:
        from .verify import check_runnable

        if args.verify < 1:
            raise OptionError(f"--verify must be >= 1, got {args.verify}")
        if mpi_world_size() > 1:
            raise OptionError("--verify launches mpiexec itself: run it without mpiexec")
        check_runnable(model, args.gpus)
    cap = args.memory_cap if args.memory_cap is not None else values.get("memory_cap", gpu.memory_bytes)
    machine = Machine(gpu, args.gpus, args.gpus_per_node, intra, inter, float(efficiency))
    return PlanConfig(
        model=model, machine=machine, global_batch=args.global_batch, memory_cap=parse_bytes(cap),
        microbatch_sizes=args.microbatch_size, schedule_names=_choices(args.schedules, schedules.names(), "--schedules"),
        chunks=args.chunks, splits=_choices(args.split, SPLITS, "--split"),
        recompute=_choices(args.recompute, RECOMPUTE, "--recompute"), top=args.top, comm=args.comm)


def _describe(config: PlanConfig, as_json: bool) -> None:
    figures = dataclasses.replace(config.model, microbatch_size=config.microbatch_sizes[0]).describe()
    if as_json:
        print(json.dumps(figures))
        return
    for key, value in figures.items():
        print(f"{key:<38} {value:.6g}" if isinstance(value, float) else f"{key:<38} {value}")


def _report(search: Search, config: PlanConfig, args: argparse.Namespace) -> int:
    cap = config.memory_cap
    if not args.quiet:
        fits = len(search.fitting)
        print(f"{len(search.candidates)} layouts, {fits} fit in {cap / GIB:.1f} GiB, {len(search.plans)} simulated "
              f"(pre-filter {search.seconds['enumerate']:.1f} s, simulation {search.seconds['simulate']:.1f} s); "
              f"{len(search.skipped)} combinations skipped", file=sys.stderr)
        why = explain_rejections(search, cap)
        if why:
            print(why, file=sys.stderr)
    if args.plot:
        plot_pareto(search, args.plot, cap, f"{config.model.name} on {config.machine.gpus} x {config.machine.gpu.name}")
    if not search.candidates:
        reason = search.skipped[0] if search.skipped else "no schedule given"
        print(f"python -m planner: no layout to try ({len(search.skipped)} combinations skipped, e.g. {reason})",
              file=sys.stderr)
        return 1
    if not search.plans:
        print(f"python -m planner: no layout fits in {cap / GIB:.1f} GiB per rank", file=sys.stderr)
        if args.quiet:
            print(explain_rejections(search, cap), file=sys.stderr)
        return 1
    frame = plans_frame(search.plans)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    if args.schedule_out:
        best = search.plans[0].layout
        schedules.build(best.schedule, ranks=best.pp, microbatches=best.microbatches,
                        chunks=best.chunks).to_csv(args.schedule_out)
    if args.json:
        print(json.dumps(frame.to_dict("records")))
    else:
        print(format_table(search.plans))
    if args.verify:
        from .verify import format_verify, verify

        table = verify(config, search.plans, args.verify, Path(args.verify_out))
        print(format_verify(table, config.machine.efficiency), file=sys.stderr if args.json else sys.stdout)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    lead = mpi_world_size() == 1 or _mpi_rank() == 0
    try:
        args = _parser().parse_args(argv)
        config = config_from_args(args)
        if args.describe:
            if lead:
                _describe(config, args.json)
            return 0
        with open_workers(args.workers) as workers:
            if workers is None:  # an MPI rank that ran simulations for rank 0
                return 0
            search = plan(config, workers, progress=not args.quiet)
            return _report(search, config, args)
    except (OptionError, ValueError, OSError) as err:
        if lead:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(f"python -m planner: error: {first}", file=sys.stderr)
        return 2


def _mpi_rank() -> int:
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank()
