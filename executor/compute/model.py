"""The model and data a run trains, and how its layers are cut into model stages.

A workload is what a factory returns: a sequence of layers (``nn.Sequential`` or a list of
modules), the full batch of inputs and targets, and ``loss_fn(output, target) -> scalar``.
The model knows nothing about distribution: every rank builds the whole workload from the
same seed and keeps the layers of its own stages.

Stages are balanced by parameter count: the linear-partition dynamic programme that
minimises the largest stage's parameter count (as GPipe's and torchgpipe's balancers
do by parameters or time), unless ``--balance`` fixes the layers per stage.
"""

from __future__ import annotations

import copy
import importlib
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ..config import RunConfig, UsageError

__all__ = ["Workload", "Boundary", "build_workload", "partition", "stage_bounds", "stage_shapes", "DTYPES", "footprint",
           "check_fits", "available_memory"]

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


Boundary = tuple[tuple[int, ...], torch.dtype]
"""Shape and dtype of one microbatch's activation leaving a stage."""


@dataclass(frozen=True)
class Workload:
    layers: tuple[nn.Module, ...]
    inputs: torch.Tensor
    targets: torch.Tensor
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mlp(cfg: RunConfig):
    layers = [nn.Sequential(nn.Linear(cfg.width, cfg.width), nn.Tanh()) for _ in range(cfg.layers)]
    inputs = torch.randn(cfg.batch, cfg.width)
    targets = torch.randn(cfg.batch, cfg.width)
    return layers, inputs, targets, nn.functional.mse_loss


def _transformer(cfg: RunConfig):
    if cfg.width % cfg.heads:
        raise UsageError(f"--width {cfg.width} must be divisible by --heads {cfg.heads}")
    # dropout 0 keeps the forward deterministic, so --check compares exact gradients.
    layers = [
        nn.TransformerEncoderLayer(cfg.width, cfg.heads, 4 * cfg.width, dropout=0.0, batch_first=True)
        for _ in range(cfg.layers)
    ]
    inputs = torch.randn(cfg.batch, cfg.seq_len, cfg.width)
    targets = torch.randn(cfg.batch, cfg.seq_len, cfg.width)
    return layers, inputs, targets, nn.functional.mse_loss


_BUILTIN = {"mlp": _mlp, "transformer": _transformer}


