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

Ranks that share a node share its processors (the same model covers ranks sharing one
GPU). Compute times are those of an op running alone; while ``k`` ranks of one node
compute at once each runs at rate ``share[k - 1]`` (work per second, 1.0 = alone), and
while one of a rank's own transfers is in flight its compute runs at ``1 -
comm_interference`` of that (Calculon's "processor usage" of a busy network tier). The
simulator treats this as processor sharing: see :mod:`simulator.sharing`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence, Union

from schedules import StageCosts, analytic
from schedules.bounds import check_fits

from .bounds import BYTES_PER_OP, MEASURED
from .costs_check import check_finite, check_number, values_of

__all__ = ["Costs", "PerStage", "PerLink"]

PerStage = Union[float, Sequence[float]]
PerLink = Union[float, Mapping[tuple[int, int], float]]
_PER_STAGE = ("t_f", "t_i", "t_w", "act_bytes", "grad_bytes", "act_memory")
_SEQUENCES = ("t_b", "optimizer_time", "node_of", "share")  # stored as tuples when given as lists


@dataclass(frozen=True)
class Costs:
    """Costs of compute, transfers and memory. Defaults: unit compute times, free communication."""

    t_f: PerStage = 1.0
    """Forward time of one microbatch through one model stage (s); scalar or one per stage."""
    t_i: PerStage = 1.0
    """Backward-for-inputs time (s); a full backward B costs t_i + t_w."""
    t_w: PerStage = 1.0
    """Backward-for-weights time (s)."""
    t_b: PerStage | None = None
    """Full (fused) backward time (s), measured on its own: a fused backward is cheaper
    than I then W. None (default): t_i + t_w."""
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
    optimizer_time: float | Sequence[float] = 0.0
    """Optimizer step on each rank after its last op and all its gradient reductions (s);
    scalar or one per rank."""
    dp: int = 1
    """Data-parallel degree d: d > 1 adds a REDUCE_GRAD per stage after its last backward."""
    act_memory: PerStage = 1.0
    """Activation memory one microbatch holds on a stage (bytes), from the start of its
    forward until the backward that frees it. The default 1 counts stage-microbatches."""
    w_memory_fraction: float = 0.5
    """Share of act_memory a split backward's W still needs: I frees the rest, W frees this."""
    ranks_per_node: int | None = None
    """World ranks per node, placed in order: world ranks 0 .. n-1 on node 0, n .. 2n-1 on
    node 1, ...; pipeline rank r of data-parallel replica k is world rank k * ranks + r (as
    the executor places them). None (default, and node_of unset): a node per world rank."""
    node_of: Sequence[int] | None = None
    """Explicit placement instead: node_of[w] names the node of world rank w (ranks * dp
    entries). A replica runs the simulated replica's ops at the same moments, so each one
    on a node loads it whenever its pipeline rank computes."""
    share: Sequence[float] = ()
    """Per-rank compute rate while k ranks of one node compute at once, share[k - 1] for
    k = 1, 2, ... (1.0 = as fast as alone; 4 ranks on 2 cores come out near 0.5). Empty
    (default): 1.0 for every k. When given, it must cover the most ranks on a node."""
    comm_interference: float = 0.0
    """Fraction by which a rank's compute slows while any of its own transfers (sent or
    received) is in flight, within [0, 1). Default 0: communication does not slow compute."""
    cores: int | None = None
    """Cores of a node. Given, a node whose ranks outnumber its cores takes them in turns,
    a slice at a time (:mod:`simulator.slicing`) instead of sharing them evenly; None
    (default): fluid sharing by ``share`` alone (:mod:`simulator.sharing`)."""
    slice_s: float = 3e-3
    """The OS scheduler's time slice of a rank that competes for a core (s), with ``cores``."""
    overlap_f_b: float = 1.0
    """An OVERLAP_F_B pair (DualPipe's overlapped forward and backward) costs
    overlap_f_b * (t_f + t_b) of its two stages. 1 (default): no gain from overlapping;
    DualPipe claims less where expert all-to-all hides behind compute."""
    dispatch_compute: float = 0.0
    """Host time a rank spends after each compute op before its next op starts (an
    executor records the op, moves transfers on, samples memory) (s). Default 0."""
    dispatch_send: float = 0.0
    """Host time of each SEND until its transfer is posted (s). Default 0."""
    dispatch_recv: float = 0.0
    """Host time of each RECV after its data is there: handing it over, posting the next
    receive (s). Default 0. The simulator adds the three to the compute ops around them
    (:mod:`simulator.encode`), so node sharing slows them too, and the trace keeps every
    op's own start and end: the time between ops counts as idle, as in a measured run."""
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
            for number in values_of(name, value, keyed=False):
                check_finite(name, number)
        for name in _SEQUENCES:
            value = getattr(self, name)
            if hasattr(value, "tolist"):
                value = value.tolist()
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if self.t_b is not None:
            for number in values_of("t_b", self.t_b, keyed=False):
                check_finite("t_b", number)
        self._check_nodes()
        for value in values_of("bandwidth", self.bandwidth, keyed=True):
            check_number("bandwidth", value, positive=True)
        for value in values_of("latency", self.latency, keyed=True):
            check_finite("latency", value)
        if self.dp_bandwidth is not None:
            check_number("dp_bandwidth", self.dp_bandwidth, positive=True)
        if self.dp_latency is not None:
            check_finite("dp_latency", self.dp_latency)
        for number in values_of("optimizer_time", self.optimizer_time, keyed=False):
            check_finite("optimizer_time", number)
        if isinstance(self.dp, bool) or not isinstance(self.dp, int) or self.dp < 1:
            raise ValueError(f"Costs.dp must be a whole number >= 1, got {self.dp!r}")
        check_finite("overlap_f_b", self.overlap_f_b)
        if self.cores is not None and (isinstance(self.cores, bool) or not isinstance(self.cores, int)
                                       or self.cores < 1):
            raise ValueError(f"Costs.cores must be a whole number >= 1, got {self.cores!r}")
        check_finite("slice_s", self.slice_s, positive=True)
        for name in ("dispatch_compute", "dispatch_send", "dispatch_recv"):
            check_finite(name, getattr(self, name))
        check_finite("w_memory_fraction", self.w_memory_fraction)
        if self.w_memory_fraction > 1:
            raise ValueError(f"Costs.w_memory_fraction must be within [0, 1], got {self.w_memory_fraction!r}")

    def scaled(self, factor: float, ops: bool = True) -> Costs:
        """These costs with every compute time (ops, optimizer, the host time around ops)
        times ``factor``; links and memory unchanged. E.g. by the machine's drift since a
        profile was taken (``executor --canary``). ``ops=False`` leaves the op times as they
        are and scales only the host's (the optimizer and the time around ops): for sleeping
        stages, whose ops do not drift with the machine."""
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"a scale factor must be a finite number > 0, got {factor!r}")
        if factor == 1.0:
            return self

        def times(value):
            return tuple(v * factor for v in value) if isinstance(value, Sequence) else value * factor

        scaled = (*(("t_f", "t_i", "t_w") if ops else ()), "optimizer_time")
        fields = {name: times(getattr(self, name)) for name in scaled}
        if ops and self.t_b is not None:
            fields["t_b"] = times(self.t_b)
        fields.update({name: getattr(self, name) * factor for name in ("dispatch_compute", "dispatch_send",
                                                                        "dispatch_recv")})
        return replace(self, **fields)

    def time_sliced(self, num_ranks: int) -> bool:
        """Whether some node's ranks outnumber its ``cores`` (then :mod:`simulator.slicing`)."""
        if self.cores is None:
            return False
        return self.crowd(num_ranks) > self.cores

    @property
    def dispatches(self) -> bool:
        """Whether any op costs host time around it (:attr:`dispatch_compute` and the others)."""
        return bool(self.dispatch_compute or self.dispatch_send or self.dispatch_recv)

    def _check_nodes(self) -> None:
        if self.ranks_per_node is not None:
            if isinstance(self.ranks_per_node, bool) or not isinstance(self.ranks_per_node, int) \
                    or self.ranks_per_node < 1:
                raise ValueError(f"Costs.ranks_per_node must be a whole number >= 1, got {self.ranks_per_node!r}")
            if self.node_of is not None:
                raise ValueError("Costs takes ranks_per_node or node_of, not both")
        if self.node_of is not None and not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in self.node_of):
            raise ValueError(f"Costs.node_of must hold node numbers >= 0, got {self.node_of!r}")
        if not isinstance(self.share, Sequence) or isinstance(self.share, (str, bytes)):
            raise ValueError(f"Costs.share must be a list of rates for k = 1, 2, ... busy ranks, got {self.share!r}")
        for rate in self.share:
            check_finite("share", rate, positive=True)
        check_finite("comm_interference", self.comm_interference)
        if self.comm_interference >= 1:
            raise ValueError(f"Costs.comm_interference must be within [0, 1), got {self.comm_interference!r}")

    @property
    def shares_processors(self) -> bool:
        """Whether compute can ever run slower than alone (else the simulator's fast path)."""
        return any(rate != 1.0 for rate in self.share) or self.comm_interference > 0

    def nodes(self, num_ranks: int) -> list[int]:
        """The node of each world rank: ``num_ranks * dp`` entries, replica by replica."""
        world = num_ranks * self.dp
        if self.node_of is not None:
            if len(self.node_of) != world:
                raise ValueError(f"Costs.node_of has {len(self.node_of)} entries for {world} world ranks "
                                 f"({num_ranks} ranks x dp {self.dp})")
            return list(self.node_of)
        per = self.ranks_per_node or 1
        return [w // per for w in range(world)]

    def crowd(self, num_ranks: int) -> int:
        """The most world ranks on one node."""
        return max(Counter(self.nodes(num_ranks)).values())

    def node_numbers(self, num_ranks: int) -> list[int]:
        """:meth:`nodes` renumbered 0, 1, ... in order of first use: what the simulator indexes
        by, so that a node named 10**9 does not make 10**9 of them."""
        number: dict[int, int] = {}
        return [number.setdefault(n, len(number)) for n in self.nodes(num_ranks)]

    def rate(self, busy: int) -> float:
        """Per-rank compute rate while ``busy`` ranks of one node compute."""
        return float(self.share[busy - 1]) if self.share else 1.0

    def optimizer(self, rank: int, num_ranks: int) -> float:
        """Optimizer step time of ``rank``."""
        value = self.optimizer_time
        if isinstance(value, Sequence):
            if len(value) != num_ranks:
                raise ValueError(f"Costs.optimizer_time has {len(value)} values; expected one per rank = {num_ranks}")
            return float(value[rank])
        return float(value)

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
        if self.t_b is not None and self.backward(stages) != [i + w for i, w in zip(times[1], times[2])]:
            return None  # the closed forms price B as t_i + t_w
        if not average_stages and any(len(set(t)) > 1 for t in times):
            return None
        try:
            return analytic.bubble_fraction(name, ranks, microbatches, chunks, *(sum(t) / stages for t in times))
        except ValueError:
            return None

    def backward(self, num_stages: int) -> list[float]:
        """Full backward B per stage: t_b, or t_i + t_w where it is not given."""
        if self.t_b is not None:
            return self.per_stage("t_b", num_stages)
        return [i + w for i, w in zip(self.per_stage("t_i", num_stages), self.per_stage("t_w", num_stages))]

    def check_layout(self, num_stages: int, num_ranks: int) -> None:
        """Raise ValueError if a per-stage or per-rank value does not fit the schedule."""
        for name in _PER_STAGE:
            self.per_stage(name, num_stages)
        self.backward(num_stages)
        self.optimizer(0, num_ranks)
        check_fits(f"{num_ranks} ranks x dp {self.dp}", num_ranks * self.dp, BYTES_PER_OP, unit="world rank",
                   measured_by=MEASURED)
        crowd = self.crowd(num_ranks)
        if self.share and len(self.share) < crowd:
            raise ValueError(f"Costs.share has {len(self.share)} entries but a node holds {crowd} ranks; "
                             f"give one rate per k = 1 .. {crowd}")

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

    def transfer(self, src: int, dst: int, nbytes: float) -> float:
        """Seconds ``nbytes`` take on the directed link src -> dst: latency + bytes / bandwidth."""
        return self.link("latency", src, dst) + (nbytes / self.link("bandwidth", src, dst) if nbytes else 0.0)

    def stage_costs(self, num_stages: int, t_comm: float | None = None) -> StageCosts:
        """What a schedule built for costs plans with (zb-1p, zb-2p, zb-auto: stage s on rank
        s): the mean F, I and W over the stages, ``t_comm`` per hop (default: the slowest
        boundary transfer, either way), W's memory share. The one place a layout's costs are
        averaged for it (the simulator's CLI, the executor's ``--costs`` and the planner)."""
        t_f, t_i, t_w = (sum(self.per_stage(name, num_stages)) / num_stages for name in ("t_f", "t_i", "t_w"))
        if t_comm is None:
            size = self.per_stage("act_bytes", num_stages)
            t_comm = max((self.transfer(a, b, size[s]) for s in range(num_stages - 1)
                          for a, b in ((s, s + 1), (s + 1, s))), default=0.0)
        return StageCosts(t_f, t_i, t_w, t_comm, self.w_memory_fraction)

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
