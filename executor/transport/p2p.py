"""Point-to-point transfers of one pipeline rank, under the two semantics of the lowering pass.

``async`` (:class:`AsyncLinks`): a SEND is an Isend and the rank goes on; a RECV waits
until its data arrived. Every receive of the step is pre-posted into its own buffer when
the step begins, so a transfer can run as soon as its sender posts it (the simulator's
model: the link starts at the send's post), and the progress thread moves it along while
both ranks compute. Sends are completed at the end of the step.

``blocking`` (:class:`BlockingLinks`): a run of consecutive SEND/RECV ops is posted as
one batch (sends as Issend, so a send completes only once its receiver posted the
matching receive: rendezvous), and the rank waits for the whole batch at the run's last
op, before its next compute op: Megatron's batched ``send_forward_recv_backward``. Both
semantics wait through the progress thread (:mod:`executor.progress`), never spinning.

Tags name the transfer, identical on both sides: ``transfer_key`` (direction, source
stage, mb) numbered as ``(direction * stages + stage) * m + mb``. Shapes are known from
the model on every rank, so nothing about them is exchanged.

Trace rows: a SEND runs from its post to its completion; a RECV from the moment the rank
reaches it to the moment its data is there (zero when it had already arrived).
"""

from __future__ import annotations

import time

import torch
from mpi4py import MPI
from schedules import Op, OpKind
from schedules.ir import peer_stage, transfer_key

from .progress import Pending, Progress
from ..record.timing import Recorder
from .wire import Wire

__all__ = ["Links", "AsyncLinks", "BlockingLinks", "make_links"]

Key = tuple[str, int, int]


class Links:
    """What both semantics share: peers, tags, buffers, and the mailbox receives land in."""

    def __init__(self, comm: MPI.Comm, stage_to_rank: tuple[int, ...], microbatches: int,
                 boundary: list[tuple[tuple[int, ...], torch.dtype]], wire: Wire, recorder: Recorder,
                 progress: Progress):
        self.comm, self.where, self.m = comm, stage_to_rank, microbatches
        self.stages = len(stage_to_rank)
        self.boundary = boundary  # boundary[s]: (shape, dtype) of stage s's output for one mb
        self.wire, self.recorder, self.progress = wire, recorder, progress
        self.mailbox: dict[Key, torch.Tensor] = {}  # received tensors, taken by the interpreter
        self._buffers: dict[Key, torch.Tensor] = {}

    def tag(self, key: Key) -> int:
        direction, stage, mb = key
        return ((direction == "B") * self.stages + stage) * self.m + mb

    def peer(self, op: Op) -> int:
        return self.where[peer_stage(op)]

    def recv_buffer(self, key: Key) -> torch.Tensor:
        """The buffer of a transfer, made once and reused every step."""
        if key not in self._buffers:
            direction, stage, _ = key
            shape, dtype = self.boundary[stage if direction == "F" else stage - 1]
            self._buffers[key] = self.wire.buffer(shape, dtype)
        return self._buffers[key]

    def post_send(self, op: Op, tensor: torch.Tensor, synchronous: bool) -> tuple[MPI.Request, torch.Tensor]:
        data = self.wire.outgoing(tensor)
        post = self.comm.Issend if synchronous else self.comm.Isend
        return post(self.wire.spec(data), dest=self.peer(op), tag=self.tag(transfer_key(op))), data

    def post_recv(self, op: Op) -> tuple[MPI.Request, torch.Tensor]:
        key = transfer_key(op)
        buffer = self.recv_buffer(key)
        return self.comm.Irecv(self.wire.spec(buffer), source=self.peer(op), tag=self.tag(key)), buffer

    def deliver(self, op: Op, buffer: torch.Tensor) -> None:
        self.mailbox[transfer_key(op)] = self.wire.arrived(buffer)

    # The interpreter's interface.
    def begin_step(self, ops: tuple[Op, ...]) -> None: ...
    def send(self, op: Op, tensor: torch.Tensor) -> None: ...
    def recv(self, op: Op) -> None: ...
    def end_step(self) -> None: ...


class AsyncLinks(Links):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._recvs: dict[Key, tuple[Pending, torch.Tensor]] = {}
        self._sends: list[tuple[Op, float, Pending, torch.Tensor]] = []

    def begin_step(self, ops: tuple[Op, ...]) -> None:
        for op in ops:
            if op.kind is OpKind.RECV_F or op.kind is OpKind.RECV_B:
                request, buffer = self.post_recv(op)
                self._recvs[transfer_key(op)] = (self.progress.add(request), buffer)

    def send(self, op: Op, tensor: torch.Tensor) -> None:
        start = time.perf_counter()
        request, data = self.post_send(op, tensor, synchronous=False)
        self._sends.append((op, start, self.progress.add(request), data))  # `data` kept alive until done

    def recv(self, op: Op) -> None:
        start = time.perf_counter()
        pending, buffer = self._recvs.pop(transfer_key(op))
        done = self.progress.wait(pending)
        self.recorder.add(op, start, max(start, done))
        self.deliver(op, buffer)

    def end_step(self) -> None:
        for op, start, pending, _ in self._sends:
            self.recorder.add(op, start, self.progress.wait(pending))
        self._sends.clear()
        if self._recvs:
            raise RuntimeError(f"step ended with receives never reached: {sorted(self._recvs)}")


class BlockingLinks(Links):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._batch: list[tuple[Op, Pending, torch.Tensor]] = []
        self._posted = 0.0
        self._closing: frozenset[Op] = frozenset()

    def begin_step(self, ops: tuple[Op, ...]) -> None:
        """Note the last op of every run of comm ops: there the batch is waited for."""
        self._closing = frozenset(op for op, after in zip(ops, (*ops[1:], None))
                                  if op.kind.is_comm and (after is None or not after.kind.is_comm))

    def send(self, op: Op, tensor: torch.Tensor) -> None:
        self._open()
        request, data = self.post_send(op, tensor, synchronous=True)
        self._batch.append((op, self.progress.add(request), data))
        self._close_after(op)

    def recv(self, op: Op) -> None:
        self._open()
        request, buffer = self.post_recv(op)
        self._batch.append((op, self.progress.add(request), buffer))
        self._close_after(op)

    def _open(self) -> None:
        if not self._batch:
            self._posted = time.perf_counter()

    def _close_after(self, op: Op) -> None:
        if op in self._closing:
            self.settle()

    def settle(self) -> None:
        """Wait for the whole batch, then hand the received data over."""
        if not self._batch:
            return
        done = self.progress.wait_all([pending for _, pending, _ in self._batch])
        for op, _, buffer in self._batch:
            self.recorder.add(op, self._posted, done)
            if op.kind is OpKind.RECV_F or op.kind is OpKind.RECV_B:
                self.deliver(op, buffer)
        self._batch.clear()

    def end_step(self) -> None:
        self.settle()


def make_links(comm_mode: str, *args, **kwargs) -> Links:
    cls = AsyncLinks if comm_mode == "async" else BlockingLinks
    return cls(*args, **kwargs)
