"""The activation memory a rank actually holds, measured as it runs.

Counted: every tensor autograd saves for a backward (through
``torch.autograd.graph.saved_tensors_hooks``), and every received activation or gradient
buffer from its delivery until the last reference to it is gone; each storage once, by
its whole size (a view counts the storage it views; the input a stage received and then
saved is one storage). Not counted: parameters and their gradients (weights, not
activations), the batch's inputs and targets (data, not activations: a microbatch is a
view of them), receive buffers still waiting for their data, and temporaries that live
only inside an op. The interpreter samples the total at every op boundary; on CUDA,
``torch.cuda.max_memory_allocated`` is reported beside it (everything the allocator
held, weights and temporaries included).

A saved tensor is released when autograd frees it: after a full backward B, or after W
for a split backward (I keeps the graph, W releases it).
"""

from __future__ import annotations

import time
import weakref
from functools import partial

import torch

__all__ = ["MemoryMeter"]


class _Saved:
    """What the pack hook hands autograd instead of a tensor: releases its storage when freed."""

    __slots__ = ("tensor", "meter", "key", "__weakref__")

    def __init__(self, meter: "MemoryMeter", tensor: torch.Tensor, key: int):
        self.tensor, self.meter, self.key = tensor, meter, key

    def __del__(self):
        self.meter._release(self.key)


class MemoryMeter:
    """Bytes of distinct storages held for backward or as delivered buffers."""

    def __init__(self, excluded: list[torch.Tensor]):
        """``excluded``: tensors whose storages are never counted (parameters, input data)."""
        self._excluded = {t.untyped_storage().data_ptr() for t in excluded}
        self._held: dict[int, list[int]] = {}  # storage pointer -> [bytes, references]
        self.current = 0
        self.peak = 0
        self.samples: list[tuple[float, int, int]] = []  # (perf_counter, bytes, op index; -1 step start)
        self._watched: set[weakref.ref] = set()  # delivered buffers, until their tensor is freed
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self.on = True  # off: delivered buffers are not counted (the stages' hooks: Stage.metering)

    def _acquire(self, tensor: torch.Tensor) -> int | None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self._excluded or not storage.nbytes():
            return None
        entry = self._held.get(key)
        if entry is None:
            self._held[key] = [storage.nbytes(), 1]
            self.current += storage.nbytes()
        else:
            entry[1] += 1
        return key

    def _release(self, key: int) -> None:
        entry = self._held[key]
        entry[1] -= 1
        if not entry[1]:
            self.current -= entry[0]
            del self._held[key]

    def _pack(self, tensor: torch.Tensor):
        key = self._acquire(tensor)
        return tensor if key is None else _Saved(self, tensor, key)

    @staticmethod
    def _unpack(saved):
        return saved.tensor if isinstance(saved, _Saved) else saved

    def hold(self, tensor: torch.Tensor) -> None:
        """Count a delivered buffer until the tensor object is freed (a weak reference's
        callback: a tenth of a ``weakref.finalize``, which runs on every transfer); a
        no-op while the meter is off."""
        if not self.on:
            return
        key = self._acquire(tensor)
        if key is not None:
            self._watched.add(weakref.ref(tensor, partial(self._let_go, key)))

    def _let_go(self, key: int, ref: weakref.ref) -> None:
        self._watched.discard(ref)
        self._release(key)

    def sample(self, op: int) -> None:
        """Note the bytes held after op ``op`` of the rank's list (-2: inside an overlapped pair)."""
        self.samples.append((time.perf_counter(), self.current, op))

    def begin_step(self) -> None:
        self.samples = []
        self.sample(-1)
