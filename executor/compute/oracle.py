"""--check: one pipelined step against a single-process oracle.

The oracle runs the same layers (a copy taken before any step) on the whole batch in one
process: one forward of the full batch, the loss being the mean over the same D x m
microbatches of ``loss_fn`` (which is what the pipeline's 1/m scaling and the
data-parallel average compute), one backward. Every rank then compares the parameters of
its own stages, so no gradient has to travel; rank 0 gathers the verdicts and names the
first mismatching parameter in model order.

Tolerances (|a - b| <= atol + rtol |b| elementwise): float64 rtol 1e-9 with atol 1e-12
(an absolute floor only for entries that cancel to nearly zero), float32 rtol 1e-5 and
atol 1e-6, bfloat16 rtol 2e-2 and atol 1e-2 (gradients summed per microbatch in bf16).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .model import Workload

__all__ = ["reference", "compare", "TOLERANCES", "param_names"]

TOLERANCES = {torch.float64: (1e-9, 1e-12), torch.float32: (1e-5, 1e-6), torch.bfloat16: (2e-2, 1e-2)}


def param_names(layers, start: int) -> list[tuple[str, torch.Tensor]]:
    """Names in model order, as ``nn.Sequential`` would give them: '<layer>.<param>'."""
    return [(f"{start + k}.{name}", p) for k, layer in enumerate(layers)
            for name, p in layer.named_parameters() if p.requires_grad]


def reference(workload: Workload, parts: int) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and gradients of one single-process step over ``parts`` equal microbatches."""
    model = nn.Sequential(*copy.deepcopy(list(workload.layers)))
    out = model(workload.inputs)
    losses = [workload.loss_fn(o, t) for o, t in zip(out.tensor_split(parts), workload.targets.tensor_split(parts))]
    loss = torch.stack(losses).mean()
    loss.backward()
    grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in param_names(model, 0)}
    return float(loss.detach()), grads


def compare(name: str, got: torch.Tensor | None, want: torch.Tensor) -> str | None:
    """None when ``got`` matches ``want``; else one line saying how it differs."""
    got = torch.zeros_like(want) if got is None else got.detach().cpu()
    rtol, atol = TOLERANCES[want.dtype]
    if got.shape != want.shape:
        return f"parameter {name}: gradient shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    diff = (got.double() - want.double()).abs()
    bound = atol + rtol * want.double().abs()
    if bool((diff <= bound).all()):
        return None
    worst = int((diff - bound).argmax())
    return (f"parameter {name}: gradient differs from the single-process run "
            f"(max abs diff {float(diff.max()):.3e}; element {worst}: {float(got.reshape(-1)[worst]):.9g} "
            f"vs {float(want.reshape(-1)[worst]):.9g}; rtol {rtol:g}, atol {atol:g})")


def compare_loss(got: float, want: float, dtype: torch.dtype) -> str | None:
    rtol, atol = TOLERANCES[dtype]
    if abs(got - want) <= atol + rtol * abs(want):
        return None
    return f"loss {got:.12g} differs from the single-process run's {want:.12g} (rtol {rtol:g}, atol {atol:g})"
