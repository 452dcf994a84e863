"""What the search tries: every layout tp x pp x dp = GPUs, schedule, chunks, microbatches,
layer split, recomputation, sequence parallelism and optimizer sharding, less those that
make no sense.

A layout is left out (and, where a user's choice caused it, the reason kept in
``skipped``) when:
  * tp does not divide a node's GPUs, the attention heads, the key/value heads or the FFN
    (Megatron-LM's rules; tensor parallelism stays inside a node);
  * pp x chunks exceeds the layers, the global batch is not a multiple of dp x b, or the
    schedule does not build for (pp, m, chunks);
  * pp = 1 with chunks > 1 (one rank cut into chunks only adds boundaries), or a schedule
    other than 1F1B at pp = 1 when 1F1B is asked for too (with one rank they all run each
    microbatch's forward and backward in turn);
  * sequence parallelism at tp = 1, or a distributed optimizer at dp = 1 (neither changes
    anything there: the layout is listed once, without it);
  * an explicit split whose length is not pp x chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import schedules

from .layout import Layout, Machine, parse_split, stage_layers
from .ops import embedding_times, head_times, layer_times
from .shapes import accepts, names
from .transformer import RECOMPUTE, TransformerSpec

__all__ = ["PlanConfig", "enumerate_layouts", "tp_choices", "check_tp", "divisors"]


@dataclass(frozen=True)
class PlanConfig:
    """What to plan for and how widely to search."""

    model: TransformerSpec
    """The transformer (its microbatch_size is replaced by each of ``microbatch_sizes``)."""
    machine: Machine
    """GPUs, nodes, links and their efficiencies."""
    global_batch: int
    """Sequences per optimizer step, over all replicas."""
    memory_cap: float
    """Bytes a GPU may use."""
    microbatch_sizes: tuple[int, ...] = (1,)
    """Microbatch sizes b to try."""
    schedule_names: tuple[str, ...] = ()
    """Schedules to try; empty: every registered one but zb-auto (:func:`planner.shapes.names`)."""
    chunks: tuple[int, ...] = (1, 2, 3, 4)
    """Chunk counts to try, each where the schedule accepts it."""
    splits: tuple[str, ...] = ("uniform", "balanced")
    """Layer splits to try: uniform, balanced or explicit lists."""
    recompute: tuple[str, ...] = ("none", "full")
    """Recomputation settings to try."""
    tp: tuple[int, ...] | None = None
    """Tensor-parallel sizes to try; None: every divisor of a node's GPUs that fits the model."""
    pp: tuple[int, ...] | None = None
    """Pipeline depths to try; None: every one that divides the GPUs left."""
    dp: tuple[int, ...] | None = None
    """Data-parallel widths to try; None: whatever tp x pp leaves."""
    sequence_parallel: tuple[bool, ...] = (False, True)
    """Sequence parallelism off and/or on (only where tp > 1)."""
    distributed_optimizer: tuple[bool, ...] = (False,)
    """Optimizer sharding off and/or on (only where dp > 1)."""
    top: int = 10
    """Layouts (best estimates) to simulate with SimPy, besides the best of each schedule."""
    comm: str = "async"
    """Communication semantics of the simulation."""

    def __post_init__(self) -> None:
        for value in self.recompute:
            if value not in RECOMPUTE:
                raise ValueError(f"recompute must be one of {', '.join(RECOMPUTE)}, got {value!r}")


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n ** 0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def tp_choices(model: TransformerSpec, machine: Machine, pinned: tuple[int, ...] | None,
               skipped: list[str]) -> list[int]:
    """Tensor-parallel sizes that divide a node, the heads, the KV heads and the FFN; a
    pinned size that does not is kept in ``skipped`` with the reason (:func:`check_tp`
    refuses it on the command line)."""
    out = []
    for tp in pinned or divisors(machine.gpus_per_node):
        why = None
        if machine.gpus % tp or tp > machine.gpus_per_node or machine.gpus_per_node % tp:
            why = f"tensor parallelism stays in a node of {machine.gpus_per_node} GPUs (and divides {machine.gpus})"
        elif model.heads % tp or model.kv % tp:
            why = f"{model.heads} heads / {model.kv} KV heads are not divisible by {tp}"
        elif model.f % tp:
            why = f"FFN size {model.f} is not divisible by {tp}"
        if why:
            if pinned:
                skipped.append(f"tp={tp}: {why}")
            continue
        out.append(tp)
    return out


