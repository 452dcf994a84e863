"""One candidate layout: how the layers are cut into stages, what each stage costs and
where the GPUs sit.

Layer split (``split``): ``uniform`` gives every model stage L // S layers, the first
L % S stages one more; ``balanced`` starts every stage with one layer and gives each
further layer to the stage that would be fastest after taking it, counting the embedding
on the first stage and the LM head on the last (their F + I + W from :mod:`planner.ops`);
for identical layers this greedy minimises the slowest stage. An explicit list such as
``2,3,3,3,3,3,3,2`` gives the layers of each model stage in order (pp x chunks entries).
Every stage keeps at least one layer; with chunks > 1 an explicit split may leave the first
and the last model stage empty, the embedding or the LM head alone on a rank that holds
other stages too: Megatron-LM's padded layer counts with one layer per virtual stage (the
zero-bubble authors' ``--allow-padding-num-layers``, whose padding layers are the first and
the last).

Placement (Megatron-LM's order, tensor-parallel ranks adjacent): GPU (d pp + r) tp + k is
tensor rank k of pipeline rank r of replica d, and GPU g sits in node g // gpus_per_node,
so a tensor-parallel group never leaves a node (tp divides gpus_per_node) and a pipeline
stays inside one while tp x pp fits. Hops across nodes are priced at the inter-node link,
one NIC per GPU, each tensor rank sending its 1/t of the boundary. The data-parallel ring
joins the replicas of a GPU: inside a node on the intra link; across nodes at the
inter-node bandwidth times the ring's members per node (NCCL runs one ring per NIC, so
the group's NICs carry it in parallel), at most the intra link's.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from simulator import Costs

from .hardware import Gpu, Link
from .ops import PhaseTimes, embedding_times, head_times, layer_times
from .transformer import TransformerSpec

__all__ = ["Layout", "Machine", "Stages", "SPLITS", "parse_split", "stage_layers", "stage_costs", "link_costs",
           "dp_ring", "simulator_costs", "optimizer_time"]

SPLITS = ("uniform", "balanced")


@dataclass(frozen=True, order=True)
class Layout:
    """What the search chooses."""

    schedule: str
    """Schedule name: one in the registry, or a planner schedule (zb-1p, zb-2p)."""
    pp: int
    """Pipeline ranks."""
    dp: int
    """Data-parallel replicas; tp x pp x dp = GPUs."""
    chunks: int
    """Model stages per rank (v)."""
    microbatches: int
    """Microbatches per step per replica, m = global batch / dp / microbatch size."""
    microbatch_size: int
    """Sequences per microbatch."""
    split: str
    """Layer split: uniform, balanced, or layers per model stage (``2,3,3,2``)."""
    recompute: str
    """Activation recomputation: none, selective or full."""
    tp: int = 1
    """Tensor-parallel ranks, inside a node."""
    sequence_parallel: bool = False
    """Norms and dropouts on s / t tokens; reduce-scatter + all-gather for each all-reduce."""
    distributed_optimizer: bool = False
    """Optimizer state sharded over the data-parallel group (ZeRO-1)."""

    @property
    def stages(self) -> int:
        return self.pp * self.chunks

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    def label(self) -> str:
        extra = (" sp" if self.sequence_parallel else "") + (" dist-opt" if self.distributed_optimizer else "")
        return (f"{self.schedule} tp={self.tp} pp={self.pp} dp={self.dp} v={self.chunks} m={self.microbatches} "
                f"b={self.microbatch_size} {self.split} recompute={self.recompute}{extra}")


@dataclass(frozen=True)
class Machine:
    """The cluster a plan is for."""

    gpu: Gpu
    """The accelerator."""
    gpus: int
    """GPUs in all."""
    gpus_per_node: int
    """GPUs sharing the intra-node link."""
    intra: Link
    """Link between GPUs of one node."""
    inter: Link
    """Link between nodes (per GPU)."""


@dataclass(frozen=True)
class Stages:
    """Per model stage, on one GPU: layers, seconds, parameters and activation bytes per microbatch."""

    layers: tuple[int, ...]
    t_f: tuple[float, ...]
    t_i: tuple[float, ...]
    t_w: tuple[float, ...]
    params: tuple[float, ...]
    """Parameters one GPU holds for the stage (its tensor-parallel share)."""
    act_memory: tuple[float, ...]


def parse_split(text: str, stages: int | None = None, layers: int | None = None, chunks: int = 1) -> tuple[int, ...]:
    """An explicit split ``2,3,3,2``; ValueError unless every entry is a whole number >= 1
    (with ``chunks`` > 1 the first and the last may be 0) and, where given, there are
    ``stages`` entries summing to ``layers``."""
    try:
        counts = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--split takes uniform, balanced or layers per stage such as 2,3,3,2, got {text!r}") from None
    inner = counts[1:-1] if chunks > 1 else counts
    if not counts or min(counts) < 0 or min(inner, default=1) < 1 or sum(counts) < 1:
        raise ValueError(f"--split {text}: every stage needs at least one layer")
    if stages is not None and len(counts) != stages:
        raise ValueError(f"--split {text}: {len(counts)} stages given for {stages} (pp x chunks)")
    if layers is not None and sum(counts) != layers:
        raise ValueError(f"--split {text}: {sum(counts)} layers given for a model of {layers}")
    return counts


def stage_layers(spec: TransformerSpec, stages: int, split: str, first: float = 0.0, last: float = 0.0,
                 chunks: int = 1) -> tuple[int, ...]:
    """Layers per model stage (see the module docstring); ValueError if stages > layers.
    ``first`` and ``last`` are what the embedding and the head cost, in layers (balanced only)."""
    L = spec.layers
    if split not in SPLITS:
        return parse_split(split, stages, L, chunks)
    if stages > L:
        raise ValueError(f"{stages} stages for {L} layers")
    if split == "uniform":
        return tuple(L // stages + (1 if s < L % stages else 0) for s in range(stages))
    extra = [0.0] * stages
    extra[0] += first
    extra[-1] += last
    counts = [1] * stages
    heap = [(extra[s] + 2, s) for s in range(stages)]  # cost after one more layer
    heapq.heapify(heap)
    for _ in range(L - stages):
        _, s = heapq.heappop(heap)
        counts[s] += 1
        heapq.heappush(heap, (extra[s] + counts[s] + 1, s))
    return tuple(counts)


def _total(times: PhaseTimes) -> float:
    return times.f + times.i + times.w


def stage_costs(spec: TransformerSpec, layout: Layout, machine: Machine) -> Stages:
    """Seconds and bytes of every model stage of ``layout`` on one GPU."""
    gpu, link, tp, sp = machine.gpu, machine.intra, layout.tp, layout.sequence_parallel
    layer = layer_times(spec, gpu, link, tp, sp, layout.recompute)
    embed, head = embedding_times(spec, gpu, link, tp, sp), head_times(spec, gpu, link, tp, sp)
    unit = _total(layer)
    layers = stage_layers(spec, layout.stages, layout.split, _total(embed) / unit, _total(head) / unit, layout.chunks)
    act = spec.activation_bytes_per_layer(layout.recompute, tp, sp)
    last = layout.stages - 1
    times, params, memory = [], [], []
    for s, n in enumerate(layers):
        t = layer.scaled(n)
        if s == 0:
            t = t + embed
        if s == last:
            t = t + head
        times.append(t)
        params.append(n * spec.layer_params_per_rank(tp) + (spec.embedding_params_per_rank(tp) if s == 0 else 0)
                      + (spec.head_params_per_rank(tp) if s == last else 0))
        memory.append(n * act + (spec.head_activation_bytes(tp, sp) if s == last else 0.0))
    return Stages(layers, tuple(t.f for t in times), tuple(t.i for t in times), tuple(t.w for t in times),
                  tuple(params), tuple(memory))


def _node(machine: Machine, gpu: int) -> int:
    return gpu // machine.gpus_per_node


def dp_ring(layout: Layout, machine: Machine) -> tuple[float, float]:
    """(bandwidth, latency) of the data-parallel ring (see the module docstring)."""
    span = layout.pp * layout.tp  # GPUs between two members of the ring
    if span * layout.dp <= machine.gpus_per_node:
        return machine.intra.bandwidth, machine.intra.latency
    per_node = max(1, machine.gpus_per_node // span)
    return min(machine.intra.bandwidth, machine.inter.bandwidth * per_node), machine.inter.latency


def link_costs(layout: Layout, machine: Machine) -> dict:
    """Costs fields for the pipeline links and the data-parallel ring of replica 0: the
    hops between neighbouring ranks, and from the last back to the first (a looping
    placement's wrap); no other pair of ranks exchanges activations."""
    p, t = layout.pp, layout.tp
    pairs = [(a, a + 1) for a in range(p - 1)] + ([(0, p - 1)] if p > 2 else [])
    crosses = {(a, b): _node(machine, a * t) != _node(machine, b * t) for a, b in pairs}
    fields: dict = {}
    if any(crosses.values()):
        fields["bandwidth"] = {k: (machine.inter if c else machine.intra).bandwidth for k, c in crosses.items()}
        fields["latency"] = {k: (machine.inter if c else machine.intra).latency for k, c in crosses.items()}
    else:
        fields["bandwidth"], fields["latency"] = machine.intra.bandwidth, machine.intra.latency
    fields["dp_bandwidth"], fields["dp_latency"] = dp_ring(layout, machine)
    return fields


def optimizer_time(spec: TransformerSpec, layout: Layout, gpu: Gpu, params: float) -> float:
    """The Adam step streams its state in and out once: 2 x state bytes / HBM rate; with a
    distributed optimizer each GPU steps its 1/dp shard."""
    shard = layout.dp if layout.distributed_optimizer else 1
    return 2 * spec.state_bytes_per_param * params / shard / gpu.hbm_bytes


def simulator_costs(spec: TransformerSpec, layout: Layout, machine: Machine, stages: Stages,
                    optimizer: float) -> Costs:
    """The simulator's Costs for ``layout``: per-stage times and activation bytes, boundary
    transfers, the gradient all-reduce (dtype_bytes per parameter; with a distributed
    optimizer a reduce-scatter of the gradients and an all-gather of the updated weights,
    the same bytes on the ring) and the optimizer step."""
    return Costs(t_f=stages.t_f, t_i=stages.t_i, t_w=stages.t_w, act_bytes=spec.boundary_bytes(layout.tp),
                 grad_bytes=tuple(spec.dtype_bytes * n for n in stages.params), dp=layout.dp,
                 act_memory=stages.act_memory, optimizer_time=optimizer, **link_costs(layout, machine))
