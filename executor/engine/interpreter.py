"""The executor proper: one rank's lowered op list, run by a dispatch table and one loop.

Like DeepSpeed's pipe engine, every op kind has one handler and the loop raises on a
kind it does not know; unlike it, nothing here is specific to a schedule. Data moves
between handlers through a mailbox keyed by ``schedules.ir.transfer_key``: F of stage s
leaves its output under ('F', s, mb), which the F of stage s + 1 (same rank) or a
SEND_F takes; a RECV_F puts what arrived under the same key. Gradients travel the same
way under ('B', s, mb), the input gradient of stage s.

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
from schedules import Op, OpKind

from ..compute.memory import MemoryMeter
from ..record.timing import Recorder
from ..transport.p2p import Links, Route
from ..transport.parallel import GradReducer
from ..transport.progress import Progress

__all__ = ["Interpreter", "Microbatches"]


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
        self.mailbox: dict[tuple[str, int, int], torch.Tensor] = links.mailbox
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
        # (op, handler, timed here): an overlapped pair times its own two parts; a SEND's or
        # RECV's handler comes with its route (peer, tag, shapes), worked out once
        self.routes = links.routes(ops)
        self.program = [(op, partial(handlers[op.kind], self.routes[i]) if i in self.routes else handlers[op.kind],
                         op.kind.is_compute and op.pair is None) for i, op in enumerate(ops)]

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

    def _forward(self, op: Op) -> None:
        s, mb = op.stage, op.mb
        x = self.data.inputs[mb] if s == 0 else self.mailbox.pop(("F", s - 1, mb))
        target = self.data.targets[mb] if s == self.last else None
        out = self.stages[s].forward(mb, x, target)
        if s != self.last:
            self.mailbox[("F", s, mb)] = out

    def _output_grad(self, op: Op) -> torch.Tensor | None:
        return None if op.stage == self.last else self.mailbox.pop(("B", op.stage + 1, op.mb))

    def _hand_back(self, op: Op, grad: torch.Tensor | None) -> None:
        if op.stage > 0:
            self.mailbox[("B", op.stage, op.mb)] = grad

    def _backward(self, op: Op) -> None:
        self._hand_back(op, self.stages[op.stage].backward(op.mb, self._output_grad(op)))

    def _backward_input(self, op: Op) -> None:
        self._hand_back(op, self.stages[op.stage].backward_input(op.mb, self._output_grad(op)))

    def _backward_weight(self, op: Op) -> None:
        self.stages[op.stage].backward_weight(op.mb)

    def _overlapped(self, op: Op) -> None:
        """DualPipe's overlapped pair: its forward, then its full backward (one rank, one
        stream: on a CPU nothing runs beside it). Recorded as the pair's two rows."""
        forward, backward = op.pair
        rec = self.recorder
        start = rec.stamp()
        self._forward(forward)
        middle = rec.stamp()
        if self.memory.on:
            self.memory.sample(-2)  # between the two ops of the pair, as between any two
        self._backward(backward)
        rec.add_compute(forward, start, middle)
        rec.add_compute(backward, middle, rec.stamp())

    def _send(self, route: Route, op: Op) -> None:
        self.links.send(op, route, self.mailbox.pop(route.key))

    def _recv(self, route: Route, op: Op) -> None:
        self.links.recv(op, route)

    def _reduce(self, op: Op) -> None:
        if self.reducer is None:  # a schedule file may carry REDUCE_GRAD without --dp
            return
        self.reducer.reduce(op)
