"""The one validator every consumer calls before it runs a schedule.

Checks, in order, each failing with a :class:`ScheduleError` that names the rank, the
op and the rule, above the step x rank grid with the op marked:
  1. every op names a stage and microbatch that exist, on the rank holding that stage;
  2. each (stage, mb) has exactly one F and exactly one backward: a B, or an I and a W;
     a REDUCE_GRAD, if any, comes after every backward of its stage;
  3. on each rank, inputs come before use: a forward after its input arrived (a RECV_F
     or the local forward of the previous stage), a backward after its forward and its
     output gradient, W after I, a SEND after the op producing its data;
  4. SENDs and RECVs pair up one to one, and none joins two stages on the same rank;
  5. a dry run under the chosen semantics of the final lists, REDUCE_GRAD included,
     finishes (no deadlock); or, where the caller runs those lists anyway (the
     simulator), that run does: whether lowered lists finish does not depend on op costs
     (see :mod:`schedules.lowering`), so a timed run proves what the untimed one would.
An OVERLAP_F_B counts as both its ops at its position. A compute-only schedule is
lowered first, so the pairing and deadlock checks apply to exactly what the simulator
and executor will run; what passed is handed out as a :class:`~schedules.lowered.Lowered`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, TypeVar

from .bounds import number
from .dryrun import Deadlock, dry_run
from .grid import format_grid
from .ir import COMM_KINDS, COMM_MODES, OpKind, Schedule, ScheduleError, gc_paused
from .ir import Transfer, is_send, peer_stage
from .lowered import _CHECKED, Lowered
from .lowering import lower

__all__ = ["validate", "validate_with", "Ran"]


class Ran(Protocol):
    """What an interpreter returns for lowered lists it ran (:func:`validate_with`)."""

    @property
    def stuck(self) -> dict[int, int]:
        """Rank -> index of the op where it stays stuck; {} when every rank finished."""


R = TypeVar("R", bound=Ran)

F, B, I, W = OpKind.F, OpKind.B, OpKind.I, OpKind.W
_WINDOW = 6


def _fail(schedule: Schedule, rank: int, step: int, rule: str) -> ScheduleError:
    op = schedule.ops[rank][step]
    grid = format_grid(schedule, mark=(rank, step), window=_WINDOW)
    return ScheduleError(f"{schedule.name}: rank {rank}, step {step}, op {op}: {rule}\n{grid}")


class _Keys:
    """Ops of one schedule as ints, (kind * stages + stage) * (m + 1) + mb, so that the
    checks below hash ints rather than (kind, stage, mb) tuples; REDUCE_GRAD's mb is m."""

    def __init__(self, schedule: Schedule):
        self.m = schedule.num_microbatches
        self.row = self.m + 1  # one stage's block of microbatches
        block = schedule.num_stages * self.row
        self.offset = {kind: i * block for i, kind in enumerate(OpKind)}

    def __call__(self, kind: OpKind, stage: int, mb: int | None) -> int:
        return self.offset[kind] + stage * self.row + (self.m if mb is None else mb)


def _check_ops(schedule: Schedule, has_comms: bool) -> None:
    """Rules 1-3 in one pass. Every op an op needs lives on the same rank (a stage has one
    rank, remote inputs arrive by a RECV on it), so "seen so far" means "done earlier here"."""
    m, stages, where = schedule.num_microbatches, schedule.num_stages, schedule.stage_to_rank
    last = stages - 1
    key_of = _Keys(schedule)
    offset, row = key_of.offset, key_of.row
    seen: dict[int, int] = {}  # op key -> step; the rank is where[stage] once rule 1 held
    # What an op needs depends only on its kind and stage (its rank is the stage's): per
    # kind and stage, (keys less the op's own s * row + mb, of which any one will do, text).
    needs_of = {kind: [[(tuple(offset[k] + ds * row for k, ds in options), what)
                        for options, what in _needs(kind, s, where[s], where, last, has_comms)]
                       for s in range(stages)] for kind in OpKind}
    for rank, rank_ops in enumerate(schedule.ops):
        for step, whole in enumerate(rank_ops):
            # An OVERLAP_F_B is both its ops at this step (Op.parts, without a call per op).
            for op in (whole,) if whole.pair is None else whole.pair:
                kind, s, mb = op.kind, op.stage, op.mb
                if not 0 <= s < stages:
                    raise _fail(schedule, rank, step, f"stage {s} does not exist (0..{last})")
                if where[s] != rank:
                    raise _fail(schedule, rank, step, f"stage {s} is held by rank {where[s]}, not {rank}")
                if kind is OpKind.REDUCE_GRAD:
                    mb = m
                elif mb is None or not 0 <= mb < m:
                    raise _fail(schedule, rank, step, f"microbatch {mb} does not exist (0..{m - 1})")
                base = s * row + mb
                key = offset[kind] + base
                if key in seen:
                    raise _fail(schedule, rank, step, f"{op} appears twice (also step {seen[key]}); each op runs once")
                for options, what in needs_of[kind][s]:
                    for need in options:
                        if base + need in seen:
                            break
                    else:
                        raise _fail(schedule, rank, step, "runs before " + what.format(s=s, mb=mb, prev=s - 1, next=s + 1))
                seen[key] = step
    _check_complete(schedule, seen, key_of)


