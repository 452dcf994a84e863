"""Predicted against measured: calibrate the simulator from the measured trace, simulate
the same lowered schedule, and set step time and bubble fraction side by side.

Costs come from :meth:`simulator.Costs.from_trace` over every timed step (link
latency/bandwidth fitted from the matched transfers), with the message sizes the
executor knows from the model. Op times are summarised by their mean, not the median
from_trace defaults to: a step is a sum of op times, and op times here are skewed to
the right (an op shares the CPU with the other ranks' ops, and with the system), so the
median under-predicts. Measured with 2 ranks of real compute, m = 8: median calibration
erred by -7.8/-5.4/-3.9/-13.5/-16.3/-1.8 % (naive, gpipe, 1f1b, interleaved-1f1b, zb-h1,
zbv), mean calibration on a quieter run by -0.2/-2.1/-0.8/-5.5/+8.4/-1.5 %. The analytic bubble is
:mod:`schedules.analytic` at the stage-mean t_f, t_i, t_w (None where it has no closed
form, e.g. zb-h1 with unequal costs, or a schedule read from a file).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd
import simulator
from timeline import bubble_of

from ..engine.plan import Plan

__all__ = ["Comparison", "compare_run", "message_bytes", "measured", "predict_from_alone", "profile_costs"]


@dataclass(frozen=True)
class Comparison:
    measured_step_time: float
    predicted_step_time: float
    error_pct: float
    measured_bubble: float
    predicted_bubble: float
    analytic_bubble: float | None
    costs: simulator.Costs
    predicted: simulator.SimResult
    profile_step_time: float | None = None
    """With --costs: the step the profile predicted before the run."""
    profile_error_pct: float | None = None


def message_bytes(plan: Plan) -> tuple[list[float], list[float]]:
    """Bytes crossing each stage boundary per microbatch, and gradient bytes per stage."""
    act = [math.prod(shape) * dtype.itemsize for shape, dtype in plan.boundary[:-1]]
    grads = []
    for start, stop in plan.bounds:
        params = [p for layer in plan.workload.layers[start:stop] for p in layer.parameters()]
        grads.append(float(sum(p.numel() * p.element_size() for p in params)))
    return [float(a) for a in act], grads


def measured(trace: pd.DataFrame, ranks: int) -> tuple[list[float], list[float], int]:
    """Step times and bubble fractions of each timed step, and the median step's index."""
    steps = sorted(trace["step"].unique())
    times = [float(trace.loc[trace["step"] == s, "end"].max()) for s in steps]
    bubbles = [bubble_of(trace[trace["step"] == s], ranks) for s in steps]
    order = sorted(range(len(steps)), key=times.__getitem__)
    return times, bubbles, int(steps[order[len(order) // 2]])


def _median(values: list[float]) -> float:
    return float(pd.Series(values).median())


def calibrate(plan: Plan, trace: pd.DataFrame) -> simulator.Costs:
    act, grads = message_bytes(plan)
    extra = {"act_bytes": act} if len(act) else {}
    return simulator.Costs.from_trace(trace, statistic="mean", grad_bytes=grads, dp=plan.cfg.dp, **extra)


def compare_run(plan: Plan, trace: pd.DataFrame, costs: simulator.Costs | None = None) -> Comparison:
    """Measured figures of ``trace`` against a simulation with ``costs`` (default: its own)."""
    costs = costs or calibrate(plan, trace)
    predicted = simulator.simulate(plan.schedule, costs, comm=plan.cfg.comm)
    times, bubbles, _ = measured(trace, plan.ranks)
    step = _median(times)
    return Comparison(
        measured_step_time=step,
        predicted_step_time=predicted.makespan,
        error_pct=100.0 * (predicted.makespan - step) / step,
        measured_bubble=_median(bubbles),
        predicted_bubble=predicted.bubble_fraction,
        analytic_bubble=None if plan.cfg.schedule_file else costs.closed_form_bubble(
            plan.cfg.schedule, plan.schedule.num_ranks, plan.schedule.num_microbatches, plan.schedule.chunks,
            average_stages=True),
        costs=costs,
        predicted=predicted,
        **_from_profile(plan, step),
    )


def _from_profile(plan: Plan, step: float) -> dict:
    costs = profile_costs(plan)
    if costs is None:
        return {}
    before = simulator.simulate(plan.schedule, costs, comm=plan.cfg.comm).makespan
    return {"profile_step_time": before, "profile_error_pct": 100.0 * (before - step) / step}


def predict_from_alone(plan: Plan, costs: simulator.Costs, alone: list[dict]) -> float:
    """Step time the simulator predicts from the ops timed alone (replica 0's ranks:
    F, I, W, and B as the fused backward it is), with the links and optimizer time of
    ``costs``."""
    table = {key: value for rank_table in alone[:plan.ranks] for key, value in rank_table.items()}
    stages = range(plan.schedule.num_stages)
    timed = replace(costs, **{name: [table[(s, kind)] for s in stages]
                              for name, kind in (("t_f", "F"), ("t_i", "I"), ("t_w", "W"), ("t_b", "B"))})
    return simulator.simulate(plan.schedule, timed, comm=plan.cfg.comm).makespan


def profile_costs(plan: Plan) -> simulator.Costs | None:
    """The Costs of this run's layout from ``--costs costs.json`` (None without it)."""
    if plan.cfg.costs is None:
        return None
    profile = simulator.Profile.load(plan.cfg.costs)
    return profile.costs(plan.schedule, dp=plan.cfg.dp)
