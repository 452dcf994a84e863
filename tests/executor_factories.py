"""Factories for the executor's tests (``--model tests.executor_factories:<name>``)."""

from __future__ import annotations

import torch
from torch import nn


def tiny():
    """A four-layer MLP given as a plain list of modules, with a sum-of-squares loss."""
    layers = [nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6), nn.Linear(6, 3)]
    return layers, torch.randn(16, 6), torch.randn(16, 3), lambda out, target: ((out - target) ** 2).sum()


def dropout():
    """Dropout draws different masks per microbatch than over the whole batch, so the
    pipelined gradients cannot match the single-process run: --check must fail."""
    layers = [nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5)) for _ in range(4)]
    return nn.Sequential(*layers), torch.randn(16, 8), torch.randn(16, 8), nn.functional.mse_loss


def exits():
    """A factory that ends the process instead of returning: the run must refuse it."""
    raise SystemExit(0)
