"""Pipeline x data parallel: the two communicators of a rank and the gradient all-reduce.

World rank ``w`` is pipeline rank ``w % P`` of replica ``w // P`` (so one replica's
stages sit on consecutive ranks, usually one node). ``COMM_WORLD.Split`` gives one
pipeline communicator per replica (Send/Recv between stages) and one data-parallel
communicator per pipeline position (Allreduce of the gradients of the stages held
there), as in the textbook figure of 2 stages x 2 replicas.

REDUCE_GRAD averages one stage's gradients over its data-parallel communicator: the
gradients are packed into one flat buffer (one all-reduce instead of one per tensor;
bfloat16 is summed in float32, which MPI can add), summed, and divided by D. Under
``async`` it is an Iallreduce moved along by the progress thread and completed before
the optimizer; under ``blocking`` the rank waits for it on the spot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from mpi4py import MPI
from schedules import Op

from .progress import Pending, Progress
from ..record.timing import Recorder
from .wire import Wire

__all__ = ["Topology", "split_world", "GradReducer"]


@dataclass(frozen=True)
class Topology:
    world: MPI.Comm
    pipe_comm: MPI.Comm
    """This replica's pipeline communicator; its rank is the pipeline rank."""
    dp_comm: MPI.Comm
    """The communicator of this pipeline position across replicas."""
    replica: int
    ranks: int
    """Pipeline ranks P."""
    replicas: int
    """Data-parallel degree D."""

    @property
    def rank(self) -> int:
        return self.pipe_comm.Get_rank()


def split_world(world: MPI.Comm, ranks: int, replicas: int) -> Topology:
    """Collective over ``world``: its size must equal ranks x replicas (checked before)."""
    w = world.Get_rank()
    replica, rank = divmod(w, ranks)
    pipe = world.Split(color=replica, key=rank)
    dp = world.Split(color=rank, key=replica)
    return Topology(world, pipe, dp, replica, ranks, replicas)


class GradReducer:
    """REDUCE_GRAD of the stages on this rank."""

    def __init__(self, topology: Topology, params: dict[int, list[torch.Tensor]], wire: Wire,
                 recorder: Recorder, progress: Progress, overlap: bool):
        self.dp_comm, self.replicas = topology.dp_comm, topology.replicas
        self.params, self.wire, self.recorder, self.progress = params, wire, recorder, progress
        self.overlap = overlap  # async: complete before the optimizer; blocking: wait at once
        self._inflight: list[tuple[Op, float, Pending, torch.Tensor]] = []

    def _pack(self, stage: int) -> torch.Tensor:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params[stage]]
        flat = torch.cat([g.reshape(-1) for g in grads]) if grads else torch.zeros(0)
        if flat.dtype == torch.bfloat16:
            flat = flat.float()
        return self.wire.outgoing(flat)  # host copy for a GPU without CUDA-aware MPI

    def _unpack(self, stage: int, flat: torch.Tensor) -> None:
        flat = flat.to(self.params[stage][0].device) / self.replicas if self.params[stage] else flat
        offset = 0
        for p in self.params[stage]:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(p.dtype).clone()
            offset += n

    def reduce(self, op: Op) -> None:
        start = time.perf_counter()
        flat = self._pack(op.stage)
        spec = flat if flat.is_cuda else flat.numpy()  # typed, not bytes: MPI adds the values
        request = self.dp_comm.Iallreduce(MPI.IN_PLACE, spec, op=MPI.SUM)
        self._inflight.append((op, start, self.progress.add(request), flat))
        if not self.overlap:
            self.finish()

    def finish(self) -> None:
        """Complete every all-reduce still in flight (before the optimizer steps)."""
        for op, start, pending, flat in self._inflight:
            self.recorder.add(op, start, self.progress.wait(pending))
            self._unpack(op.stage, flat)
        self._inflight.clear()