def _factory(spec: str) -> Callable[[], tuple]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"--model {spec!r}: expected mlp, transformer or package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # any import failure is the user's argument, not our bug
        raise UsageError(f"--model {spec!r}: cannot import {module_name}: {type(err).__name__}: {err}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"--model {spec!r}: {module_name} has no callable {attr}")
    return factory


HELD_PER_LAYER = 4
"""Activation tensors a layer keeps per row for the backward, at most (a Linear its input, an
activation its output, with their gradients): the bound below counts the whole batch's."""


def footprint(cfg: RunConfig) -> int | None:
    """Bytes a built-in workload needs on every rank that builds it, at most: the whole
    model (every rank builds every layer, then keeps its own), its gradients, the batch,
    and every row's activations through every layer. None for a factory (unknown until it
    has run). A bound, not an estimate: it refuses sizes no machine here can hold."""
    if cfg.model not in _BUILTIN:
        return None
    w, rows = cfg.width, cfg.batch
    if cfg.model == "mlp":
        params, tokens = cfg.layers * (w * w + w), rows
        scores = 0
    else:
        params, tokens = cfg.layers * (12 * w * w + 13 * w), rows * cfg.seq_len
        scores = cfg.layers * rows * cfg.heads * cfg.seq_len * cfg.seq_len  # attention probabilities
    data = 2 * tokens * w
    held = cfg.layers * HELD_PER_LAYER * tokens * w + scores
    return (2 * params + data + held) * DTYPES[cfg.dtype].itemsize


def available_memory() -> int | None:
    """Bytes this machine can still give (MemAvailable), None where it cannot be read."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_fits(cfg: RunConfig, ranks_here: int) -> None:
    """Refuse a built-in workload that ``ranks_here`` ranks of this machine cannot hold."""
    need, have = footprint(cfg), available_memory()
    if need is None or have is None or cfg.compute == "sleep":  # sleeping stages build on the meta device
        return
    if need * ranks_here > have:
        raise UsageError(f"--model {cfg.model} --layers {cfg.layers} --width {cfg.width} --batch {cfg.batch}"
                         + (f" --seq-len {cfg.seq_len}" if cfg.model == "transformer" else "")
                         + f" needs up to {need / 2**30:.3g} GiB on each of {ranks_here} ranks here (weights, "
                         f"gradients, data, activations); this machine has {have / 2**30:.3g} GiB available")


def build_workload(cfg: RunConfig, meta: bool = False) -> Workload:
    """Build the model and the full batch from ``cfg.seed``, identically on every rank.

    ``meta`` builds on the meta device (no memory, shapes only) for --compute sleep.
    """
    maker = _BUILTIN.get(cfg.model) or (lambda _cfg, f=_factory(cfg.model): f())
    torch.manual_seed(cfg.seed)
    try:
        with torch.device("meta") if meta else torch.device("cpu"):
            made = maker(cfg)
    except SystemExit as exit_:  # a factory may not end the run: every rank would exit 0 with nothing done
        raise UsageError(f"--model {cfg.model}: the factory called sys.exit({exit_.code!r}) instead of returning "
                         f"(model, inputs, targets, loss_fn)") from None
    if not (isinstance(made, tuple) and len(made) == 4):
        raise UsageError(f"--model {cfg.model}: the factory must return (model, inputs, targets, loss_fn)")
    model, inputs, targets, loss_fn = made
    layers = tuple(model) if isinstance(model, (nn.Sequential, list, tuple)) else None
    if not layers or not all(isinstance(layer, nn.Module) for layer in layers):
        raise UsageError(f"--model {cfg.model}: the model must be an nn.Sequential or a list of modules")
    dtype = DTYPES[cfg.dtype]
    layers = tuple(layer.to(dtype) for layer in layers)
    inputs, targets = (t.to(dtype) if t.is_floating_point() else t for t in (inputs, targets))
    return Workload(layers, inputs, targets, loss_fn)


def partition(weights: Sequence[int], parts: int) -> list[int]:
    """Layer counts per part, contiguous, minimising the largest part's weight.

    Each layer weighs its parameter count plus one, so parameterless layers still spread.
    """
    n = len(weights)
    if n < parts:
        raise UsageError(f"the model has {n} layers, fewer than its {parts} model stages")
    prefix = [0]
    for w in weights:
        prefix.append(prefix[-1] + w + 1)
    inf = float("inf")
    # best[k][i]: smallest largest-part weight splitting the first i layers into k parts.
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    cut = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0
    for k in range(1, parts + 1):
        for i in range(k, n - (parts - k) + 1):
            for j in range(k - 1, i):
                cost = max(best[k - 1][j], prefix[i] - prefix[j])
                if cost < best[k][i]:
                    best[k][i], cut[k][i] = cost, j
    sizes, i = [], n
    for k in range(parts, 0, -1):
        sizes.append(i - cut[k][i])
        i = cut[k][i]
    return sizes[::-1]


def stage_bounds(layers: Sequence[nn.Module], stages: int, balance: Sequence[int] | None) -> list[tuple[int, int]]:
    """[start, stop) layer indices of every model stage."""
    if balance is not None:
        if len(balance) != stages:
            raise UsageError(f"--balance names {len(balance)} stages; the schedule has {stages}")
        if sum(balance) != len(layers):
            raise UsageError(f"--balance sums to {sum(balance)} layers; the model has {len(layers)}")
        sizes = list(balance)
    else:
        sizes = partition([sum(p.numel() for p in layer.parameters()) for layer in layers], stages)
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    return bounds


def stage_shapes(workload: Workload, bounds: list[tuple[int, int]], rows: int) -> list[Boundary]:
    """One microbatch through the stages. A meta-built model (--compute sleep) is run one
    layer at a time on uninitialised CPU memory: only shapes matter, and a forward on the
    meta device costs seconds of lazy imports per rank. It runs one row, dimension 0 being
    the batch by the factory contract, and scales dimension 0 back up."""
    x = workload.inputs[:rows]
    meta = x.is_meta
    if meta:
        x = torch.zeros((1, *x.shape[1:]), dtype=x.dtype)
    shapes = []
    with torch.no_grad():
        for start, stop in bounds:
            for layer in workload.layers[start:stop]:
                x = _materialised(layer)(x)
            shape = (rows, *x.shape[1:]) if meta else tuple(x.shape)
            shapes.append((tuple(shape), x.dtype))
    return shapes


def _materialised(layer: torch.nn.Module) -> torch.nn.Module:
    is_meta = any(t.is_meta for t in [*layer.parameters(), *layer.buffers()])
    return copy.deepcopy(layer).to_empty(device="cpu") if is_meta else layer
