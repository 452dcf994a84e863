"""``--verify K``: run the K best layouts for real under the executor and set the measured
ranking beside the predicted one.

Only a model the executor can build is checked: its built-in transformer is a stack of
``nn.TransformerEncoderLayer(h, a, 4 h)`` (GPT layers, 12 h^2 + 13 h parameters, no
embedding and no head) in float32 trained by SGD, which the preset
``executor-transformer`` describes. The executor does not recompute activations, so
only layouts it can run as planned are (:func:`executor_runs`: tp 1, no recomputation, a
registered schedule); the layer split is passed on with ``--balance``.

The GPU of such a plan is this machine's CPU (``--gpu this-cpu``): its peak is measured
here as the FLOP/s of a 1024 x 1024 fp32 matmul on one thread (the executor gives each
of two ranks one thread), so the planner's estimate of an op is FLOPs / (peak x
efficiency); the achieved efficiency printed is the FLOPs model's forward time at peak
over the measured median forward time.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from pathlib import Path

import pandas as pd

import schedules

from .hardware import Gpu
from .layout import Layout, stage_costs
from .search import Plan, PlanConfig, spec_for
from .transformer import TransformerSpec

__all__ = ["RUN_TIMEOUT_S", "CPU_GEMM_EFFICIENCY", "this_cpu", "check_runnable", "executor_runs", "verify", "executor_args", "run_layouts", "rank_table", "spearman",
           "best_holds", "format_verify"]


CPU_GEMM_EFFICIENCY = 0.6
"""Share of the measured matmul peak a CPU op is assumed to reach (the planner's former flat
efficiency; a profile of the executor's transformer measured 0.66 on a quiet core, docs/planner.md)."""


def this_cpu(threads: int = 1, repeats: int = 5) -> Gpu:
    """This machine's CPU as a 'GPU': matmul peak measured on ``threads`` threads (the best
    of ``repeats``: on shared cores the fastest is the least disturbed), the physical
    memory, 10 GB/s as a rough memory bandwidth, ops at ``CPU_GEMM_EFFICIENCY`` of the peak
    and no kernel overhead."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        best = float("inf")
        for _ in range(repeats):
            began = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - began)
    finally:
        torch.set_num_threads(before)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Gpu("this-cpu", 2 * 1024 ** 3 / best, float(memory), 10e9, CPU_GEMM_EFFICIENCY, 1.0, 0.0, "shared-memory",
               f"measured here: fp32 1024^3 matmul on {threads} thread(s), best of {repeats}")


def check_runnable(spec: TransformerSpec, gpus: int) -> None:
    """Raise ValueError unless the executor can run ``spec`` on ``gpus`` ranks here."""
    gpt = spec.mlp == "gelu" and spec.kv == spec.heads and spec.bias and spec.norm == "layernorm" and spec.f == 4 * spec.hidden
    if not gpt or spec.vocab != 1 or spec.learned_positions or spec.dtype_bytes != 4:
        raise ValueError("--verify runs the executor's transformer (GPT layers, ffn 4h, no embedding or head, "
                         "float32): use --model executor-transformer (and --set to resize it)")
    if gpus > 4:
        raise ValueError(f"--verify runs every layout on this machine: --gpus must be <= 4, got {gpus}")


def executor_args(config: PlanConfig, plan: Plan, out: Path, steps: int) -> list[str]:
    """The ``python -m executor`` arguments that run ``plan``'s layout."""
    lay, spec = plan.layout, spec_for(config.model, plan.layout.microbatch_size)
    layers = stage_costs(spec, lay, config.machine).layers
    return ["--schedule", lay.schedule, "--microbatches", str(lay.microbatches), "--chunks", str(lay.chunks),
            "--dp", str(lay.dp), "--model", "transformer", "--layers", str(spec.layers),
            "--width", str(spec.hidden), "--heads", str(spec.heads), "--seq-len", str(spec.seq),
            "--batch", str(config.global_batch), "--balance", ",".join(map(str, layers)),
            "--steps", str(steps), "--warmup", "1", "--no-predict", "--out", str(out)]


def _forward_efficiency(config: PlanConfig, plan: Plan, trace: pd.DataFrame) -> float:
    """Mean over stages of the forward FLOPs' time at peak over the measured median."""
    spec = spec_for(config.model, plan.layout.microbatch_size)
    layers = stage_costs(spec, plan.layout, config.machine).layers
    at_peak = [n * spec.layer_forward_flops() / config.machine.gpu.peak_flops for n in layers]
    forward = trace[trace["kind"] == "F"]
    measured = (forward["end"] - forward["start"]).groupby(forward["stage"]).median()
    return sum(at_peak[s] / measured[s] for s in measured.index) / len(measured)


RUN_TIMEOUT_S = 120.0
"""Seconds one --verify run may take: ten steps of a model this machine can run, with room."""


def _failure(proc) -> str:
    lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
    said = next((line for line in lines if line.startswith("executor")), lines[-1])  # its own words first
    return f"exit {proc.returncode}: {said}"


def run_layouts(jobs: list[tuple[Plan, list[str]]]) -> list[tuple[Plan, dict | None, pd.DataFrame | None, str | None]]:
    """Run each plan's ``python -m executor`` arguments on pp x dp ranks, in the order given:
    (plan, summary.json, trace, None), or (plan, None, None, why) for a run that failed or
    timed out; one failure does not stop the others."""
    from executor.launch import launch

    done = []
    for plan, args in jobs:
        folder = Path(args[args.index("--out") + 1])
        try:
            proc = launch(plan.layout.pp * plan.layout.dp, args, capture=True, timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            done.append((plan, None, None, f"no result within {RUN_TIMEOUT_S:.0f} s"))
            continue
        if proc.returncode != 0:
            done.append((plan, None, None, _failure(proc)))
            continue
        done.append((plan, json.loads((folder / "summary.json").read_text()), pd.read_csv(folder / "trace.csv"), None))
    return done


def rank_table(rows: list[dict]) -> pd.DataFrame:
    """``rows`` (layout, predicted_s, measured_s, failure, ...) in predicted order, with both
    ranks among the layouts that ran (<NA> for a failed one)."""
    table = pd.DataFrame(rows)
    if len(table):
        ran = table["failure"].isna()
        table["predicted_rank"] = table["predicted_s"].where(ran).rank(method="first").astype("Int64")
        table["measured_rank"] = table["measured_s"].where(ran).rank(method="first").astype("Int64")
    return table


def executor_runs(layout: Layout) -> bool:
    """Whether the executor can run ``layout`` as planned: one GPU a pipeline rank (no tensor
    parallelism, so no sequence parallelism), no recomputation, its SGD (no optimizer state
    to shard) and a schedule not built for costs (the executor would build it for its own)."""
    return (layout.tp == 1 and layout.recompute == "none" and not layout.distributed_optimizer
            and not schedules.spec(layout.schedule).costed)


def verify(config: PlanConfig, plans: list[Plan], k: int, out: Path, steps: int = 10) -> pd.DataFrame:
    """Run the ``k`` best plans the executor can run; one row each, in predicted order, with
    the measured step time, both ranks and the achieved compute efficiency."""
    chosen = [p for p in plans if executor_runs(p.layout)][:k]
    jobs = [(plan, executor_args(config, plan, out / f"verify-{i}", steps)) for i, plan in enumerate(chosen)]
    return rank_table([{"layout": plan.layout.label(), "predicted_s": plan.step_time,
                        "measured_s": summary["measured_step_time"] if summary else math.nan,
                        "efficiency": _forward_efficiency(config, plan, trace) if summary else math.nan,
                        "failure": failure}
                       for plan, summary, trace, failure in run_layouts(jobs)])


def spearman(table: pd.DataFrame) -> float:
    """Spearman's rho: 1 - 6 sum d^2 / (n (n^2 - 1)) over the two rankings (no ties), over
    the layouts that ran."""
    ran = table.dropna(subset=["measured_rank"])
    n, d = len(ran), (ran["predicted_rank"] - ran["measured_rank"]).astype(float)
    return 1 - 6 * float((d * d).sum()) / (n * (n * n - 1))


def best_holds(table: pd.DataFrame, tolerance: float = 0.02) -> bool:
    """The predicted best of the layouts that ran measured within ``tolerance`` of the
    measured best."""
    ran = table.dropna(subset=["measured_rank"])
    return bool(ran["measured_s"].iloc[0] <= (1 + tolerance) * ran["measured_s"].min())


def format_verify(table: pd.DataFrame, efficiency: float | None = None) -> str:
    """The predicted ranking against the measured one, with the rank correlation, whether
    the predicted best is the measured best within 2 %, and (FLOPs path) the efficiency."""
    if table.empty:
        return ("verify: no layout the executor can run (it needs tp 1, no recomputation and a registered "
                "schedule)")
    flops = "efficiency" in table
    ran = table.dropna(subset=["measured_rank"])
    lines = [f"verify: {len(table)} layout(s) run under the executor, {len(table) - len(ran)} failed",
             f"{'pred #':>6} {'meas #':>6} {'predicted s':>12} {'measured s':>11} {'meas/pred':>9}"
             + (f" {'efficiency':>10}" if flops else "") + "  layout"]
    for row in table.itertuples(index=False):
        if isinstance(row.failure, str):
            lines.append(f"{'-':>6} {'-':>6} {row.predicted_s:>12.4g} {'failed':>11} {'':>9}"
                         + (f" {'':>10}" if flops else "") + f"  {row.layout}: {row.failure}")
            continue
        lines.append(f"{row.predicted_rank:>6} {row.measured_rank:>6} {row.predicted_s:>12.4g} {row.measured_s:>11.4g} "
                     f"{row.measured_s / row.predicted_s:>9.2f}" + (f" {row.efficiency:>10.2f}" if flops else "")
                     + f"  {row.layout}")
    if len(ran) > 1:
        lines.append(f"Spearman rank correlation of predicted and measured: {spearman(table):.2f}")
        best, first = ran["measured_s"].min(), ran["measured_s"].iloc[0]
        lines.append(f"predicted best is the measured best within 2%: {'yes' if best_holds(table) else 'no'} "
                     f"({first / best - 1:+.1%} against the fastest measured)")
    if flops and efficiency is not None and len(ran):
        lines.append(f"achieved compute efficiency (FLOPs model's forward at peak / measured forward): "
                     f"{ran['efficiency'].mean():.2f}, against the {efficiency:.2f} assumed")
    return "\n".join(lines)
