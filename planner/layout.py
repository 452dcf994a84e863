"""One candidate layout: how the layers are cut into stages, what each stage costs and
where the ranks sit.

Layer split (``split``): ``uniform`` gives every model stage L // S layers, the first
L % S stages one more; ``balanced`` starts every stage with one layer and gives each
further layer to the stage that would be fastest after taking it, counting the LM head
on the last stage (the embedding lookup costs no FLOPs); for identical layers this greedy
minimises the slowest stage. Every stage keeps at least one layer.

Placement: replica d's pipeline rank r is GPU d * pp + r and GPU g sits in node
g // gpus_per_node, so a pipeline stays inside a node when pp <= gpus_per_node and
otherwise crosses a node boundary every gpus_per_node ranks; those hops are priced at
the inter-node link. The data-parallel ring joins the replicas of a rank, on other
nodes once pp x dp exceeds a node.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from simulator import Costs

from .hardware import Gpu, Link
from .transformer import TransformerSpec

__all__ = ["Layout", "Machine", "Stages", "SPLITS", "stage_layers", "stage_costs", "link_costs", "simulator_costs"]

SPLITS = ("uniform", "balanced")


@dataclass(frozen=True, order=True)
class Layout:
    """What the search chooses."""

    schedule: str
    """Schedule name in the registry."""
    pp: int
    """Pipeline ranks."""
    dp: int
    """Data-parallel replicas; pp x dp = GPUs."""
    chunks: int
    """Model stages per rank (v)."""
    microbatches: int
    """Microbatches per step per replica, m = global batch / dp / microbatch size."""
    microbatch_size: int
    """Sequences per microbatch."""
    split: str
    """Layer split: uniform or balanced."""
    recompute: str
    """Activation recomputation: none or full."""

    @property
    def stages(self) -> int:
        return self.pp * self.chunks

    def label(self) -> str:
        return (f"{self.schedule} pp={self.pp} dp={self.dp} v={self.chunks} m={self.microbatches} "
                f"b={self.microbatch_size} {self.split} recompute={self.recompute}")


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
    efficiency: float
    """Achieved share of peak FLOP/s in compute ops."""

    @property
    def flops(self) -> float:
        """FLOP/s a compute op achieves."""
        return self.gpu.peak_flops * self.efficiency


@dataclass(frozen=True)
class Stages:
    """Per model stage: layers, seconds, parameters and activation bytes per microbatch."""

    layers: tuple[int, ...]
    t_f: tuple[float, ...]
    t_i: tuple[float, ...]
    t_w: tuple[float, ...]
    params: tuple[float, ...]
    act_memory: tuple[float, ...]


def stage_layers(spec: TransformerSpec, stages: int, split: str) -> tuple[int, ...]:
    """Layers per model stage (see the module docstring); ValueError if stages > layers.
    The embedding lookup costs no FLOPs, so in time only the head weighs on its stage."""
    L = spec.layers
    if stages > L:
        raise ValueError(f"{stages} stages for {L} layers")
    if split == "uniform":
        return tuple(L // stages + (1 if s < L % stages else 0) for s in range(stages))
    if split != "balanced":
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    layer = 3 * spec.layer_forward_flops()
    extra = [0.0] * stages
    extra[-1] += 3 * spec.head_forward_flops()
    counts = [1] * stages
    heap = [(extra[s] + 2 * layer, s) for s in range(stages)]  # cost after one more layer
    heapq.heapify(heap)
    for _ in range(L - stages):
        _, s = heapq.heappop(heap)
        counts[s] += 1
        heapq.heappush(heap, (extra[s] + (counts[s] + 1) * layer, s))
    return tuple(counts)


def stage_costs(spec: TransformerSpec, layout: Layout, machine: Machine) -> Stages:
    """Seconds and bytes of every model stage of ``layout``."""
    layers = stage_layers(spec, layout.stages, layout.split)
    last = layout.stages - 1
    fwd, (i_layer, w_layer) = spec.layer_forward_flops(), spec.layer_backward_flops(layout.recompute)
    head = spec.head_forward_flops()
    act = spec.activation_bytes_per_layer(layout.recompute)
    t_f, t_i, t_w, params, memory = [], [], [], [], []
    for s, n in enumerate(layers):
        is_last = s == last
        t_f.append((n * fwd + (head if is_last else 0.0)) / machine.flops)
        t_i.append((n * i_layer + (head if is_last else 0.0)) / machine.flops)
        t_w.append((n * w_layer + (head if is_last else 0.0)) / machine.flops)
        params.append(n * spec.layer_params() + (spec.embedding_params() if s == 0 else 0)
                      + (spec.head_params() if is_last else 0))
        memory.append(n * act + (spec.head_activation_bytes() if is_last else 0.0))
    return Stages(layers, tuple(t_f), tuple(t_i), tuple(t_w), tuple(params), tuple(memory))


def _node(machine: Machine, gpu: int) -> int:
    return gpu // machine.gpus_per_node


def link_costs(layout: Layout, machine: Machine) -> dict:
    """Costs fields for the pipeline links and the data-parallel ring of replica 0."""
    p = layout.pp
    crosses = {(a, b): _node(machine, a) != _node(machine, b) for a in range(p) for b in range(a + 1, p)}
    fields: dict = {}
    if any(crosses.values()):
        fields["bandwidth"] = {k: (machine.inter if c else machine.intra).bandwidth for k, c in crosses.items()}
        fields["latency"] = {k: (machine.inter if c else machine.intra).latency for k, c in crosses.items()}
    else:
        fields["bandwidth"], fields["latency"] = machine.intra.bandwidth, machine.intra.latency
    ring = machine.inter if p * layout.dp > machine.gpus_per_node else machine.intra
    fields["dp_bandwidth"], fields["dp_latency"] = ring.bandwidth, ring.latency
    return fields


def simulator_costs(spec: TransformerSpec, layout: Layout, machine: Machine, stages: Stages,
                    optimizer_time: float) -> Costs:
    """The simulator's Costs for ``layout``: per-stage times and activation bytes, boundary
    transfers, the gradient all-reduce (dtype_bytes per parameter) and the optimizer step."""
    return Costs(t_f=stages.t_f, t_i=stages.t_i, t_w=stages.t_w, act_bytes=spec.boundary_bytes(),
                 grad_bytes=tuple(spec.dtype_bytes * n for n in stages.params), dp=layout.dp,
                 act_memory=stages.act_memory, optimizer_time=optimizer_time, **link_costs(layout, machine))
