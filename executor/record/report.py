"""What rank 0 writes after a run: trace.csv, trace.json (Perfetto), gantt.png,
summary.json, compare.png, and the predicted-against-measured table it prints.

trace.csv, trace.json and gantt.png hold the median timed step (times from that step's
origin), in the shared trace schema; trace_steps.csv holds every timed step (plus a
``step`` column), which is what calibration uses.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import simulator
from timeline import TRACE_COLUMNS

from .predict import Comparison, compare_run, measured
from ..engine.steps import RunResult

__all__ = ["write_outputs", "format_table"]


def _number(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def format_table(label: str, cmp: Comparison) -> str:
    """The one predicted-against-measured table."""
    analytic = "-" if cmp.analytic_bubble is None else f"{cmp.analytic_bubble:.4f}"
    return "\n".join([
        f"{label}",
        f"  {'':18}{'measured':>11}{'predicted':>11}{'error %':>9}{'analytic':>10}",
        f"  {'step time (ms)':18}{cmp.measured_step_time * 1e3:>11.3f}{cmp.predicted_step_time * 1e3:>11.3f}"
        f"{cmp.error_pct:>+9.2f}{'':>10}",
        f"  {'bubble fraction':18}{cmp.measured_bubble:>11.4f}{cmp.predicted_bubble:>11.4f}{'':>9}{analytic:>10}",
    ])


def _summary(result: RunResult, times: list[float], bubbles: list[float], cmp: Comparison | None) -> dict:
    plan, cfg = result.plan, result.plan.cfg
    out = {
        "schedule": cfg.schedule_label, "ranks": plan.ranks, "microbatches": cfg.microbatches,
        "chunks": plan.schedule.chunks, "dp": cfg.dp, "comm": cfg.comm, "compute": cfg.compute,
        "device": str(plan.device), "dtype": cfg.dtype, "model": cfg.model, "steps": cfg.steps,
        "warmup": cfg.warmup, "step_times": times, "bubble_fractions": bubbles,
        "measured_step_time": float(pd.Series(times).median()),
        "measured_bubble_fraction": float(pd.Series(bubbles).median()),
        "clock_error_s": result.clock_error, "loss": _number(result.loss), "check": result.message or None,
    }
    if cmp is not None:
        costs = cmp.costs
        out.update({
            "predicted_step_time": cmp.predicted_step_time, "error_pct": cmp.error_pct,
            "predicted_bubble_fraction": cmp.predicted_bubble,
            "analytic_bubble_fraction": cmp.analytic_bubble,
            "costs": {"t_f": costs.t_f, "t_i": costs.t_i, "t_w": costs.t_w,
                      "latency": _number(costs.latency), "bandwidth": _number(costs.bandwidth),
                      "optimizer_time": costs.optimizer_time, "notes": list(costs.notes)},
        })
    return out


def write_outputs(result: RunResult, out: Path, predict: bool = True) -> tuple[dict, Comparison | None]:
    """Write every output file under ``out``; return the summary and the comparison."""
    out.mkdir(parents=True, exist_ok=True)
    trace = result.trace
    times, bubbles, median_step = measured(trace, result.plan.ranks)
    one = trace[trace["step"] == median_step][TRACE_COLUMNS].reset_index(drop=True)
    cfg = result.plan.cfg  # named in plot titles and the Perfetto trace's metadata
    one.attrs.update(schedule=cfg.schedule_label, ranks=result.plan.ranks, microbatches=cfg.microbatches,
                     source="measured", comm=cfg.comm, compute=cfg.compute)
    one.to_csv(out / "trace.csv", index=False)
    trace.to_csv(out / "trace_steps.csv", index=False)  # every timed step, with a step column
    simulator.to_chrome_trace(one, out / "trace.json")
    simulator.plot_gantt(one, out / "gantt.png")
    cmp = compare_run(result.plan, trace) if predict else None
    if cmp is not None:
        simulator.plot_compare(one, cmp.predicted.trace, labels=("measured", "predicted"), path=out / "compare.png")
    summary = _summary(result, times, bubbles, cmp)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary, cmp
