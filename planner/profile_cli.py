"""``python -m planner --profile costs.json [--verify K]``: the command-line side of
:mod:`planner.profiled`.

The model, its batch and the world size come from the profile, so the flags that name
them for the FLOPs model (``--model``, ``--gpus``, ``--global-batch``, ...) are refused
when they disagree with it, rather than silently ignored. ``--verify K`` runs the K best
layouts with the profile's own model flags (``conditions["model"]``, its thread count) for
``--verify-steps`` steps each.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

import schedules

from .efficiency import efficiency_table, flops_per_row, format_efficiency
from .hardware import GPUS
from .options import OptionError, choices, parse_bytes
from .profiled import ProfilePlanConfig, default_cap, load_profile, world_of
from .search import Plan
from .shapes import names as planned_names
from .verify import CPU_GEMM_EFFICIENCY, rank_table, run_layouts

__all__ = ["profile_config", "check_model_fields", "peak_of", "profiled_executor_args", "verify_profiled", "efficiency_report", "PEAK_REPEATS"]

PEAK_REPEATS = 20
"""Matmuls whose best sets a CPU's peak: about half a second, to catch a quiet moment of shared cores."""

# Flags that describe the FLOPs model's workload or layouts it alone can search; with
# --profile the profile describes them. (flag attribute, its default)
_FLOPS_ONLY = (("config", None), ("set", []), ("split", "uniform,balanced"), ("efficiency", None),
               ("intra_link", None), ("tp", None), ("pp", None), ("dp", None), ("sequence_parallel", "both"),
               ("distributed_optimizer", "off"), ("emit", None))


def peak_of(profile, gpu: str) -> float:
    """Peak FLOP/s of one profiled rank: measured here for a CPU profile (at its threads),
    else the ``--gpu`` preset's (its dense bf16 peak, whatever dtype the profile ran)."""
    if profile.conditions.device.startswith("cpu"):
        from .verify import this_cpu

        return this_cpu(profile.conditions.threads, repeats=PEAK_REPEATS).peak_flops
    if gpu not in GPUS:
        raise OptionError(f"--gpu: unknown preset {gpu!r}; choose from {', '.join(GPUS)}")
    return GPUS[gpu].peak_flops


_MODEL_FIELDS = {"transformer": ("layers", "width", "heads", "seq_len", "batch"), "mlp": ("layers", "width", "batch")}
"""The ``conditions.model`` fields the planner reads, by model (a factory's model: its batch)."""


def check_model_fields(profile, path: str) -> dict:
    """``conditions.model`` of a profile, every field the planner reads a whole number >= 1;
    OptionError naming the file and the field otherwise."""
    model = profile.conditions.model
    if not isinstance(model, dict):
        raise OptionError(f"--profile {path}: conditions.model must be an object, got {model!r}")
    for field in _MODEL_FIELDS.get(model.get("model"), ("batch",)):
        if field not in model:
            raise OptionError(f"--profile {path}: conditions.model.{field} is missing")
        value = model[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise OptionError(f"--profile {path}: conditions.model.{field} must be a whole number >= 1, got {value!r}")
    return model


def profile_config(args: argparse.Namespace, lead: bool = True) -> ProfilePlanConfig:
    """Every check of a ``--profile`` run, before any work. Only the ``lead`` process (not
    an MPI rank that just simulates) measures the peak, so ranks do not time it at once."""
    profile = load_profile(args.profile)
    world, model = world_of(profile), check_model_fields(profile, args.profile)
    if args.model is not None:
        raise OptionError(f"--profile plans for the model it measured ({model.get('model')}): drop --model")
    if args.describe:
        raise OptionError("--describe prints a preset model's figures: drop --profile")
    if args.gpus is not None and args.gpus != world:
        raise OptionError(f"--gpus {args.gpus}: the profile ran on {world} ranks (pp x dp); profile again "
                          f"with `mpiexec -n {args.gpus} python -m executor profile ...`")
    if args.global_batch is not None and args.global_batch != int(model["batch"]):
        raise OptionError(f"--global-batch {args.global_batch}: the profile measured --batch {model['batch']}")
    if args.recompute not in ("none", "none,selective,full"):
        raise OptionError("--profile plans without recomputation (the executor keeps activations)")
    given = [f"--{name.replace('_', '-')}" for name, default in _FLOPS_ONLY if getattr(args, name) != default]
    if given:
        raise OptionError(f"{given[0]} sets the FLOPs model; with --profile the costs are measured")
    cap = parse_bytes(args.memory_cap) if args.memory_cap is not None else default_cap(profile)
    return ProfilePlanConfig(profile, cap, choices(args.schedules, schedules.names(), "--schedules", every=planned_names()), args.chunks, args.comm,
                             flops_per_row(profile), peak_of(profile, args.gpu) if lead else math.nan)


def profiled_executor_args(config: ProfilePlanConfig, plan: Plan, out: Path, steps: int) -> list[str]:
    """The ``python -m executor`` arguments that run ``plan`` with the profile's model flags."""
    lay, c = plan.layout, config.profile.conditions
    model = c.model
    args = ["--schedule", lay.schedule, "--microbatches", str(lay.microbatches), "--chunks", str(lay.chunks),
            "--dp", str(lay.dp), "--threads", str(c.threads), "--dtype", c.dtype]
    for key in ("model", "layers", "width", "batch", "seq_len", "heads", "compute", "seed"):
        if key in model:
            args += [f"--{key.replace('_', '-')}", str(model[key])]
    if model.get("compute") == "sleep":  # the profile keeps seconds; the executor takes ms
        args += [arg for key in ("t_f", "t_i", "t_w") for arg in (f"--{key.replace('_', '-')}", repr(model[key] * 1e3))]
    if c.device.startswith("cuda"):
        args += ["--device", "cuda"]
    return args + ["--steps", str(steps), "--warmup", "1", "--no-predict", "--out", str(out)]


def verify_profiled(config: ProfilePlanConfig, plans: list[Plan], k: int, out: Path, steps: int = 10) -> pd.DataFrame:
    """Run the ``k`` best plans; one row each, in predicted order, with both rankings."""
    jobs = [(plan, profiled_executor_args(config, plan, out / f"verify-{i}", steps)) for i, plan in enumerate(plans[:k])]
    return rank_table([{"layout": plan.layout.label(), "predicted_s": plan.step_time,
                        "measured_s": summary["measured_step_time"] if summary else math.nan, "failure": failure}
                       for plan, summary, _, failure in run_layouts(jobs)])


def efficiency_report(config: ProfilePlanConfig) -> str:
    """The FLOPs model against this profile (see :mod:`planner.efficiency`)."""
    if math.isnan(config.peak_flops):
        return "achieved efficiency: no peak FLOP/s known for this device"
    return format_efficiency(efficiency_table(config.profile, config.peak_flops), config.peak_flops,
                             CPU_GEMM_EFFICIENCY)
