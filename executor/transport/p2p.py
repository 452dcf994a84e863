"""Point-to-point transfers of one pipeline rank, under the two semantics of the lowering pass.

``async`` (:class:`AsyncLinks`): a SEND is an Isend and the rank goes on; a RECV waits
until its data arrived. A bounded window of this rank's next receives (in op order) is
pre-posted, each into a buffer of its own, so that a transfer can run as soon as its
sender posts it (the simulator's model: the link starts at the send's post) while the
rank holds O(window) receive buffers rather than one per transfer of the step. Consuming
a RECV posts the next one. Sends are completed by the progress policy's pokes and, at
the latest, at the end of the step.

``blocking`` (:class:`BlockingLinks`): a run of consecutive SEND/RECV ops is posted as
one batch (sends as Issend, so a send completes only once its receiver posted the
matching receive: rendezvous), and the rank waits for the whole batch at the run's last
op, before its next compute op: Megatron's batched ``send_forward_recv_backward``.

Tags: :mod:`executor.transport.tags`. Shapes are known from the model on every rank, so
nothing about them is exchanged. Everything a SEND or RECV needs besides its data (its
transfer, peer, tag, and a receive's shape) is worked out once per op, before the
first step (:meth:`Links.routes`): after a long compute op the interpreter's own caches
are cold, and every Python call on the way to ``Isend`` then costs several times what it
costs in a tight loop (a SEND's handler took about 50 us here before, 3 us of it MPI's).

Trace rows, one per op with that op's own times, the same meaning as in the simulator:
a SEND runs from its post to its completion (the send request complete: the data has
left the sender's buffer; the simulator's link delivered it); a RECV from the moment the
rank reaches it (async) or posts it (blocking) to the moment its data is there. Under
blocking every op of a batch starts at the batch's post and ends at its own completion.

Staging on a GPU (:mod:`executor.transport.wire`) is no part of a row: a SEND's row starts
once its device-to-host copy is done (so the link, a RECV's end minus its SEND's start,
holds no compute and no copy), a RECV's row ends when its data is in host memory, and
each copy is recorded as a span of its own (:meth:`Recorder.add_copy`, kinds D2H and
H2D), which the host-time fit sees as time around the ops. Under blocking a SEND that
staged after its batch was posted starts at the end of its own copy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from mpi4py import MPI
from schedules import Op, OpKind, Transfer, batch_ends
from schedules.ir import peer_stage

from ..record.timing import Recorder
from .progress import Pending, Progress
from .tags import TagPlan
from .wire import Wire

__all__ = ["Links", "Route", "AsyncLinks", "BlockingLinks", "make_links"]


def _is_recv(op: Op) -> bool:
    return op.kind is OpKind.RECV_F or op.kind is OpKind.RECV_B


@dataclass(eq=False, slots=True)
class Route:
    """What one SEND or RECV op needs besides its data (hashed by identity)."""

    transfer: Transfer
    peer: int
    tag: int
    shape: tuple[int, ...]  # of the data crossing (receive buffers are made to it)
    dtype: torch.dtype


class Links:
    """What both semantics share: peers, tags, buffers, and the mailbox receives land in."""

    def __init__(self, pipe_comm: MPI.Comm, stage_to_rank: tuple[int, ...], tags: TagPlan,
                 boundary: list[tuple[tuple[int, ...], torch.dtype]], wire: Wire, recorder: Recorder,
                 progress: Progress, memory=None):
        self.pipe_comm, self.where, self.tags = pipe_comm, stage_to_rank, tags
        self.boundary = boundary  # boundary[s]: (shape, dtype) of stage s's output for one mb
        self.wire, self.recorder, self.progress = wire, recorder, progress
        self.memory = memory  # counts delivered buffers while they live (None: not measured)
        self.mailbox: dict[Transfer, torch.Tensor] = {}  # received tensors, taken by the interpreter

    def peer(self, op: Op) -> int:
        return self.where[peer_stage(op)]

    def routes(self, ops: tuple[Op, ...]) -> dict[int, Route]:
        """The route of every SEND and RECV of ``ops``, by index."""
        found = {}
        for i, op in enumerate(ops):
            if op.kind.is_comm:
                transfer = Transfer.of(op)
                shape, dtype = self.boundary[transfer.boundary]
                found[i] = Route(transfer, self.peer(op), self.tags.tag(transfer), shape, dtype)
        return found

    def stage(self, op: Op, tensor: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """The data MPI may read now, and whether a staging copy made it (recorded apart)."""
        data, copy = self.wire.stage_out(tensor)
        if copy is not None:
            self.recorder.add_copy("D2H", op.stage, -1 if op.mb is None else op.mb, data.nbytes, copy)
        return data, copy is not None

    def post_send(self, route: Route, data: torch.Tensor, synchronous: bool) -> MPI.Request:
        post = self.pipe_comm.Issend if synchronous else self.pipe_comm.Isend
        return post(self.wire.spec(data), route.peer, route.tag)

    def post_recv(self, route: Route) -> tuple[MPI.Request, torch.Tensor]:
        buffer, spec = self.wire.buffer(route.shape, route.dtype)
        return self.pipe_comm.Irecv(spec, route.peer, route.tag), buffer

    def deliver(self, op: Op, route: Route, buffer: torch.Tensor) -> None:
        tensor, copy = self.wire.stage_in(buffer)
        if copy is not None:
            self.recorder.add_copy("H2D", op.stage, -1 if op.mb is None else op.mb, buffer.nbytes, copy)
        if self.memory is not None:
            self.memory.hold(tensor)
        self.mailbox[route.transfer] = tensor

    # The interpreter's interface: ``routes`` once, then per step these.
    def begin_step(self, ops: tuple[Op, ...], routes: dict[int, Route]) -> None: ...
    def send(self, op: Op, route: Route, tensor: torch.Tensor) -> None: ...
    def recv(self, op: Op, route: Route) -> None: ...
    def end_step(self) -> None: ...
    def waiting_for(self, op: Op) -> int | None:
        """For the watchdog: the pipeline rank an op of this rank waits on, if it is a RECV."""
        return self.peer(op) if _is_recv(op) else None


class AsyncLinks(Links):
    def __init__(self, *args, window: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.window = window  # receives pre-posted ahead; None: all of the step's
        self._order: list[Route] = []  # this step's receives, in op order
        self._next = 0  # index in _order of the next receive to post
        self._recvs: dict[Route, tuple[Pending, torch.Tensor]] = {}
        self._sends: list[tuple[Op, float, Pending, torch.Tensor]] = []

    def begin_step(self, ops: tuple[Op, ...], routes: dict[int, Route]) -> None:
        self._order = [routes[i] for i, op in enumerate(ops) if _is_recv(op)]
        self._next = 0
        for _ in range(len(self._order) if self.window is None else self.window):
            self._post_next()

    def _post_next(self) -> None:
        if self._next < len(self._order):
            route = self._order[self._next]
            self._next += 1
            request, buffer = self.post_recv(route)
            self._recvs[route] = (self.progress.add(request), buffer)

    def send(self, op: Op, route: Route, tensor: torch.Tensor) -> None:
        data, _ = self.stage(op, tensor)
        start = time.perf_counter()
        request = self.post_send(route, data, synchronous=False)
        self._sends.append((op, start, self.progress.add(request), data))  # `data` kept alive until done

    def recv(self, op: Op, route: Route) -> None:
        start = time.perf_counter()
        pending, buffer = self._recvs.pop(route)
        done = self.progress.wait(pending)
        self.recorder.add(op, start, max(start, done))
        self.deliver(op, route, buffer)
        self._post_next()

    def end_step(self) -> None:
        for op, start, pending, _ in self._sends:
            self.recorder.add(op, start, self.progress.wait(pending))
        self._sends.clear()
        if self._recvs or self._next < len(self._order):
            raise RuntimeError(f"step ended with receives never reached: {sorted(self._recvs)}")


class BlockingLinks(Links):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._batch: list[tuple[Op, Route, Pending, torch.Tensor, float]] = []  # ..., the row's start
        self._posted = 0.0
        self._closing: frozenset[Route] = frozenset()

    def begin_step(self, ops: tuple[Op, ...], routes: dict[int, Route]) -> None:
        """Note the last op of every batch (:func:`schedules.batch_ends`): there it is waited for."""
        if not self._closing:
            ends = batch_ends(ops)
            self._closing = frozenset(routes[i] for i, op in enumerate(ops) if op.kind.is_comm and ends[i] == i + 1)

    def send(self, op: Op, route: Route, tensor: torch.Tensor) -> None:
        data, copied = self.stage(op, tensor)
        self._open()
        start = time.perf_counter() if copied else self._posted
        request = self.post_send(route, data, synchronous=True)
        self._batch.append((op, route, self.progress.add(request), data, start))
        self._close_after(route)

    def recv(self, op: Op, route: Route) -> None:
        self._open()
        request, buffer = self.post_recv(route)
        self._batch.append((op, route, self.progress.add(request), buffer, self._posted))
        self._close_after(route)

    def _open(self) -> None:
        if not self._batch:
            self._posted = time.perf_counter()

    def _close_after(self, route: Route) -> None:
        if route in self._closing:
            self.settle()

    def settle(self) -> None:
        """Wait for the whole batch, then hand the received data over."""
        if not self._batch:
            return
        ends = self.progress.wait_all([pending for _, _, pending, _, _ in self._batch])
        for (op, route, _, buffer, start), end in zip(self._batch, ends):
            self.recorder.add(op, start, max(start, end))
            if _is_recv(op):
                self.deliver(op, route, buffer)
        self._batch.clear()

    def end_step(self) -> None:
        self.settle()


def make_links(comm_mode: str, *args, window: int | None = None, **kwargs) -> Links:
    if comm_mode == "async":
        return AsyncLinks(*args, window=window, **kwargs)
    return BlockingLinks(*args, **kwargs)
