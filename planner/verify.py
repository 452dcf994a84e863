"""``--verify K``: run the K best layouts for real under the executor and set the measured
ranking beside the predicted one.

Only a model the executor can build is checked: its built-in transformer is a stack of
``nn.TransformerEncoderLayer(h, a, 4 h)`` (GPT layers, 12 h^2 + 13 h parameters, no
embedding and no head) in float32 trained by SGD, which the preset
``executor-transformer`` describes. The executor does not recompute activations, so
only ``recompute=none`` layouts are run; the layer split is passed on with ``--balance``.

The GPU of such a plan is this machine's CPU (``--gpu this-cpu``): its peak is measured
here as the FLOP/s of a 1024 x 1024 fp32 matmul on one thread (the executor gives each
of two ranks one thread), so the planner's estimate of an op is FLOPs / (peak x
efficiency); the achieved efficiency printed is the FLOPs model's forward time at peak
over the measured median forward time.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd

from .hardware import Gpu
from .layout import stage_costs
from .search import Plan, PlanConfig, spec_for
from .transformer import TransformerSpec

__all__ = ["this_cpu", "check_runnable", "verify", "executor_args", "format_verify"]


def this_cpu(threads: int = 1) -> Gpu:
    """This machine's CPU as a 'GPU': matmul peak measured on ``threads`` threads, the
    physical memory, and 10 GB/s as a rough memory bandwidth (it only prices the optimizer)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        best = float("inf")
        for _ in range(5):
            began = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - began)
    finally:
        torch.set_num_threads(before)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Gpu("this-cpu", 2 * 1024 ** 3 / best, float(memory), 10e9, "shared-memory",
               f"measured here: fp32 1024^3 matmul on {threads} thread(s), best of 5")


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
    """Mean over stages of the FLOPs model's forward time at peak over the measured median."""
    spec = spec_for(config.model, plan.layout.microbatch_size)
    at_peak = [t * config.machine.efficiency for t in stage_costs(spec, plan.layout, config.machine).t_f]
    forward = trace[trace["kind"] == "F"]
    measured = (forward["end"] - forward["start"]).groupby(forward["stage"]).median()
    return sum(at_peak[s] / measured[s] for s in measured.index) / len(measured)


def verify(config: PlanConfig, plans: list[Plan], k: int, out: Path, steps: int = 3) -> pd.DataFrame:
    """Run the ``k`` best recompute-free plans; one row each, in predicted order, with the
    measured step time, both ranks and the achieved compute efficiency."""
    from executor.launch import launch

    chosen = [p for p in plans if p.layout.recompute == "none"][:k]
    rows = []
    for i, plan in enumerate(chosen):
        folder = out / f"verify-{i}"
        proc = launch(plan.layout.pp * plan.layout.dp, executor_args(config, plan, folder, steps), capture=True)
        if proc.returncode != 0:
            raise RuntimeError(f"executor failed on {plan.layout.label()}: {proc.stderr.strip().splitlines()[-1:]}")
        summary = json.loads((folder / "summary.json").read_text())
        trace = pd.read_csv(folder / "trace.csv")
        rows.append({"layout": plan.layout.label(), "predicted_s": plan.step_time,
                     "measured_s": summary["measured_step_time"],
                     "efficiency": _forward_efficiency(config, plan, trace)})
    table = pd.DataFrame(rows)
    if len(table):
        table["predicted_rank"] = range(1, len(table) + 1)
        table["measured_rank"] = table["measured_s"].rank(method="first").astype(int)
    return table


def format_verify(table: pd.DataFrame, efficiency: float) -> str:
    """The predicted ranking against the measured one, with the rank correlation."""
    if table.empty:
        return "verify: no recompute-free layout to run (the executor does not recompute)"
    lines = [f"verify: {len(table)} layout(s) run under the executor",
             f"{'pred #':>6} {'meas #':>6} {'predicted s':>12} {'measured s':>11} {'meas/pred':>9} {'efficiency':>10}  layout"]
    for row in table.itertuples(index=False):
        lines.append(f"{row.predicted_rank:>6} {row.measured_rank:>6} {row.predicted_s:>12.4g} {row.measured_s:>11.4g} "
                     f"{row.measured_s / row.predicted_s:>9.2f} {row.efficiency:>10.2f}  {row.layout}")
    if len(table) > 1:
        n, d = len(table), table["predicted_rank"] - table["measured_rank"]
        rho = 1 - 6 * float((d * d).sum()) / (n * (n * n - 1))  # Spearman's rho for ranks without ties
        lines.append(f"Spearman rank correlation of predicted and measured: {rho:.2f}")
    lines.append(f"achieved compute efficiency (FLOPs model's forward at peak / measured forward): "
                 f"{table['efficiency'].mean():.2f}, against the {efficiency:.2f} assumed")
    return "\n".join(lines)
