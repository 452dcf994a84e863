"""What ops and transfers cost on one machine: the simulator's only input besides the schedule.

Times are seconds, sizes bytes, bandwidth bytes per second. Per-stage values are a
scalar (every stage alike) or a sequence with one entry per model stage; link values
are a scalar or a mapping ``{(src_rank, dst_rank): value}`` so that intra- and
inter-node links can differ. Every value is checked when a :class:`Costs` is made,
and the list lengths against the schedule before a simulation runs, so a bad value
fails with one line instead of a wrong answer.

A point-to-point transfer of ``n`` bytes over a link takes ``latency + n / bandwidth``
and holds that directed link for the whole time. A gradient all-reduce over ``d``
data-parallel replicas is a ring all-reduce (Patarasuk and Yuan 2009): a reduce-scatter
and an all-gather of ``d - 1`` steps each, every step moving ``bytes / d``, so
``2 (d - 1) / d * bytes / bandwidth + 2 (d - 1) * latency``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

import pandas as pd
from schedules import analytic

__all__ = ["Costs", "PerStage", "PerLink"]

PerStage = Union[float, Sequence[float]]
PerLink = Union[float, Mapping[tuple[int, int], float]]
_PER_STAGE = ("t_f", "t_i", "t_w", "act_bytes", "grad_bytes", "act_memory")


def _check_number(name: str, value: float, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"Costs.{name} must be a number, got {value!r}")
    if math.isnan(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"Costs.{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")


def _check_finite(name: str, value: float, positive: bool = False) -> None:
    _check_number(name, value, positive)
    if math.isinf(value):
        raise ValueError(f"Costs.{name} must be finite, got {value!r}")


def _values(name: str, value, keyed: bool) -> list[float]:
    """The numbers inside a scalar, a sequence or (``keyed``) a link mapping."""
    if isinstance(value, Mapping):
        if not keyed:
            raise ValueError(f"Costs.{name} takes a number or one number per stage, not a mapping")
        for key in value:
            if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, int) for k in key)):
                raise ValueError(f"Costs.{name} keys must be (src_rank, dst_rank) pairs, got {key!r}")
        return list(value.values())
    if isinstance(value, (str, bytes)):
        raise ValueError(f"Costs.{name} must be a number, got {value!r}")
    if isinstance(value, Sequence) and not keyed:
        if len(value) == 0:
            raise ValueError(f"Costs.{name} is an empty list")
        return list(value)
    return [value]


@dataclass(frozen=True)
class Costs:
    """Costs of compute, transfers and memory. Defaults: unit compute times, free communication."""

    t_f: PerStage = 1.0
    """Forward time of one microbatch through one model stage (s); scalar or one per stage."""
    t_i: PerStage = 1.0
    """Backward-for-inputs time (s); a full backward B costs t_i + t_w."""
    t_w: PerStage = 1.0
    """Backward-for-weights time (s)."""
    act_bytes: PerStage = 0.0
    """Bytes of one microbatch's activation crossing each stage boundary (s -> s + 1); the
    gradient sent back over that boundary has the same size. Scalar or num_stages - 1 values."""
    grad_bytes: PerStage = 0.0
    """Bytes of one stage's weight gradients, all-reduced by REDUCE_GRAD when dp > 1."""
    bandwidth: PerLink = math.inf
    """Link bandwidth (bytes/s); scalar or {(src_rank, dst_rank): value}. A pair given in one
    direction only applies both ways. inf (default) makes transfers cost latency only."""
    latency: PerLink = 0.0
    """Per-transfer latency (s); scalar or {(src_rank, dst_rank): value} like bandwidth."""
    dp_bandwidth: float | None = None
    """Bandwidth of the data-parallel ring; None: the scalar bandwidth, or the slowest link."""
    dp_latency: float | None = None
    """Latency of one ring step; None: the scalar latency, or the largest link latency."""
    optimizer_time: float = 0.0
    """Optimizer step on each rank after its last op and all its gradient reductions (s)."""
    dp: int = 1
    """Data-parallel degree d: d > 1 adds a REDUCE_GRAD per stage after its last backward."""
    act_memory: PerStage = 1.0
    """Activation memory one microbatch holds on a stage (bytes), from the start of its
    forward until the backward that frees it. The default 1 counts stage-microbatches."""
    w_memory_fraction: float = 0.5
    """Share of act_memory a split backward's W still needs: I frees the rest, W frees this."""
    overlap_f_b: float = 1.0
    """An OVERLAP_F_B pair (DualPipe's overlapped forward and backward) costs
    overlap_f_b * (t_f + t_b) of its two stages. 1 (default): no gain from overlapping;
    DualPipe claims less where expert all-to-all hides behind compute."""
    notes: tuple[str, ...] = field(default=(), compare=False)
    """Remarks from calibration (e.g. why bandwidth could not be fitted)."""

    def __post_init__(self) -> None:
        for name in _PER_STAGE:
            value = getattr(self, name)
            if hasattr(value, "tolist"):  # a numpy array (or scalar)
                value = value.tolist()
            if isinstance(value, list):
                value = tuple(value)  # frozen means frozen: no shared lists
            object.__setattr__(self, name, value)
            for number in _values(name, value, keyed=False):
                _check_finite(name, number)
        for value in _values("bandwidth", self.bandwidth, keyed=True):
            _check_number("bandwidth", value, positive=True)
        for value in _values("latency", self.latency, keyed=True):
            _check_finite("latency", value)
        if self.dp_bandwidth is not None:
            _check_number("dp_bandwidth", self.dp_bandwidth, positive=True)
        if self.dp_latency is not None:
            _check_finite("dp_latency", self.dp_latency)
        _check_finite("optimizer_time", self.optimizer_time)
        if isinstance(self.dp, bool) or not isinstance(self.dp, int) or self.dp < 1:
            raise ValueError(f"Costs.dp must be a whole number >= 1, got {self.dp!r}")
        _check_finite("overlap_f_b", self.overlap_f_b)
        _check_finite("w_memory_fraction", self.w_memory_fraction)
        if self.w_memory_fraction > 1:
            raise ValueError(f"Costs.w_memory_fraction must be within [0, 1], got {self.w_memory_fraction!r}")

    def per_stage(self, name: str, num_stages: int) -> list[float]:
        """Field ``name`` as one float per stage (or per boundary for act_bytes)."""
        value = getattr(self, name)
        want = num_stages - 1 if name == "act_bytes" else num_stages
        if isinstance(value, Sequence):
            if len(value) != want:
                what = "stage boundary (num_stages - 1" if name == "act_bytes" else "stage (num_stages"
                raise ValueError(f"Costs.{name} has {len(value)} values; expected one per {what} = {want})")
            return [float(v) for v in value]
        return [float(value)] * want

    def closed_form_bubble(self, name: str, ranks: int, microbatches: int, chunks: int = 1,
                           average_stages: bool = False) -> float | None:
        """``schedules.analytic.bubble_fraction`` at these costs, or None where it has no
        closed form. The closed forms assume uniform stages: per-stage costs give None,
        unless ``average_stages`` (for measured costs, equal up to noise) takes their mean."""
        stages = ranks * chunks
        times = [self.per_stage(k, stages) for k in ("t_f", "t_i", "t_w")]
        if not average_stages and any(len(set(t)) > 1 for t in times):
            return None
        try:
            return analytic.bubble_fraction(name, ranks, microbatches, chunks, *(sum(t) / stages for t in times))
        except ValueError:
            return None

    def check_stages(self, num_stages: int) -> None:
        """Raise ValueError if a per-stage list does not fit ``num_stages``."""
        for name in _PER_STAGE:
            self.per_stage(name, num_stages)

    def link(self, name: str, src: int, dst: int) -> float:
        """bandwidth or latency of the directed link src -> dst."""
        value = getattr(self, name)
        if not isinstance(value, Mapping):
            return float(value)
        if (src, dst) in value:
            return float(value[src, dst])
        if (dst, src) in value:
            return float(value[dst, src])
        raise ValueError(f"Costs.{name} has no entry for the link between ranks {src} and {dst}")

    def ring(self) -> tuple[float, float]:
        """(bandwidth, latency) of the data-parallel ring."""
        bw = self.dp_bandwidth
        if bw is None:
            bw = min(self.bandwidth.values()) if isinstance(self.bandwidth, Mapping) else self.bandwidth
        lat = self.dp_latency
        if lat is None:
            lat = max(self.latency.values()) if isinstance(self.latency, Mapping) else self.latency
        return float(bw), float(lat)

    def reduce_time(self, stage: int, num_stages: int) -> float:
        """Ring all-reduce of one stage's gradients over dp replicas."""
        d = self.dp
        if d == 1:
            return 0.0
        bw, lat = self.ring()
        size = self.per_stage("grad_bytes", num_stages)[stage]
        return 2 * (d - 1) / d * size / bw + 2 * (d - 1) * lat

    @classmethod
    def model_share(cls, chunks: int = 1, **fields) -> Costs:
        """Costs for comparing schedules on one model: a rank's share of the model costs
        t_f, t_i, t_w and act_memory (default 1 each), split evenly over its ``chunks``
        stages, so interleaved and V schedules are not charged v times the work."""
        for name in ("t_f", "t_i", "t_w", "act_memory"):
            fields[name] = fields.get(name, 1.0) / chunks
        return cls(**fields)

    @classmethod
    def from_trace(cls, trace: pd.DataFrame, act_bytes: PerStage | None = None, statistic: str = "median",
                   **overrides) -> Costs:
        """Calibrate from a measured trace (see :mod:`simulator.calibrate`); ``statistic``
        ("median" or "mean") summarises each stage's op durations."""
        from .calibrate import costs_from_trace

        return costs_from_trace(trace, act_bytes=act_bytes, statistic=statistic, **overrides)