def _needs(kind: OpKind, s: int, rank: int, where: tuple[int, ...], last: int,
           has_comms: bool) -> list[tuple[tuple[tuple[OpKind, int], ...], str]]:
    """What must already be done on this rank before ``kind`` on stage ``s`` runs: (any of
    these (kind, stage offset), text), for the same microbatch. The text is formatted
    only on failure. Remote inputs count only where the lists ``has_comms``: else no RECV is there."""
    if kind is F and s > 0:
        if where[s - 1] == rank:
            return [(((F, -1),), "the forward of the previous stage {prev}F{mb}")]
        if has_comms:
            return [(((OpKind.RECV_F, 0),), "the RECV_F of its input {s}RECV_F{mb}")]
    elif kind is B or kind is I:
        needs = [(((F, 0),), "its forward {s}F{mb}")]
        if s < last and where[s + 1] == rank:
            needs.append((((B, 1), (I, 1)), "the backward of the next stage {next}I{mb}/B{mb}"))
        elif s < last and has_comms:
            needs.append((((OpKind.RECV_B, 0),), "the RECV_B of its gradient {s}RECV_B{mb}"))
        return needs
    elif kind is W:
        return [(((I, 0),), "its I {s}I{mb}")]
    elif kind is OpKind.SEND_F:
        return [(((F, 0),), "its forward {s}F{mb} produced the data")]
    elif kind is OpKind.SEND_B:
        return [(((B, 0), (I, 0)), "the backward {s}I{mb}/B{mb} produced the gradient")]
    return []


def _check_complete(schedule: Schedule, seen: dict[int, int], key_of: _Keys) -> None:
    """Rule 2 over the whole schedule: every (stage, mb) has one F and one backward (B, or
    I and W, never both), and a REDUCE_GRAD follows every backward of its stage."""
    where, row = schedule.stage_to_rank, key_of.row
    of_f, of_b, of_i, of_w = (key_of.offset[kind] for kind in (F, B, I, W))
    if schedule.num_stages * schedule.num_microbatches > len(seen):
        raise _first_missing_forward(schedule, seen, key_of)  # without a loop over every (stage, mb)
    for s in range(schedule.num_stages):
        at = where[s]
        reduce_step = seen.get(key_of(OpKind.REDUCE_GRAD, s, None))
        for mb in range(schedule.num_microbatches):
            base = s * row + mb
            if of_f + base not in seen:
                raise _missing(schedule, at, f"forward {s}F{mb} is missing")
            full, split, weight = seen.get(of_b + base), seen.get(of_i + base), seen.get(of_w + base)
            if full is not None and split is not None:
                raise _fail(schedule, at, full, "stage has both a full backward B and a split I for this microbatch")
            if split is not None and weight is None:
                raise _fail(schedule, at, split, f"backward-input I has no matching W ({s}W{mb})")
            if full is None and split is None:
                raise _missing(schedule, at, f"backward {s}B{mb} (or {s}I{mb} + {s}W{mb}) is missing")
            done = full if full is not None else weight
            if reduce_step is not None and reduce_step < done:
                raise _fail(schedule, at, reduce_step, f"REDUCE_GRAD runs before the backward of microbatch {mb} finished")


