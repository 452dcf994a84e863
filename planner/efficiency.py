"""The FLOPs model against a profile: the achieved-efficiency factor, measured.

The planner prices an op at FLOPs / (peak x efficiency), with efficiency assumed (0.6 by
default, :mod:`planner.hardware`). A profile of the executor's own model says what the
ops really take, so the factor can be read off: achieved efficiency = FLOPs / peak /
profiled time, i.e. the FLOPs model's time at peak over the measured one.

FLOPs per row (sequence) of a layer, by the profile's ``conditions["model"]``:
  transformer  the executor's ``nn.TransformerEncoderLayer(h, a, 4h)`` is a GPT layer, so
               :class:`planner.TransformerSpec` at h, a, s and b = 1 gives its forward
               (2 x 12 h^2 x s + 4 s^2 h) and its parameters (12 h^2 + 13 h);
  mlp          ``Linear(w, w)`` + tanh: forward 2 w^2, parameters w^2 + w.
The backward is twice the forward for both (I and W each cost a forward's matmuls, and
attention's backward, twice its forward, is all I). A stage's layer count is read from the
profile itself, its ``grad_bytes`` over the bytes of one layer's parameters, so this
needs neither the executor nor its split.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd

from simulator import Profile

from .presets import MODELS
from .transformer import TransformerSpec

__all__ = ["DTYPE_BYTES", "layer_figures", "flops_per_row", "efficiency_table", "format_efficiency"]

DTYPE_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2}


def _spec(model: dict, dtype_bytes: int) -> TransformerSpec:
    return replace(MODELS["executor-transformer"], name="profiled-transformer", layers=int(model["layers"]),
                   hidden=int(model["width"]), heads=int(model["heads"]), seq=int(model["seq_len"]),
                   microbatch_size=1, dtype_bytes=dtype_bytes)


def layer_figures(profile: Profile) -> tuple[float, float] | None:
    """(parameters, forward FLOPs per row) of one layer; None for a model of a factory."""
    model = profile.conditions.model
    if model.get("model") == "transformer":
        spec = _spec(model, DTYPE_BYTES.get(profile.conditions.dtype, 4))
        return float(spec.layer_params()), spec.layer_forward_flops()
    if model.get("model") == "mlp":
        w = float(model["width"])
        return w * w + w, 2.0 * w * w
    return None


def flops_per_row(profile: Profile) -> float:
    """Training FLOPs (forward + backward) of one row through every layer; NaN if unknown."""
    figures = layer_figures(profile)
    if figures is None:
        return math.nan
    return 3.0 * figures[1] * int(profile.conditions.model["layers"])


def efficiency_table(profile: Profile, peak_flops: float) -> pd.DataFrame:
    """One row per profiled layout and stage: layers, rows, the FLOPs model's F and B at
    peak, the profiled (alone) F and B, and the achieved efficiency of each."""
    figures = layer_figures(profile)
    if figures is None:
        return pd.DataFrame()
    params, forward = figures
    width = DTYPE_BYTES.get(profile.conditions.dtype, 4)
    rows = []
    for ranks, chunks, m, dp in profile.layouts:
        table = profile.layout(ranks, chunks, m, dp)
        batch_rows = int(profile.conditions.model["batch"]) // (dp * m)
        for s, stage in enumerate(table.stages):
            layers = round(float(stage.grad_bytes or 0.0) / (width * params))
            f_peak = layers * forward * batch_rows / peak_flops
            f, b = float(stage.F.alone), float(stage.B.alone)
            rows.append({"ranks": ranks, "chunks": chunks, "microbatches": m, "dp": dp, "stage": s, "layers": layers,
                         "rows": batch_rows, "F_at_peak_s": f_peak, "B_at_peak_s": 2 * f_peak,
                         "F_s": f, "B_s": b, "efficiency_F": f_peak / f, "efficiency_B": 2 * f_peak / b})
    return pd.DataFrame(rows)


def format_efficiency(table: pd.DataFrame, peak_flops: float, assumed: float) -> str:
    """Three lines: the peak, the achieved efficiency (F, B and F + B over all stages) and
    what the FLOPs model at the assumed efficiency estimates against the profile."""
    if table.empty:
        return "achieved efficiency: not known for this model (FLOPs known for mlp and transformer only)"
    at_peak = float((table["F_at_peak_s"] + table["B_at_peak_s"]).sum())
    measured = float((table["F_s"] + table["B_s"]).sum())
    overall = at_peak / measured
    return "\n".join([
        f"FLOPs model against the profile: peak {peak_flops / 1e9:.1f} GFLOP/s per rank, "
        f"{len(table)} stage-layouts",
        f"achieved efficiency (FLOPs time at peak / profiled time): F {table['efficiency_F'].median():.2f}, "
        f"B {table['efficiency_B'].median():.2f} (medians), F+B {overall:.2f} (sums)",
        f"FLOPs model at efficiency {assumed:.2f} / profile: {overall / assumed:.2f} "
        f"(estimate {at_peak / assumed * 1e3:.2f} ms against {measured * 1e3:.2f} ms of F+B)",
    ])
