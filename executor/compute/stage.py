"""One model stage on one rank: forward, full backward, and the split backward I / W.

Split backward as in the zero-bubble paper (Qi et al., ICLR'24): I computes the gradient
of the stage input, W the weight gradients later. I asks autograd for the gradients of the
stage input *and of every layer's output* (retaining the graph); W then runs each layer's
own backward from its output gradient to its parameters only. Autograd prunes every node
that leads to no requested input, so W redoes no input-gradient work and I + W costs about
one B. A first stage has no input gradient: its I still produces the layer-output
gradients that its W needs.

Gradients accumulate in ``param.grad`` across microbatches; the last stage scales each
microbatch loss by 1/m so that the step's gradient is that of the mean loss.

Under ``--progress hooks`` a stage calls ``poke`` (the progress policy's,
:mod:`executor.transport.progress`) between layers, in the forward directly and in the
backward through a gradient hook on each layer's output; under every other policy a
real stage runs its layers bare (on a CPU the host is the device: a transfer moved
mid-op runs on the core the op is timed on, so it can only lengthen that op). The
forward runs under the memory meter's saved-tensor hooks (:mod:`executor.compute.memory`)
only while :meth:`Stage.metering` is on: the executor measures memory in a step of its
own, untimed, since the meter's counts depend on the order of ops, not on their times.
:class:`SleepStage` replaces compute by timed sleeps and hands out activation-sized
buffers, so schedules and transfers can be measured with more ranks than cores.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable

import torch
from torch import nn

__all__ = ["Stage", "SleepStage"]


class Stage:
    """Real compute of model stage ``index`` over its layers."""

    def __init__(self, index: int, layers: list[nn.Module], loss_fn: Callable | None, microbatches: int,
                 poke: Callable[[], None] | None = None, memory=None):
        self.index = index
        self.poke = poke  # called between layers; None: no progress calls inside the op
        self.meter = memory
        self.saving = contextlib.nullcontext()
        self.metering(memory is not None)
        self.layers = layers
        self.loss_fn = loss_fn  # set on the last stage only
        self.scale = 1.0 / microbatches
        self.params = [[p for p in layer.parameters() if p.requires_grad] for layer in layers]
        self._input: dict[int, torch.Tensor] = {}
        self._outs: dict[int, list[torch.Tensor]] = {}
        self._out_grads: dict[int, list[torch.Tensor | None]] = {}
        self.losses: list[torch.Tensor] = []

    def parameters(self) -> list[torch.Tensor]:
        return [p for group in self.params for p in group]

    def metering(self, on: bool) -> None:
        """Count saved tensors in the memory meter (on) or run the forward bare (off)."""
        self.saving = self.meter.hooks if on and self.meter is not None else contextlib.nullcontext()

    def forward(self, mb: int, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Run the layers; returns the output (or the scaled loss on the last stage)."""
        if x.is_floating_point() and self.index > 0:
            x = x.detach().requires_grad_()  # a leaf, so backward leaves its gradient in x.grad
        self._input[mb] = x
        outs, poke = [], self.poke
        with self.saving:
            for layer in self.layers:
                x = layer(x)
                outs.append(x)
                if poke is not None:
                    poke()
                    if x.requires_grad:
                        x.register_hook(self._poke_in_backward)
            if self.loss_fn is not None:
                loss = self.loss_fn(x, target) * self.scale
                self.losses.append(loss.detach() / self.scale)  # a tensor: no GPU sync mid-step
                outs.append(loss)
        self._outs[mb] = outs
        return outs[-1]

    def _poke_in_backward(self, grad: torch.Tensor) -> None:
        self.poke()  # returns None: the gradient passes unchanged

    def backward(self, mb: int, grad: torch.Tensor | None) -> torch.Tensor | None:
        """Full backward B: weight gradients accumulate, the input gradient is returned."""
        x, outs = self._input.pop(mb), self._outs.pop(mb)
        torch.autograd.backward(outs[-1], grad)
        return x.grad if x.requires_grad else None

    def backward_input(self, mb: int, grad: torch.Tensor | None) -> torch.Tensor | None:
        """I: gradients of the stage input and of each layer output; the graph is kept for W."""
        x, outs = self._input.pop(mb), self._outs[mb]
        root, layer_outs = outs[-1], outs[: len(self.layers)]
        inner = [t for t in outs[:-1] if t.requires_grad]  # with a loss: every layer's output
        wanted = ([x] if x.requires_grad else []) + inner
        grads = torch.autograd.grad(root, wanted, grad, retain_graph=True) if wanted else ()
        by_id = {id(t): g for t, g in zip(wanted, grads)}
        self._out_grads[mb] = [grad if t is root else by_id.get(id(t)) for t in layer_outs]
        return by_id.get(id(x)) if x.requires_grad else None

    def backward_weight(self, mb: int) -> None:
        """W: each layer's parameter gradients from its output gradient (saved by I).
        Autograd only walks the nodes between that output and the layer's parameters."""
        outs, grads = self._outs.pop(mb), self._out_grads.pop(mb)
        for out, grad, params in zip(outs, grads, self.params):
            if params and grad is not None:
                torch.autograd.backward(out, grad, inputs=params)
                if self.poke is not None:
                    self.poke()


class SleepStage:
    """Stand-in for :class:`Stage` under --compute sleep: sleeps, and hands out buffers of
    the real activation shapes (one per direction, reused: their contents are never read)."""

    def __init__(self, index: int, t_f: float, t_i: float, t_w: float,
                 out_like: torch.Tensor | None, in_like: torch.Tensor | None,
                 poke: Callable[[], None] | None = None, slice_s: float = 2e-4):
        self.index = index
        self.poke, self.slice = poke, slice_s
        self.t_f, self.t_i, self.t_w = t_f, t_i, t_w
        self._out, self._in_grad = out_like, in_like
        self.losses: list[float] = []

    def parameters(self) -> list[torch.Tensor]:
        return []

    def metering(self, on: bool) -> None:
        """Nothing to meter: a sleeping stage saves no tensors."""

    def _sleep(self, seconds: float) -> None:
        """Sleep until a deadline, poking every ``slice`` seconds: the stand-in for a device
        op leaves the host free, as a GPU kernel does, so transfers move meanwhile."""
        if self.poke is None:
            time.sleep(seconds)
            return
        deadline = time.perf_counter() + seconds
        while (left := deadline - time.perf_counter()) > 0:
            time.sleep(min(self.slice, left))
            self.poke()

    def forward(self, mb: int, x, target) -> torch.Tensor | None:
        self._sleep(self.t_f)
        return self._out

    def backward(self, mb: int, grad) -> torch.Tensor | None:
        self._sleep(self.t_i + self.t_w)
        return self._in_grad

    def backward_input(self, mb: int, grad) -> torch.Tensor | None:
        self._sleep(self.t_i)
        return self._in_grad

    def backward_weight(self, mb: int) -> None:
        self._sleep(self.t_w)