def _first_missing_forward(schedule: Schedule, seen: dict[int, int], key_of: _Keys) -> ScheduleError:
    """More (stage, mb) pairs than ops (a file naming microbatch 10**12, say): some forward
    is missing. The first, found in O(ops) from the forwards there are."""
    m, row, base = schedule.num_microbatches, key_of.row, key_of.offset[F]
    done: list[set[int]] = [set() for _ in range(schedule.num_stages)]
    for key in seen:
        if base <= key < base + schedule.num_stages * row:
            done[(key - base) // row].add((key - base) % row)
    s = next(s for s, mbs in enumerate(done) if len(mbs) < m)
    mb = next(mb for mb in range(len(done[s]) + 1) if mb not in done[s])
    return _missing(schedule, schedule.stage_to_rank[s], f"forward {s}F{mb} is missing (microbatches 0..{number(m - 1)} "
                    f"are named, {number(len(seen))} ops in all)")


def _missing(schedule: Schedule, rank: int, rule: str) -> ScheduleError:
    return ScheduleError(f"{schedule.name}: rank {rank}: {rule}\n{format_grid(schedule, mark=(rank, 0), window=_WINDOW)}")


def _check_pairs(schedule: Schedule) -> None:
    """Rule 4. Each op appears once (rule 2 checked that), so a transfer has at most one
    SEND and one RECV; what is left to find is a side without its partner."""
    where, last = schedule.stage_to_rank, schedule.num_stages - 1
    sends: dict[Transfer, tuple[int, int]] = {}
    recvs: dict[Transfer, tuple[int, int]] = {}
    for rank, rank_ops in enumerate(schedule.ops):
        for step, op in enumerate(rank_ops):
            if op.kind not in COMM_KINDS:
                continue
            peer = peer_stage(op)
            if not 0 <= peer <= last:
                raise _fail(schedule, rank, step, f"no stage {peer} to exchange with")
            if where[peer] == rank:
                raise _fail(schedule, rank, step, f"stages {op.stage} and {peer} share rank {rank}: hand over locally, no SEND/RECV")
            (sends if is_send(op.kind) else recvs)[Transfer.of(op)] = (rank, step)
    for mine, theirs, missing in ((sends, recvs, "RECV"), (recvs, sends, "SEND")):
        for key, (rank, step) in mine.items():
            if key not in theirs:
                raise _fail(schedule, rank, step, f"has no matching {missing}")


@dataclass(frozen=True)
class _DryRan:
    stuck: dict[int, int]


def _dry_run(program: Schedule, comm_mode: str) -> _DryRan:
    try:
        dry_run(program, comm_mode)
    except Deadlock as stuck:
        return _DryRan(stuck.stuck)
    return _DryRan({})


def validate(schedule: Schedule, comm_mode: str = "async", reduce_grad: bool = False) -> Lowered:
    """Raise ScheduleError if ``schedule`` breaks a rule; return it lowered for ``comm_mode`` (with
    a REDUCE_GRAD per stage when ``reduce_grad``) as a :class:`Lowered`, which is what to run.
    The lists in the result are exactly the ones the dry run completed."""
    return validate_with(_dry_run, schedule, comm_mode, reduce_grad)[0]


def validate_with(run: Callable[[Schedule, str], R], schedule: Schedule, comm_mode: str = "async",
                  reduce_grad: bool = False) -> tuple[Lowered, R]:
    """:func:`validate` with ``run`` in place of the dry run: ``run(program, comm_mode)`` runs
    the final lists (the simulator's model does) and returns what it ran, whose ``stuck``
    is the verdict. Returns the :class:`Lowered` (exactly the lists that run completed) and
    what ``run`` returned."""
    if comm_mode not in COMM_MODES:
        raise ScheduleError(f"comm_mode must be one of {', '.join(COMM_MODES)}, got {comm_mode!r}")
    with gc_paused():  # the checks' ints and the lowered Ops hold no cycles (see gc_paused)
        given_comms = schedule.has_comms
        _check_ops(schedule, has_comms=given_comms)
        if given_comms:
            _check_pairs(schedule)
        # Our own lowering pairs every transfer and keeps inputs ahead of their use by
        # construction; a run of the final lists is what shows they finish.
        program = lower(schedule, comm_mode=comm_mode, reduce_grad=reduce_grad)
        ran = run(program, comm_mode)
    if ran.stuck:
        rank, step = min(ran.stuck.items())
        waits = ", ".join(f"rank {r} at {program.ops[r][i]}" for r, i in sorted(ran.stuck.items())[:8])
        raise _fail(program, rank, step, f"deadlock under {comm_mode} communication: {waits}")
    return Lowered(schedule, comm_mode, program.has_reduce_grad, program, proof=_CHECKED), ran