def check_tp(model: TransformerSpec, machine: Machine, pinned: tuple[int, ...]) -> None:
    """ValueError for the first pinned tensor-parallel size that cannot be used."""
    for tp in pinned:
        why: list[str] = []
        if not tp_choices(model, machine, (tp,), why):
            raise ValueError(f"--tp {tp}: {why[0].split(': ', 1)[1]}")


def _schedules(config: PlanConfig, pp: int) -> list[tuple[str, int]]:
    """(schedule, chunks) pairs worth trying at this depth (see the module docstring)."""
    tried = config.schedule_names or tuple(names())
    pairs = [(n, v) for n in tried for v in config.chunks if accepts(n, v)]
    if pp == 1:
        pairs = [(n, v) for n, v in pairs if v == 1]
        if any(n == "1f1b" for n, _ in pairs):
            pairs = [("1f1b", 1)]
    return pairs


def _builds(name: str, pp: int, m: int, v: int) -> str | None:
    """Why the schedule does not build (None if it does)."""
    try:
        schedules.registry.spec(name)
        if not schedules.registry.accepts(name, pp, m, v):
            raise schedules.ScheduleError(f"{name}: {schedules.registry.spec(name).microbatch_rule}")
    except schedules.ScheduleError as err:
        return str(err).splitlines()[0]
    return None


def enumerate_layouts(config: PlanConfig, skipped: list[str] | None = None) -> list[Layout]:
    """Every layout the search considers, in a fixed order."""
    skipped = [] if skipped is None else skipped
    machine, model = config.machine, config.model
    gpus, L = machine.gpus, model.layers
    out = []
    for tp in tp_choices(model, machine, config.tp, skipped):
        for pp in (d for d in divisors(gpus // tp) if config.pp is None or d in config.pp):
            dp = gpus // (tp * pp)
            if config.dp is not None and dp not in config.dp:
                continue
            for b in config.microbatch_sizes:
                if config.global_batch % (dp * b):
                    skipped.append(f"tp={tp} pp={pp} dp={dp} b={b}: global batch {config.global_batch} "
                                   f"is not a multiple of dp x b")
                    continue
                m = config.global_batch // (dp * b)
                for name, v in _schedules(config, pp):
                    if pp * v > L:
                        skipped.append(f"{name} pp={pp} v={v}: {pp * v} stages for {L} layers")
                        continue
                    why = _builds(name, pp, m, v)
                    if why:
                        skipped.append(f"{name} pp={pp} m={m} v={v}: {why}")
                        continue
                    out += _variants(config, Layout(name, pp, dp, v, m, b, "uniform", "none", tp), skipped)
    if config.dp is not None and not out and not skipped:
        skipped.append(f"no tp x pp leaves dp in {','.join(map(str, config.dp))} of {gpus} GPUs")
    return out


def _variants(config: PlanConfig, base: Layout, skipped: list[str]) -> list[Layout]:
    """``base`` with every split, recomputation, SP and optimizer sharding that makes sense."""
    splits = []
    for split in config.splits:
        if split in ("uniform", "balanced"):
            splits.append(split)
            continue
        try:
            parse_split(split, base.stages, config.model.layers)
        except ValueError as err:
            skipped.append(f"{base.schedule} pp={base.pp} v={base.chunks}: {err}")
            continue
        splits.append(split)
    if "uniform" in splits and "balanced" in splits:  # balanced only where it differs
        S = base.stages
        if stage_layers(config.model, S, "balanced", *_end_weights(config, base)) == stage_layers(config.model, S, "uniform"):
            splits.remove("balanced")
    sps = sorted(set(config.sequence_parallel)) if base.tp > 1 else [False]
    dos = sorted(set(config.distributed_optimizer)) if base.dp > 1 else [False]
    return [replace(base, split=split, recompute=rc, sequence_parallel=sp, distributed_optimizer=do)
            for split in splits for rc in config.recompute for sp in sps for do in dos]


def _end_weights(config: PlanConfig, base: Layout) -> tuple[float, float]:
    """What the embedding and the head cost in layers, at this tp (balanced split)."""
    gpu, link, spec = config.machine.gpu, config.machine.intra, config.model
    if spec.microbatch_size != base.microbatch_size:
        spec = replace(spec, microbatch_size=base.microbatch_size)
    unit = layer_times(spec, gpu, link, base.tp)
    total = unit.f + unit.i + unit.w
    embed, head = embedding_times(spec, gpu, link, base.tp), head_times(spec, gpu, link, base.tp)
    return (embed.f + embed.i + embed.w) / total, (head.f + head.i + head.w) / total
