"""Predicted against measured: the simulator's step for the same lowered schedule, from the
run's own costs (the in-sample *fit*) and, with ``--costs``, from the profile taken
before the run; and where the profile's error comes from.

The fit (:func:`calibrate`) reads every cost off the run's own trace: per stage and op
kind the op time (:data:`simulator.OP_STATISTIC`, the statistic the profile keeps too),
the links from matched SEND/RECV pairs, the optimizer and the host time around ops
(:func:`executor.results.dispatch.host_times`); node sharing and comm interference come
from the profile when there is one. The analytic bubble is :mod:`schedules.analytic` at
the stage-mean t_f, t_i, t_w (None where it has no closed form).

With ``--costs`` the profile's error (its step over the measured step) is split into
factors whose product it is (:class:`ErrorSplit`):

* ``op_drift``: the profile's step over the step it predicts with the run's own op times
  put in its place (per stage and kind, the run's op time over the profile's is listed);
* the remainder: that step over the fit (host time, links, optimizer);
* ``model_error``: the fit over the measured step (what the simulator gets wrong when
  every cost is the run's own).

The run's canary (:mod:`executor.record.canary`), timed just before its timed steps,
against the profile's gives ``canary_drift``; ``--canary`` scales the profile's compute
costs by it (a sleeping profile's host time only: a sleep does not drift). Both predictions
are made before the timed steps run, and both are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd
import simulator
from simulator.calibrate import OP_STATISTIC, costs_from_trace
from timeline import bubble_of

from ..engine.plan import RunPlan
from ..record import canary
from .dispatch import host_times

__all__ = ["Comparison", "ErrorSplit", "compare_run", "calibrate", "op_times", "measured", "predict_from_alone"]

_OPS = (("t_f", "F"), ("t_i", "I"), ("t_w", "W"), ("t_b", "B"))


@dataclass(frozen=True)
class ErrorSplit:
    """Where the profile's error on one run comes from (``--costs``). Ratios multiply:
    (1 + profile_error) = (1 + op_drift) (1 + remainder) (1 + model_error), in %."""

    profile_step_time: float
    """The step the profile predicted before the run (canary-scaled with --canary)."""
    profile_error_pct: float
    op_drift_pct: float
    """The profile's step over its step with the run's op times: < 0 when the run's ops were slower."""
    remainder_pct: float
    """That step over the fit: host time, links, optimizer."""
    model_error_pct: float
    """The fit over the measured step."""
    op_drift: list[dict]
    """Per stage and kind the run's op time over the profile's: rows stage, kind, run_s, profile_s, ratio."""
    raw_step_time: float
    """The profile's step unscaled."""
    raw_error_pct: float
    canary_drift: float | None
    """The canary now over the canary in the profile (> 1: the machine is slower now); None
    when the profile or the run has no canary."""
    canary_step_time: float | None
    """The profile's step with its compute costs times canary_drift."""
    canary_error_pct: float | None
    scaled: bool
    """Whether the split is of the canary-scaled prediction (--canary)."""


@dataclass(frozen=True)
class Comparison:
    measured_step_time: float
    predicted_step_time: float
    """The fit's step (in sample)."""
    error_pct: float
    measured_bubble: float
    predicted_bubble: float
    analytic_bubble: float | None
    costs: simulator.Costs
    """The fit's costs."""
    predicted: simulator.SimResult
    split: ErrorSplit | None = None
    """With --costs: the profile's prediction and where its error comes from."""

    @property
    def profile_step_time(self) -> float | None:
        return None if self.split is None else self.split.profile_step_time

    @property
    def profile_error_pct(self) -> float | None:
        return None if self.split is None else self.split.profile_error_pct


