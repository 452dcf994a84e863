"""The planner's command line: flags, and the checked :class:`PlanConfig` they make.

Everything a user types is checked here, before any work: presets and files, overrides,
pins (``--tp``, ``--pp``, ``--dp``: a number or a comma list), flags that contradict each
other (``--chunks 3 --schedules 1f1b``), and sizes no layout can use (more GPUs than
tp x pp x global batch can occupy).
"""

from __future__ import annotations

import argparse
import os

import schedules
from simulator.sweep import whole_numbers

from .hardware import GPUS, LINKS
from .hf import is_config_path, load_hf_config
from .layout import SPLITS, Machine, parse_split
from .options import OptionError, choices, load_config, override, parse_bytes, parse_sets
from .presets import MODELS
from .shapes import accepts, names as planned_names
from .space import PlanConfig, check_tp
from .transformer import RECOMPUTE

__all__ = ["PROG", "parser", "config_from_args", "worker_count"]

PROG = "python -m planner"
_SWITCH = {"on": (True,), "off": (False,), "both": (False, True)}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise OptionError(message)


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog=PROG, description="Search tensor x pipeline x data-parallel layouts, schedules, chunks, "
                 "microbatches, layer splits and recomputation for a transformer on a cluster; simulate the best.")
    ap.add_argument("--model", default=None, help=f"model preset ({', '.join(MODELS)}; default gpt3-175b) or a Hugging "
                    "Face config.json (GPT-2, Llama or Mistral field names)")
    ap.add_argument("--gpu", default="a100-80gb",
                    help=f"GPU preset: {', '.join(GPUS)}, or this-cpu (measured here, for --verify) (default a100-80gb)")
    ap.add_argument("--gpus", type=int, default=None, help="GPUs in all (default 1024; with --profile its world)")
    ap.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node sharing the intra link (default 8)")
    ap.add_argument("--intra-link", default=None, help=f"link inside a node: {', '.join(LINKS)} (default: the GPU's)")
    ap.add_argument("--inter-link", default="infiniband", help="link between nodes (default infiniband)")
    ap.add_argument("--global-batch", type=int, default=None,
                    help="sequences per step over all replicas (default 1536; with --profile its batch)")
    ap.add_argument("--microbatch-size", type=whole_numbers, default=(1,), help="sequences per microbatch, comma-separated (default 1)")
    ap.add_argument("--tp", type=whole_numbers, default=None, help="tensor-parallel sizes, e.g. 8 or 4,8 (default: every "
                    "divisor of a node's GPUs that divides the heads)")
    ap.add_argument("--pp", type=whole_numbers, default=None, help="pipeline depths, e.g. 8 or 8,16 (default: all)")
    ap.add_argument("--dp", type=whole_numbers, default=None, help="data-parallel widths, e.g. 16 (default: all)")
    ap.add_argument("--schedules", default="all", help="comma-separated schedule names, or all (default: every registered one but zb-auto, which at its default cap is zb-2p)")
    ap.add_argument("--chunks", type=whole_numbers, default=(1, 2, 3, 4), help="chunk counts to try where a schedule takes them (default 1,2,3,4)")
    ap.add_argument("--split", default="uniform,balanced", help="layer splits: uniform, balanced, both (default), or "
                    "layers per model stage such as 2,3,3,3,3,3,3,2")
    ap.add_argument("--recompute", default="none,selective,full", help="none, selective, full, comma-separated (default all three)")
    ap.add_argument("--sequence-parallel", choices=tuple(_SWITCH), default="both",
                    help="sequence parallelism where tp > 1: on, off or both (default both)")
    ap.add_argument("--distributed-optimizer", nargs="?", choices=tuple(_SWITCH), const="on", default="off",
                    help="shard the optimizer state over the data-parallel group (ZeRO-1): on (the flag alone), off "
                         "(default) or both")
    ap.add_argument("--memory-cap", default=None, help="bytes a GPU may use, e.g. 80GiB (default: the GPU's memory)")
    ap.add_argument("--efficiency", type=float, default=None,
                    help="share of peak a large GEMM reaches (default: the GPU preset's measured gemm_efficiency)")
    ap.add_argument("--config", metavar="FILE.json", help="overrides: sections model, gpu, intra_link, inter_link")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="one override, e.g. model.layers=48 (repeatable)")
    ap.add_argument("--top", type=int, default=10, help="layouts to simulate with SimPy besides each schedule's best (default 10)")
    ap.add_argument("--comm", choices=schedules.COMM_MODES, default="async", help="communication semantics (default async)")
    ap.add_argument("--workers", type=int, default=None,
                    help="processes for the simulations (default and most: the cores this process may use; under mpiexec every rank)")
    ap.add_argument("--describe", action="store_true",
                    help="print the model's parameters, FLOPs and memory, and F, I, W per layer and stage end, then exit")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--csv", metavar="FILE", help="write the ranked table as CSV")
    ap.add_argument("--plot", metavar="FILE.png", help="write a Pareto plot of peak memory against step time")
    ap.add_argument("--schedule-out", metavar="FILE.csv", help="write the best layout's schedule as a torch CSV")
    ap.add_argument("--emit", choices=("megatron", "torchtitan"), default=None,
                    help="print the best layout as Megatron-LM launch arguments or a torchtitan config section")
    ap.add_argument("--force", action="store_true", help="replace output files that exist")
    ap.add_argument("--quiet", action="store_true", help="no progress bar or summary on stderr")
    ap.add_argument("--verify", type=int, default=None, metavar="K",
                    help="run the K best layouts under the executor here and compare rankings (needs --profile, "
                         "or --model executor-transformer --gpu this-cpu --gpus 2)")
    ap.add_argument("--verify-out", default=None, help="folder for the executor runs (default: a new out/verify-<time>)")
    ap.add_argument("--verify-steps", type=int, default=10, help="timed steps of each --verify run (default 10)")
    ap.add_argument("--profile", metavar="COSTS.json", help="plan from this profile of `python -m executor profile` "
                    "instead of from FLOPs: its model, world and layouts")
    return ap


