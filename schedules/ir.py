"""The schedule IR: one tiny immutable op record and the per-rank lists that hold them.

An op prints in torch.distributed.pipelining's action syntax (``2F0``, ``1SEND_B3``,
``0REDUCE_GRAD``, ``(0F7;7B3)OVERLAP_F_B``) and :meth:`Op.parse` reads that text back,
so schedules written by torch load here and ours load there.

This module is the package's leaf: it imports nothing else of ``schedules``; lowering,
validation, CSV and grids are free functions over what it defines.
"""

from __future__ import annotations

import enum
import gc
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Iterator, NamedTuple, Sequence

__all__ = ["OpKind", "Op", "Schedule", "ScheduleError", "COMPUTE_KINDS", "COMM_KINDS", "Transfer", "is_send",
           "peer_stage", "batch_ends", "gc_paused", "COMM_MODES"]

# The two communication semantics every consumer implements (see schedules.lowering).
COMM_MODES = ("async", "blocking")


class ScheduleError(ValueError):
    """A schedule breaks a rule of the IR; the message names the rank, the op and the rule."""


class OpKind(enum.Enum):
    F = "F"  # forward of one stage on one microbatch
    B = "B"  # full backward (input and weight gradients together)
    I = "I"  # backward for inputs only: produces the gradient sent upstream  # noqa: E741
    W = "W"  # backward for weights only: needs I's intermediate results
    SEND_F = "SEND_F"  # send stage's forward output to stage + 1
    RECV_F = "RECV_F"  # receive stage's forward input from stage - 1
    SEND_B = "SEND_B"  # send stage's input gradient to stage - 1
    RECV_B = "RECV_B"  # receive stage's output gradient from stage + 1
    REDUCE_GRAD = "REDUCE_GRAD"  # all-reduce one stage's gradients over the data-parallel group
    OVERLAP_F_B = "OVERLAP_F_B"  # one F and one full B of the same rank, run as one overlapped op

    def __str__(self) -> str:
        return self.value

    # Members are singletons compared by identity; hashing them by id keeps the
    # validator's and simulators' hot loops off Enum's Python-level __hash__.
    __hash__ = object.__hash__

    @property
    def is_compute(self) -> bool:
        return self in COMPUTE_KINDS

    @property
    def is_comm(self) -> bool:
        return self in COMM_KINDS


COMPUTE_KINDS = frozenset({OpKind.F, OpKind.B, OpKind.I, OpKind.W, OpKind.OVERLAP_F_B})
COMM_KINDS = frozenset({OpKind.SEND_F, OpKind.RECV_F, OpKind.SEND_B, OpKind.RECV_B})

# torch's action names that this IR deliberately does not model.
_FOREIGN = ("UNSHARD", "RESHARD")
_SIMPLE = [k.value for k in OpKind if k is not OpKind.OVERLAP_F_B] + list(_FOREIGN)
# Longest names first so that "SEND_F" is not read as "S" + ...
# ASCII digits only: \d would also take other scripts' digits, which int() reads but
# str() never writes back. \Z, not $, which also matches before a final newline.
_ACTION = re.compile(r"([0-9]+)(" + "|".join(sorted(_SIMPLE, key=len, reverse=True)) + r")([0-9]*)\Z")
_PAIR = re.compile(r"\(([^;()]*);([^;()]*)\)OVERLAP_F_B\Z")
_DIGITS = 18  # stage and microbatch numbers: up to 10**18, far past any schedule a machine holds


