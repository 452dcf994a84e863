"""The executor proper: one rank's lowered op list, run by a dispatch table and one loop.

Like DeepSpeed's pipe engine, every op kind has one handler and the loop raises on a
kind it does not know; unlike it, nothing here is specific to a schedule. Data moves
between handlers through a mailbox keyed by :class:`schedules.Transfer`: F of stage s
leaves its output under ``Transfer("F", s, mb)``, which the F of stage s + 1 (same rank)
or a SEND_F takes; a RECV_F puts what arrived under the same key. Gradients travel the
same way under ``Transfer("B", s, mb)``, the input gradient of stage s. Every op's keys
(and a SEND's or RECV's route) are worked out once, when the interpreter is built.

The loop knows nothing of communication semantics: under blocking the communication
layer itself posts a run of comm ops as one batch and waits for it at the run's last op.
Each op's handler is looked up once, when the interpreter is built. After every op the
loop pokes the progress policy (outstanding transfers move on) and, in the one step the
executor meters (:meth:`Runtime.metering`), samples the memory meter; ``position`` tells
the watchdog which op the rank is in.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from schedules import Op, OpKind, Transfer

from ..compute.memory import MemoryMeter
from ..record.timing import Recorder
from ..transport.p2p import Links, Route
from ..transport.parallel import GradReducer
from ..transport.progress import Progress

__all__ = ["Interpreter", "Microbatches"]

Hands = tuple[Transfer | None, Transfer | None]
"""What a compute op takes its input from and hands its output to (None: the batch, the loss)."""


def _unmetered(i: int) -> None:
    """The memory sample of a step that is not metered."""


@dataclass(frozen=True)
class Microbatches:
    """This replica's inputs (for the first stage) and targets (for the last), per microbatch."""

    inputs: tuple[torch.Tensor, ...]
    targets: tuple[torch.Tensor, ...]


class Interpreter:
    def __init__(self, ops: tuple[Op, ...], stages: dict, last_stage: int, data: Microbatches,
                 links: Links, reducer: GradReducer | None, recorder: Recorder, progress: Progress,
                 memory: MemoryMeter):
        self.ops, self.stages, self.last, self.data = ops, stages, last_stage, data
        self.links, self.reducer, self.recorder = links, reducer, recorder
        self.progress, self.memory = progress, memory
        self.position = -1  # index of the op running now (read by the watchdog thread)
        self.steps_run = 0
        self.why = ""  # what the watchdog should add to where a rank is stuck (executor.engine.faults)
        self.mailbox: dict[Transfer, torch.Tensor] = links.mailbox
        handlers: dict[OpKind, Callable[[Op], None]] = {
            OpKind.F: self._forward,
            OpKind.B: self._backward,
            OpKind.I: self._backward_input,
            OpKind.W: self._backward_weight,
            OpKind.SEND_F: self._send,
            OpKind.SEND_B: self._send,
            OpKind.RECV_F: self._recv,
            OpKind.RECV_B: self._recv,
            OpKind.REDUCE_GRAD: self._reduce,
            OpKind.OVERLAP_F_B: self._overlapped,
        }
        unknown = next((op for op in ops if op.kind not in handlers), None)
        if unknown is not None:
            raise RuntimeError(f"executor has no handler for op {unknown}")
        # (op, handler, timed here): an overlapped pair times its own two parts
        self.routes = links.routes(ops)
        self.program = [(op, self._bound(handlers[op.kind], i, op), op.kind.is_compute and op.pair is None)
                        for i, op in enumerate(ops)]

    def _bound(self, handler: Callable, i: int, op: Op) -> Callable[[Op], None]:
        """``handler`` with what it needs besides the op: a SEND's or RECV's route (peer, tag,
        shapes), a compute op's mailbox keys."""
        if i in self.routes:
            return partial(handler, self.routes[i])
        if op.pair is not None:
            return partial(handler, *map(self._hands, op.pair))
        if op.kind is OpKind.F or op.kind is OpKind.B or op.kind is OpKind.I:
            return partial(handler, self._hands(op))
        return handler

    def _hands(self, op: Op) -> Hands:
        return Transfer.into(op, self.last + 1), Transfer.out_of(op, self.last + 1)

    def run_step(self) -> None:
        """Run every op of this rank once; afterwards all transfers and reductions are done."""
        rec, poke = self.recorder, self.progress.poke
        sample = self.memory.sample if self.memory.on else _unmetered
        self.memory.begin_step()
        self.links.begin_step(self.ops, self.routes)
        for i, (op, handler, timed) in enumerate(self.program):
            self.position = i
            if timed:
                start = rec.stamp()
                handler(op)
                rec.add_compute(op, start, rec.stamp())
            else:
                handler(op)
            poke()
            sample(i)
        self.position = len(self.program)
        self.steps_run += 1
        self.links.end_step()
        if self.reducer is not None:
            self.reducer.finish()
        if self.mailbox:
            raise RuntimeError(f"step ended with data nobody consumed: {sorted(self.mailbox)}")

    def _forward(self, hands: Hands, op: Op) -> None:
        takes, gives = hands
        mb = op.mb
        x = self.data.inputs[mb] if takes is None else self.mailbox.pop(takes)
        out = self.stages[op.stage].forward(mb, x, self.data.targets[mb] if gives is None else None)
        if gives is not None:
            self.mailbox[gives] = out

    def _pass_back(self, hands: Hands, backward: Callable, mb: int) -> None:
        takes, gives = hands
        grad = backward(mb, None if takes is None else self.mailbox.pop(takes))
        if gives is not None:
            self.mailbox[gives] = grad

    def _backward(self, hands: Hands, op: Op) -> None:
        self._pass_back(hands, self.stages[op.stage].backward, op.mb)

    def _backward_input(self, hands: Hands, op: Op) -> None:
        self._pass_back(hands, self.stages[op.stage].backward_input, op.mb)

    def _backward_weight(self, op: Op) -> None:
        self.stages[op.stage].backward_weight(op.mb)

    def _overlapped(self, forward_hands: Hands, backward_hands: Hands, op: Op) -> None:
        """DualPipe's overlapped pair: its forward, then its full backward (one rank, one
        stream: on a CPU nothing runs beside it). Recorded as the pair's two rows."""
        forward, backward = op.pair
        rec = self.recorder
        start = rec.stamp()
        self._forward(forward_hands, forward)
        middle = rec.stamp()
        if self.memory.on:
            self.memory.sample(-2)  # between the two ops of the pair, as between any two
        self._backward(backward_hands, backward)
        rec.add_compute(forward, start, middle)
        rec.add_compute(backward, middle, rec.stamp())

    def _send(self, route: Route, op: Op) -> None:
        self.links.send(op, route, self.mailbox.pop(route.transfer))

    def _recv(self, route: Route, op: Op) -> None:
        self.links.recv(op, route)

    def _reduce(self, op: Op) -> None:
        if self.reducer is None:  # a schedule file may carry REDUCE_GRAD without --dp
            return
        self.reducer.reduce(op)
