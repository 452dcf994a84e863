"""Tensor memory as MPI buffers, with pinned host staging for GPUs without CUDA-aware MPI.

Buffers go to MPI as raw bytes (``MPI.BYTE``) of a contiguous tensor: no pickling, and
bfloat16, which has no MPI datatype, travels unchanged. A CPU tensor is handed over as
a NumPy view of its own memory (of its bytes, for the dtypes NumPy lacks).

On a GPU, MPI knows nothing of CUDA streams, so a buffer is handed to MPI only once the
kernels writing it are done. Without a CUDA-aware MPI (``staged``) every transfer goes
through pinned host memory:

* out (:meth:`Wire.stage_out`): the device-to-host copy is queued behind the kernels that
  produce the tensor, and the host waits for it to finish by polling an event and calling
  ``poke`` meanwhile (the progress policy's: outstanding transfers move while the host
  would otherwise sit in a stream synchronise without calling MPI). The copy's own span
  (two CUDA events around it, on the device's clock) is returned, so that a SEND's row
  can start after it and the copy be recorded apart.
* in (:meth:`Wire.stage_in`): the host-to-device copy of a received buffer is queued
  without waiting (``non_blocking``): the kernels that consume it are queued behind it
  on the same stream, and torch's pinned-memory allocator does not hand the buffer out
  again before the copy is done (it records an event on the block at the copy), so the
  buffer may be dropped at once. Its span is returned as two events.

With a CUDA-aware MPI (``PIPEBUBBLE_CUDA_AWARE=1`` or ``MPI.Query_cuda_support()``) MPI
reads and writes device memory itself: the host only waits for the producing kernels.

``Wire(cpu, staged=True)`` stages CPU tensors through a second host tensor, timed on the
host clock: the same path, for tests without a GPU.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import torch
from mpi4py import MPI

__all__ = ["Wire", "Copy", "cuda_aware"]

_NO_NUMPY = (torch.bfloat16,)  # CPU dtypes that Tensor.numpy() refuses

Copy = tuple  # (start, end): perf_counter floats, or CUDA events resolved later by the Recorder


def cuda_aware() -> bool:
    """Whether MPI may be handed device pointers (PIPEBUBBLE_CUDA_AWARE=0/1 overrides)."""
    forced = os.environ.get("PIPEBUBBLE_CUDA_AWARE")
    if forced is not None:
        return forced == "1"
    query = getattr(MPI, "Query_cuda_support", None)
    try:
        return bool(query()) if query else False
    except Exception:  # an MPI without the MPIX extension
        return False


class Wire:
    """Moves tensors of ``device`` in and out of MPI buffers.

    ``poke`` is called while the host waits for the device (None: the host blocks in the
    wait instead: the ``boundary``, ``thread`` and ``mpich`` policies)."""

    def __init__(self, device: torch.device, staged: bool | None = None, poke: Callable[[], None] | None = None):
        self.device = device
        self.gpu = device.type == "cuda"
        self.staged = (self.gpu and not cuda_aware()) if staged is None else staged
        self.direct = not self.staged
        self.poke = poke

    def spec(self, tensor: torch.Tensor) -> list:
        """The MPI buffer spec of a contiguous tensor's bytes."""
        if not tensor.is_cuda and tensor.dtype not in _NO_NUMPY:
            return [tensor.numpy(), MPI.BYTE]  # one call: this runs on every transfer
        raw = tensor.reshape(-1).view(torch.uint8)
        return [raw if raw.is_cuda else raw.numpy(), MPI.BYTE]

    def wait(self, event) -> None:
        """Return once ``event`` (a CUDA event recorded on the current stream) completed,
        poking meanwhile if the policy pokes while the device computes."""
        poke = self.poke
        if poke is None:
            event.synchronize()
            return
        while not event.query():
            poke()

    def stage_out(self, tensor: torch.Tensor) -> tuple[torch.Tensor, Copy | None]:
        """A contiguous tensor MPI may read now, and the span of the copy that made it
        (None: no copy). Returns once the data is in place."""
        tensor = tensor.detach().contiguous()
        if not self.gpu:
            if not self.staged:
                return tensor, None
            start = time.perf_counter()
            host = torch.empty_like(tensor)
            host.copy_(tensor)
            return host, (start, time.perf_counter())
        if not self.staged:
            ready = torch.cuda.Event()
            ready.record()
            self.wait(ready)
            return tensor, None
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        host.copy_(tensor, non_blocking=True)  # queued behind the kernels producing `tensor`
        end.record()
        self.wait(end)
        return host, (start, end)

    def outgoing(self, tensor: torch.Tensor) -> torch.Tensor:
        """:meth:`stage_out` without the copy's span."""
        return self.stage_out(tensor)[0]

    def buffer(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, list]:
        """A receive buffer MPI may write into, and its spec."""
        if self.gpu and not self.staged:
            buffer = torch.empty(shape, dtype=dtype, device=self.device)
        else:
            buffer = torch.empty(shape, dtype=dtype, pin_memory=self.gpu)
        return buffer, self.spec(buffer)

    def stage_in(self, buffer: torch.Tensor) -> tuple[torch.Tensor, Copy | None]:
        """The received tensor on the compute device, and the span of the copy that put it
        there (None: no copy). On a GPU the copy is only queued (see the module)."""
        if not self.staged:
            return buffer, None
        if not self.gpu:
            start = time.perf_counter()
            tensor = buffer.clone()
            return tensor, (start, time.perf_counter())
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        tensor = buffer.to(self.device, non_blocking=True)
        end.record()
        return tensor, (start, end)

    def arrived(self, buffer: torch.Tensor) -> torch.Tensor:
        """:meth:`stage_in` without the copy's span."""
        return self.stage_in(buffer)[0]