def _preset(table: dict, name: str, flag: str):
    if name not in table:
        raise OptionError(f"{flag}: unknown preset {name!r}; choose from {', '.join(table)}")
    return table[name]


def _model(args: argparse.Namespace, values: dict):
    name = args.model or "gpt3-175b"
    base = load_hf_config(name) if name not in MODELS and is_config_path(name) else _preset(MODELS, name, "--model")
    return override(base, values.get("model", {}), "model")


def _splits(text: str, layers: int) -> tuple[str, ...]:
    """uniform / balanced names, or one explicit list of layers per stage (summing to the layers)."""
    if any(ch.isdigit() for ch in text):
        return (",".join(str(n) for n in parse_split(text, layers=layers)),)
    return choices(text, SPLITS, "--split")


def _check_pairs(names: tuple[str, ...], chunks: tuple[int, ...], explicit: bool) -> None:
    """A schedule named on the command line must take one of the chunk counts given."""
    for name in names:
        if explicit and not any(accepts(name, v) for v in chunks):
            takes = [v for v in range(1, 9) if accepts(name, v)]
            raise OptionError(f"--chunks {','.join(map(str, chunks))}: {name} takes chunks "
                              f"{','.join(map(str, takes))}; the flags leave nothing to try")


def _check_size(model, machine: Machine, global_batch: int, args: argparse.Namespace) -> None:
    """Refuse, before any work, a cluster no layout can fill: every replica needs at least
    one sequence, and tp x pp can reach at most a node's GPUs x the layers."""
    max_tp = max(args.tp) if args.tp else machine.gpus_per_node
    max_pp = max(args.pp) if args.pp else model.layers
    if machine.gpus > max_tp * max_pp * global_batch:
        raise OptionError(f"--gpus {machine.gpus}: at most tp {max_tp} x pp {max_pp} x global batch {global_batch} = "
                          f"{max_tp * max_pp * global_batch} GPUs can each hold part of a sequence")
    if args.dp and not any(machine.gpus % d == 0 and global_batch % d == 0 for d in args.dp):
        raise OptionError(f"--dp {','.join(map(str, args.dp))}: must divide --gpus {machine.gpus} and "
                          f"--global-batch {global_batch}")
    for flag, pins in (("--tp", args.tp), ("--pp", args.pp)):
        if pins and not any(machine.gpus % v == 0 for v in pins):
            raise OptionError(f"{flag} {','.join(map(str, pins))}: none divides --gpus {machine.gpus}")


def config_from_args(args: argparse.Namespace) -> PlanConfig:
    """Every value checked and every override applied, before any work."""
    values = parse_sets(args.set, load_config(args.config))
    model = _model(args, values)
    gpus = 1024 if args.gpus is None else args.gpus
    global_batch = 1536 if args.global_batch is None else args.global_batch
    if args.gpu == "this-cpu":
        from .verify import this_cpu  # measures this machine's matmul peak: only when asked for

        base_gpu = this_cpu()
    else:
        base_gpu = _preset(GPUS, args.gpu, "--gpu")
    efficiency = args.efficiency if args.efficiency is not None else values.get("efficiency")
    gpu_values = dict(values.get("gpu", {}))
    if efficiency is not None:
        gpu_values["gemm_efficiency"] = efficiency
    gpu = override(base_gpu, gpu_values, "gpu")
    intra = override(_preset(LINKS, args.intra_link or gpu.intra_link, "--intra-link"), values.get("intra_link", {}), "intra_link")
    inter = override(_preset(LINKS, args.inter_link, "--inter-link"), values.get("inter_link", {}), "inter_link")
    for flag, value in (("--gpus", gpus), ("--gpus-per-node", args.gpus_per_node),
                        ("--global-batch", global_batch), ("--top", args.top)):
        if value < 1:
            raise OptionError(f"{flag} must be >= 1, got {value}")
    if args.verify is not None:
        from .verify import check_runnable

        check_runnable(model, gpus)
    cap = args.memory_cap if args.memory_cap is not None else values.get("memory_cap", gpu.memory_bytes)
    machine = Machine(gpu, gpus, args.gpus_per_node, intra, inter)
    explicit = args.schedules.strip() != "all"
    names = choices(args.schedules, tuple(schedules.names()), "--schedules", every=tuple(planned_names()))
    _check_pairs(names, args.chunks, explicit)
    _check_size(model, machine, global_batch, args)
    if args.tp:
        check_tp(model, machine, args.tp)
    return PlanConfig(
        model=model, machine=machine, global_batch=global_batch, memory_cap=parse_bytes(cap),
        microbatch_sizes=args.microbatch_size, schedule_names=names, chunks=args.chunks,
        splits=_splits(args.split, model.layers),
        recompute=choices(args.recompute, RECOMPUTE, "--recompute"), tp=args.tp, pp=args.pp, dp=args.dp,
        sequence_parallel=_SWITCH[args.sequence_parallel], distributed_optimizer=_SWITCH[args.distributed_optimizer],
        top=args.top, comm=args.comm)


def worker_count(requested: int | None) -> tuple[int | None, str | None]:
    """``--workers`` capped at the cores this process may use, and a note when it was."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    if requested is None or requested <= cores:
        return requested, None
    return cores, f"{PROG}: --workers {requested} capped at the {cores} cores this process may use"