@dataclass(frozen=True, slots=True, init=False)
class Op:
    """One action of one rank: ``kind`` applied to model ``stage`` on microbatch ``mb``.

    ``mb`` is ``None`` only for REDUCE_GRAD, which covers every microbatch of the stage.
    An OVERLAP_F_B (DualPipe's overlapped pair) holds its forward and its full backward in
    ``pair``; its ``stage`` and ``mb`` are the forward's. Make one with :meth:`overlap`.
    """

    kind: OpKind
    stage: int
    mb: int | None = None
    pair: tuple[Op, Op] | None = None

    def __init__(self, kind: OpKind, stage: int, mb: int | None = None, pair: tuple[Op, Op] | None = None):
        # dataclass's own __init__ of a frozen class sets each field by name through
        # object.__setattr__; setting the slots through their descriptors does the same a
        # third cheaper, and a build and its lowering make an Op per op, 400,000 at p=64, m=512.
        _set_kind(self, kind)
        _set_stage(self, stage)
        _set_mb(self, mb)
        _set_pair(self, pair)

    def __str__(self) -> str:
        if self.pair is not None:
            return f"({self.pair[0]};{self.pair[1]})OVERLAP_F_B"
        return f"{self.stage}{self.kind.value}{'' if self.mb is None else self.mb}"

    @classmethod
    def overlap(cls, forward: Op, backward: Op) -> Op:
        """The overlapped pair of ``forward`` (an F) and ``backward`` (a full B), run at once."""
        if forward.kind is not OpKind.F or backward.kind is not OpKind.B:
            raise ScheduleError(f"OVERLAP_F_B pairs an F with a B, got {forward} and {backward}")
        return cls(OpKind.OVERLAP_F_B, forward.stage, forward.mb, (forward, backward))

    @property
    def parts(self) -> tuple[Op, ...]:
        """The ops this one stands for: the pair of an OVERLAP_F_B, else the op itself."""
        return (self,) if self.pair is None else self.pair

    @classmethod
    def parse(cls, text: str) -> Op:
        """Read one action in torch's syntax, e.g. ``2F0``, ``3RECV_B1``, ``(0F7;7B3)OVERLAP_F_B``.
        Anything else raises :class:`ScheduleError` naming the text."""
        pair = _PAIR.match(text.strip())
        if pair is not None:
            return cls.overlap(cls.parse(pair.group(1)), cls.parse(pair.group(2)))
        match = _ACTION.match(text.strip())
        if match is None:
            raise ScheduleError(f"cannot parse action {_clip(text.strip())}: expected e.g. '2F0', '1SEND_B3'")
        stage, name, mb = match.groups()
        if len(stage) > _DIGITS or len(mb) > _DIGITS:
            raise ScheduleError(f"action {_clip(text.strip())}: stage and microbatch numbers have at most "
                                f"{_DIGITS} digits")
        if name in _FOREIGN:
            raise ScheduleError(f"action {text.strip()!r}: {name} is not part of this IR (pipeline ops only)")
        kind = OpKind(name)
        if kind is OpKind.REDUCE_GRAD:
            if mb:
                raise ScheduleError(f"action {text.strip()!r}: REDUCE_GRAD takes no microbatch")
            return cls(kind, int(stage))
        if not mb:
            raise ScheduleError(f"action {text.strip()!r}: {name} needs a microbatch index")
        return cls(kind, int(stage), int(mb))


def _clip(text: str, most: int = 40) -> str:
    """``repr`` of a user's text, cut short: an error line stays one readable line."""
    return repr(text) if len(text) <= most else repr(text[:most]) + f"... ({len(text)} characters)"


# The slot descriptors Op.__init__ sets (they exist once the slots class is made).
_set_kind, _set_stage, _set_mb, _set_pair = (getattr(Op, name).__set__ for name in ("kind", "stage", "mb", "pair"))


@contextmanager
def gc_paused() -> Iterator[None]:
    """For code that allocates hundreds of thousands of Ops (building, lowering): they hold
    no cycles, yet CPython's cyclic collector would walk them again and again and find
    nothing, about a fifth of the time at p=64, m=512. Reference counting still frees them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# Per SEND/RECV kind: the direction of its transfer, and the stage the data leaves less
# the op's own stage (a RECV_F on stage s receives what left s - 1). Everything else about
# a transfer's identity is worked out from this table.
_SIDES = {OpKind.SEND_F: ("F", 0), OpKind.RECV_F: ("F", -1), OpKind.SEND_B: ("B", 0), OpKind.RECV_B: ("B", 1)}


class Transfer(NamedTuple):
    """One point-to-point transfer, named alike by its SEND, its RECV and the two compute ops
    it joins: direction ``"F"`` carries ``stage``'s output to stage + 1, ``"B"`` carries
    ``stage``'s input gradient to stage - 1, of microbatch ``mb``.

    A NamedTuple, so a tuple: the executor's mailboxes and routes are keyed by it, and a
    tuple hashes and compares in C where a frozen dataclass calls Python for both."""

    direction: str
    stage: int
    """The stage the data leaves."""
    mb: int

    @classmethod
    def of(cls, op: Op) -> Transfer:
        """The transfer a SEND or RECV takes part in; ValueError for any other op."""
        side = _SIDES.get(op.kind)
        if side is None:
            raise ValueError(f"{op} is not a point-to-point op")
        return cls(side[0], op.stage + side[1], op.mb)

    @classmethod
    def into(cls, op: Op, stages: int) -> Transfer | None:
        """The transfer whose data the F, B or I ``op`` takes: the previous stage's output
        (an F), the next stage's input gradient (a B or I); None on the first stage's F and
        the last stage's backward, whose input is the batch's or the loss's."""
        if op.kind is OpKind.F:
            return cls("F", op.stage - 1, op.mb) if op.stage > 0 else None
        return cls("B", op.stage + 1, op.mb) if op.stage < stages - 1 else None

    @classmethod
    def out_of(cls, op: Op, stages: int) -> Transfer | None:
        """The transfer that carries what the F, B or I ``op`` makes on to the neighbouring
        stage; None on the last stage's F and the first stage's backward."""
        if op.kind is OpKind.F:
            return cls("F", op.stage, op.mb) if op.stage < stages - 1 else None
        return cls("B", op.stage, op.mb) if op.stage > 0 else None

    @property
    def boundary(self) -> int:
        """The stage boundary it crosses, b for b -> b + 1 (what the data's shape is set by)."""
        return self.stage if self.direction == "F" else self.stage - 1

    def channel(self, stages: int) -> int:
        """Its boundary and direction as one int, direction * stages + stage (F 0, B 1)."""
        return (self.direction == "B") * stages + self.stage

    def number(self, stages: int, microbatches: int) -> int:
        """The transfer as one int in [0, 2 * stages * microbatches), the same on both sides."""
        return self.channel(stages) * microbatches + self.mb

    @staticmethod
    def numbering(stages: int, microbatches: int) -> tuple[int, dict[OpKind, int]]:
        """:meth:`number` for loops over every op, as integer arithmetic: ``(row, offset)``
        such that a SEND's or RECV's number is ``op.stage * row + op.mb + offset[op.kind]``."""
        row = max(microbatches, 1)
        return row, {kind: ((direction == "B") * stages + shift) * row for kind, (direction, shift) in _SIDES.items()}

    @staticmethod
    def sides() -> dict[str, tuple[str, int]]:
        """Per SEND/RECV kind name: (direction, the stage the data leaves less the op's
        stage); for tables (the trace schema pairs sends with receives by it)."""
        return {kind.value: side for kind, side in _SIDES.items()}


