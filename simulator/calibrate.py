"""Costs calibrated from a measured trace (the shared schema of :mod:`timeline`).

* Compute: the median (or, with ``statistic="mean"``, the mean) duration per model stage
  and op kind. A stage measured with a full backward B only is split into t_i and t_w
  by the I / (I + W) ratio of the stages that were measured split (medians over the
  trace), or half and half when none was: the simulator only ever adds them back for
  B, so the split matters only when the costs are used for a schedule that splits the
  backward.
* Links: each SEND is paired with its RECV (same transfer: SEND_F s with RECV_F s + 1,
  SEND_B s with RECV_B s - 1, within the same ``step``/``replica`` when the trace has
  those columns). A transfer took ``recv end - send start``; only pairs whose receiver
  was already waiting when the send was posted are used when there are any, since a
  late receiver adds its own delay. Then ``duration = latency + bytes / bandwidth`` is
  fitted by least squares over per-size medians (:func:`simulator.fit.fit_link`). Bytes
  come from a ``bytes`` column or the ``act_bytes`` argument. With one message size (or no sizes) latency and bandwidth
  cannot be told apart: the whole median time is taken as latency (bandwidth inf), which
  predicts that size exactly, and a note says so.
* Optimizer: the median of ``OPTIMIZER`` rows, if the trace has any.
* Data-parallel ring: with ``dp > 1`` and ``grad_bytes`` among the overrides and
  REDUCE_GRAD rows in the trace, the same fit over their durations against the bytes a
  ring all-reduce moves, 2 (d - 1) / d * grad_bytes, gives dp_bandwidth, and the
  intercept over the 2 (d - 1) ring steps gives dp_latency. (A reduction queued behind
  another on its rank's stream counts its wait too.)
Everything else (memory, dp, grad_bytes) keeps its default unless given in ``overrides``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd

from .costs import Costs, PerStage
from .fit import fit_link
from timeline import check_trace, transfers

__all__ = ["costs_from_trace", "OP_STATISTIC"]

OP_STATISTIC = "median"
"""How a stage's op durations in a run are summarised into one cost, by the executor's
fit and by the profile's run times alike (one statistic, so that a profile's op drift
compares like with like)."""


def costs_from_trace(trace: pd.DataFrame, act_bytes: PerStage | None = None, statistic: str = "median",
                     **overrides) -> Costs:
    check_trace(trace)
    if statistic not in ("median", "mean"):
        raise ValueError(f"statistic must be 'median' or 'mean', got {statistic!r}")
    trace = trace.assign(duration=trace["end"] - trace["start"])
    stages = _num_stages(trace)
    t_f, t_i, t_w = _compute_times(trace, stages, statistic)
    notes: list[str] = []
    fields: dict = {"t_f": t_f, "t_i": t_i, "t_w": t_w}
    if act_bytes is not None:
        fields["act_bytes"] = act_bytes
    latency, bandwidth, note = _fit_links(trace, stages, act_bytes)
    fields.update(latency=latency, bandwidth=bandwidth)
    if note:
        notes.append(note)
    opt = trace.loc[trace["kind"] == "OPTIMIZER", "duration"]
    if len(opt):
        fields["optimizer_time"] = float(opt.median())
    dp, grads = overrides.get("dp", 1), overrides.get("grad_bytes")
    if dp > 1 and grads is not None and (trace["kind"] == "REDUCE_GRAD").any():
        lat, bw, note = _fit_ring(trace, stages, dp, grads)
        fields.update(dp_latency=lat, dp_bandwidth=bw)
        notes += [note] if note else []
    fields.update(overrides)
    return replace(Costs(**fields), notes=tuple(notes))


def _num_stages(trace: pd.DataFrame) -> int:
    compute = trace[trace["kind"].isin(["F", "B", "I", "W"])]
    if compute.empty:
        raise ValueError("trace has no compute rows (F, B, I, W) to calibrate from")
    stages = int(compute["stage"].max()) + 1
    present = set(compute["stage"].astype(int).unique().tolist())
    if len(present) < stages:  # found without a loop over 0 .. stage 10**12
        missing = next(s for s in range(len(present) + 1) if s not in present)
        raise ValueError(f"trace has no compute rows for stage {missing} (stages 0..{stages - 1} are named)")
    return stages


def _compute_times(trace: pd.DataFrame, stages: int, statistic: str) -> tuple[list[float], list[float], list[float]]:
    med = trace[trace["kind"].isin(["F", "B", "I", "W"])].groupby(["kind", "stage"])["duration"].agg(statistic)

    def get(kind: str, stage: int) -> float:
        return float(med.get((kind, stage), math.nan))

    split = [(get("I", s), get("W", s)) for s in range(stages)]
    measured = [i / (i + w) for i, w in split if not math.isnan(i + w) and i + w > 0]
    share = float(np.median(measured)) if measured else 0.5
    t_f, t_i, t_w = [], [], []
    for s in range(stages):
        if math.isnan(get("F", s)):
            raise ValueError(f"trace has no F row for stage {s}: cannot calibrate its forward time")
        t_f.append(get("F", s))
        i, w = split[s]
        if math.isnan(i) or math.isnan(w):
            b = get("B", s)
            if math.isnan(b):
                raise ValueError(f"trace has no backward (B, or I and W) rows for stage {s}")
            i, w = share * b, (1 - share) * b
        t_i.append(i), t_w.append(w)
    return t_f, t_i, t_w


def _fit_links(trace: pd.DataFrame, stages: int, act_bytes: PerStage | None) -> tuple[float, float, str]:
    """(latency, bandwidth, note) of the point-to-point links."""
    pairs = transfers(trace)
    if pairs.empty:
        return 0.0, math.inf, "no matched SEND/RECV pairs in the trace: communication taken as free"
    waiting = pairs[pairs["start_recv"] <= pairs["start_send"]]
    pairs = waiting if len(waiting) else pairs
    took = (pairs["end_recv"] - pairs["start_send"]).clip(lower=0.0)
    if "bytes" in pairs.columns:
        size = pairs["bytes"].astype(float)
    elif act_bytes is not None:
        per = Costs(act_bytes=act_bytes).per_stage("act_bytes", stages)
        boundary = np.where(pairs["forward"], pairs["stage"], pairs["stage"] - 1)
        size = pd.Series(np.asarray(per)[boundary], index=pairs.index)
    else:
        return float(took.median()), math.inf, "no message sizes: transfer time taken as latency only"
    return _fit(size, took, "transfer")


def _fit_ring(trace: pd.DataFrame, stages: int, dp: int, grad_bytes: PerStage) -> tuple[float, float, str]:
    """(latency of one ring step, bandwidth, note) from the REDUCE_GRAD rows: a ring
    all-reduce moves 2 (d - 1) / d * bytes in 2 (d - 1) steps."""
    rows = trace[trace["kind"] == "REDUCE_GRAD"]
    per = np.asarray(Costs(grad_bytes=grad_bytes).per_stage("grad_bytes", stages))
    moved = pd.Series(2 * (dp - 1) / dp * per[rows["stage"].to_numpy()], index=rows.index)
    latency, bandwidth, note = _fit(moved, rows["duration"], "all-reduce")
    return latency / (2 * (dp - 1)), bandwidth, note


def _fit(size: pd.Series, took: pd.Series, what: str) -> tuple[float, float, str]:
    """Least squares ``took = latency + size / bandwidth`` (:func:`simulator.fit.fit_link`)."""
    return tuple(fit_link(size.to_numpy(float), took.to_numpy(float), what))