def measured(trace: pd.DataFrame, ranks: int) -> tuple[list[float], list[float], int]:
    """Step times and bubble fractions of each timed step, and the median step's index."""
    steps = sorted(trace["step"].unique())
    times = [float(trace.loc[trace["step"] == s, "end"].max()) for s in steps]
    bubbles = [bubble_of(trace[trace["step"] == s], ranks) for s in steps]
    order = sorted(range(len(steps)), key=times.__getitem__)
    return times, bubbles, int(steps[order[len(order) // 2]])


def _median(values: list[float]) -> float:
    return float(pd.Series(values).median())


def _pct(predicted: float, actual: float) -> float:
    return 100.0 * (predicted - actual) / actual


def op_times(trace: pd.DataFrame, cpu: pd.DataFrame | None = None) -> pd.Series:
    """Per (stage, kind) of F, B, I, W the run's op time (OP_STATISTIC): each op's CPU time
    where the run recorded it for ranks that outnumber cores, else its wall time."""
    if cpu is not None and len(cpu):
        return cpu["seconds"].groupby([cpu["stage"], cpu["kind"]]).agg(OP_STATISTIC)
    timed = trace[trace["kind"].isin([kind for _, kind in _OPS])]
    return (timed["end"] - timed["start"]).groupby([timed["stage"], timed["kind"]]).agg(OP_STATISTIC)


def calibrate(plan: RunPlan, trace: pd.DataFrame, base: simulator.Costs | None = None,
              cpu: pd.DataFrame | None = None) -> simulator.Costs:
    """The run's own costs, read off its trace (see the module); ``base`` (the profile's
    costs) gives node sharing, comm interference and the node's cores; ``cpu`` (ranks that
    outnumber cores) the ops' own work."""
    act, grads = plan.message_bytes()
    extra = {"act_bytes": act} if len(act) else {}
    costs = costs_from_trace(trace, statistic=OP_STATISTIC, grad_bytes=grads, dp=plan.cfg.dp, **extra)
    if cpu is not None and len(cpu):
        costs = _with_ops(costs, op_times(trace, cpu), plan.schedule.num_stages)
    if (trace["stream"] != "compute").any():  # host time between ops needs ops between which to read it
        host = host_times(trace)
        costs = replace(costs, dispatch_compute=host["compute"], dispatch_send=host["send"],
                        dispatch_recv=host["recv"])
        if len(host["optimizer"]) == plan.ranks:
            costs = replace(costs, optimizer_time=[a + b for a, b in zip(host["optimizer"], host["step"])])
    if base is not None:
        costs = replace(costs, share=base.share, comm_interference=base.comm_interference,
                        ranks_per_node=base.ranks_per_node, node_of=base.node_of, cores=base.cores,
                        slice_s=base.slice_s)
    return costs


def _with_ops(costs: simulator.Costs, run: pd.Series, stages: int) -> simulator.Costs:
    """``costs`` with t_f, t_i, t_w, t_b of every stage ``run`` has a time for."""
    own = {}
    for name, kind in _OPS:
        values = list(costs.per_stage(name, stages) if name != "t_b" else costs.backward(stages))
        for s in range(stages):
            if (s, kind) in run.index:
                values[s] = float(run[(s, kind)])
        own[name] = values
    return replace(costs, **own)


def compare_run(plan: RunPlan, trace: pd.DataFrame, canary_now: list[float] | None = None,
                cpu: pd.DataFrame | None = None) -> Comparison:
    """Measured figures of ``trace`` against the fit and, with --costs, the profile."""
    profile = simulator.Profile.load(plan.cfg.costs) if plan.cfg.costs is not None else None
    base = plan.profile_costs(profile)
    costs = calibrate(plan, trace, base, cpu)
    predicted = simulator.simulate(plan.schedule, costs)
    times, bubbles, _ = measured(trace, plan.ranks)
    step = _median(times)
    split = _split(plan, op_times(trace, cpu), profile, base, predicted.makespan, step, canary_now) if profile else None
    return Comparison(
        measured_step_time=step,
        predicted_step_time=predicted.makespan,
        error_pct=_pct(predicted.makespan, step),
        measured_bubble=_median(bubbles),
        predicted_bubble=predicted.bubble_fraction,
        analytic_bubble=None if plan.cfg.schedule_file else costs.closed_form_bubble(
            plan.cfg.schedule, plan.schedule.num_ranks, plan.schedule.num_microbatches, plan.schedule.chunks,
            average_stages=True),
        costs=costs,
        predicted=predicted,
        split=split,
    )


def _split(plan: RunPlan, run: pd.Series, profile: simulator.Profile, raw: simulator.Costs, fit_step: float,
           step: float, canary_now: list[float] | None) -> ErrorSplit:
    lowered = plan.schedule
    raw_step = simulator.simulate(lowered, raw).makespan
    drift = canary.drift(canary_now, profile.canary) if canary_now and profile.canary else None
    scaled_costs = raw.scaled(drift, ops=not profile.sleeping) if drift else None
    scaled_step = simulator.simulate(lowered, scaled_costs).makespan if scaled_costs else None
    use_scaled = plan.cfg.canary and scaled_costs is not None
    used, used_step = (scaled_costs, scaled_step) if use_scaled else (raw, raw_step)
    stages = lowered.num_stages
    rows = []
    for name, kind in _OPS:
        mine = used.per_stage(name, stages) if name != "t_b" else used.backward(stages)
        for s in range(stages):
            if (s, kind) in run.index:
                got = float(run[(s, kind)])
                rows.append({"stage": s, "kind": kind, "run_s": got, "profile_s": mine[s],
                             "ratio": got / mine[s] if mine[s] > 0 else None})
    with_run_ops = simulator.simulate(lowered, _with_ops(used, run, stages)).makespan
    return ErrorSplit(
        profile_step_time=used_step, profile_error_pct=_pct(used_step, step),
        op_drift_pct=_pct(used_step, with_run_ops), remainder_pct=_pct(with_run_ops, fit_step),
        model_error_pct=_pct(fit_step, step), op_drift=sorted(rows, key=lambda r: (r["stage"], r["kind"])),
        raw_step_time=raw_step, raw_error_pct=_pct(raw_step, step), canary_drift=drift,
        canary_step_time=scaled_step, canary_error_pct=_pct(scaled_step, step) if scaled_step else None,
        scaled=use_scaled)


def predict_from_alone(plan: RunPlan, costs: simulator.Costs, alone: list[dict]) -> float:
    """Step time the simulator predicts from the ops timed alone (replica 0's ranks:
    F, I, W, and B as the fused backward it is), with the links and optimizer time of
    ``costs``."""
    table = {key: value for rank_table in alone[:plan.ranks] for key, value in rank_table.items()}
    stages = range(plan.schedule.num_stages)
    timed = replace(costs, **{name: [table[(s, kind)] for s in stages] for name, kind in _OPS})
    return simulator.simulate(plan.schedule, timed).makespan
