"""``Lowered``: the checked result of :func:`schedules.validate`, the only thing to run.

A :class:`~schedules.ir.Schedule` states an order that may still break a rule or deadlock.
A ``Lowered`` is a value of its own type that only ``validate`` makes: the schedule as
given, the communication semantics and whether gradients are all-reduced, and the final
per-rank lists (SEND/RECV and REDUCE_GRAD included) that passed the dry run (or the run
that stood in for it: see :func:`schedules.validate`). Consumers
(simulator, executor) take a ``Lowered``, so none of them can hold an unchecked list by
mistake; nothing is cached or flagged on the ``Schedule`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from .ir import Op, Schedule

__all__ = ["Lowered"]

# Only schedules.validate holds this; a Lowered made anywhere else is refused.
_CHECKED = object()


class _OfProgram:
    """An attribute (or method) of a Lowered that is its ``program``'s, read from there."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attribute = name

    def __get__(self, lowered: Lowered | None, owner: type | None = None):
        return self if lowered is None else getattr(lowered.program, self.attribute)


@dataclass(frozen=True)
class Lowered:
    """A validated schedule and the per-rank lists that run it under ``comm_mode``."""

    schedule: Schedule
    """The schedule as given to validate (compute-only when built, as read when loaded)."""
    comm_mode: str
    """"async" or "blocking": the semantics the lists were lowered for and dry-run under
    (every consumer runs them under it: none takes another beside a Lowered)."""
    reduce_grad: bool
    """Whether the lists hold a REDUCE_GRAD per stage (data-parallel gradient all-reduce)."""
    program: Schedule
    """The final lists: same name and placement as ``schedule``, SEND/RECV (and REDUCE_GRAD)
    in place; exactly the lists the validator's dry run (or the run given it) completed."""
    proof: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.proof is not _CHECKED:
            raise TypeError("a Lowered is made only by schedules.validate(schedule, comm_mode, reduce_grad)")

    # What the final lists share with the schedule (name, placement, sizes): read off them.
    ops = _OfProgram()
    """``ops[rank]``: what the rank runs, in order."""
    name = _OfProgram()
    num_ranks = _OfProgram()
    num_microbatches = _OfProgram()
    num_stages = _OfProgram()
    stage_to_rank = _OfProgram()
    chunks = _OfProgram()
    stages_of = _OfProgram()
    """``stages_of(rank)``: the model stages the rank holds."""
    num_ops = _OfProgram()
    compute_only = _OfProgram()
    """``compute_only()``: the final lists without SEND/RECV/REDUCE_GRAD."""

    def __iter__(self) -> Iterator[tuple[int, Op]]:
        """(rank, op) for every op of the final lists, rank by rank."""
        return iter(self.program)
