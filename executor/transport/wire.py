"""Tensor memory as MPI buffers, with pinned host staging for GPUs without CUDA-aware MPI.

Buffers go to MPI as raw bytes (``MPI.BYTE``) of a contiguous tensor: no pickling, and
bfloat16, which has no MPI datatype, travels unchanged. A CPU tensor is handed over as
a NumPy view of its own memory (of its bytes, for the dtypes NumPy lacks). On a GPU the stream is synchronised before MPI reads a
buffer (MPI knows nothing of CUDA streams); without a CUDA-aware MPI every transfer is
staged through pinned host memory, which also lets the copy run at full PCIe speed.
"""

from __future__ import annotations

import os

import torch
from mpi4py import MPI

__all__ = ["Wire", "cuda_aware"]

_NO_NUMPY = (torch.bfloat16,)  # CPU dtypes that Tensor.numpy() refuses


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
    """Moves tensors of ``device`` in and out of MPI buffers."""

    def __init__(self, device: torch.device):
        self.device = device
        self.gpu = device.type == "cuda"
        self.direct = not self.gpu or cuda_aware()

    def spec(self, tensor: torch.Tensor) -> list:
        """The MPI buffer spec of a contiguous tensor's bytes."""
        if not tensor.is_cuda and tensor.dtype not in _NO_NUMPY:
            return [tensor.numpy(), MPI.BYTE]  # one call: this runs on every transfer
        raw = tensor.reshape(-1).view(torch.uint8)
        return [raw if raw.is_cuda else raw.numpy(), MPI.BYTE]

    def outgoing(self, tensor: torch.Tensor) -> torch.Tensor:
        """A contiguous tensor MPI may read now (staged to pinned host memory if needed)."""
        tensor = tensor.detach().contiguous()
        if not self.gpu:
            return tensor
        if self.direct:
            torch.cuda.current_stream().synchronize()
            return tensor
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor)  # synchronous: waits for the kernels producing `tensor`
        return host

    def buffer(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, list]:
        """A receive buffer MPI may write into, and its spec."""
        if self.gpu and self.direct:
            buffer = torch.empty(shape, dtype=dtype, device=self.device)
        else:
            buffer = torch.empty(shape, dtype=dtype, pin_memory=self.gpu)
        return buffer, self.spec(buffer)

    def arrived(self, buffer: torch.Tensor) -> torch.Tensor:
        """The received tensor on the compute device."""
        return buffer.to(self.device) if buffer.device != self.device else buffer