def batch_ends(rank_ops: Sequence[Op]) -> list[int]:
    """The one batching rule, for the dry run, the lowering, the simulator and the executor:
    under ``blocking`` a run of consecutive SEND/RECV ops is one batch, posted at once, and
    the rank waits until all of it completed; any other op is a batch of its own.
    ``ends[i]`` is the index just past the batch holding op ``i``."""
    ends = [0] * len(rank_ops)
    stop = len(rank_ops)
    for i in range(len(rank_ops) - 1, -1, -1):
        if rank_ops[i].kind in COMM_KINDS:
            ends[i] = stop
        else:
            ends[i] = i + 1
            stop = i
    return ends


def is_send(kind: OpKind) -> bool:
    return kind is OpKind.SEND_F or kind is OpKind.SEND_B


def peer_stage(op: Op) -> int:
    """The stage at the other end of a SEND or RECV."""
    return op.stage + (1 if op.kind is OpKind.SEND_F or op.kind is OpKind.RECV_B else -1)


_KIND = attrgetter("kind")


@dataclass(frozen=True)
class Schedule:
    """Per-rank ordered op lists: what each rank does, in order, never when.

    Bubbles are not written down here; they come out of a simulator or a clock.
    """

    name: str
    num_ranks: int
    num_microbatches: int
    num_stages: int
    stage_to_rank: tuple[int, ...]  # stage_to_rank[s] is the rank holding model stage s
    ops: tuple[tuple[Op, ...], ...]  # ops[rank] in execution order
    _stages_of: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage_to_rank", tuple(self.stage_to_rank))
        object.__setattr__(self, "ops", tuple(tuple(rank_ops) for rank_ops in self.ops))
        if len(self.stage_to_rank) != self.num_stages:
            raise ScheduleError(
                f"stage_to_rank has {len(self.stage_to_rank)} entries for {self.num_stages} stages"
            )
        if len(self.ops) != self.num_ranks:
            raise ScheduleError(f"ops has {len(self.ops)} rank lists for {self.num_ranks} ranks")
        for stage, rank in enumerate(self.stage_to_rank):
            if not 0 <= rank < self.num_ranks:
                raise ScheduleError(f"stage {stage} is placed on rank {rank}, outside 0..{self.num_ranks - 1}")
        stages_of: list[list[int]] = [[] for _ in range(self.num_ranks)]
        for stage, rank in enumerate(self.stage_to_rank):
            stages_of[rank].append(stage)
        object.__setattr__(self, "_stages_of", tuple(tuple(s) for s in stages_of))

    def stages_of(self, rank: int) -> tuple[int, ...]:
        """The model stages held by ``rank``, ascending."""
        return self._stages_of[rank]

    @property
    def chunks(self) -> int:
        """Model stages per rank (v); 1 for non-interleaved schedules."""
        return self.num_stages // self.num_ranks

    @property
    def has_comms(self) -> bool:
        """Whether the lists already hold SEND/RECV (a compute_comms CSV, or lowered lists)."""
        return any(not COMM_KINDS.isdisjoint(map(_KIND, rank_ops)) for rank_ops in self.ops)  # C loops

    @property
    def has_reduce_grad(self) -> bool:
        return any(OpKind.REDUCE_GRAD in map(_KIND, rank_ops) for rank_ops in self.ops)

    def __iter__(self) -> Iterator[tuple[int, Op]]:
        """(rank, op) for every op, rank by rank."""
        for rank, rank_ops in enumerate(self.ops):
            for op in rank_ops:
                yield rank, op

    def num_ops(self) -> int:
        return sum(len(rank_ops) for rank_ops in self.ops)

    def compute_only(self) -> Schedule:
        """This schedule without SEND/RECV/REDUCE_GRAD ops."""
        return self.replace_ops(tuple(op for op in rank_ops if op.kind.is_compute) for rank_ops in self.ops)

    def replace_ops(self, ops) -> Schedule:
        return Schedule(
            self.name, self.num_ranks, self.num_microbatches, self.num_stages, self.stage_to_rank, tuple(ops)
        )
