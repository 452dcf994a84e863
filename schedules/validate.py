"""The one validator every consumer calls before it runs a schedule.

Checks, in order, each failing with a :class:`ScheduleError` that names the rank, the
op and the rule, above the step x rank grid with the op marked:
  1. every op names a stage and microbatch that exist, on the rank holding that stage;
  2. each (stage, mb) has exactly one F and exactly one backward: a B, or an I and a W;
  3. on each rank, inputs come before use: a forward after its input arrived (a RECV_F
     or the local forward of the previous stage), a backward after its forward and its
     output gradient, W after I, a SEND after the op producing its data;
  4. SENDs and RECVs pair up one to one, and none joins two stages on the same rank;
  5. a dry run under the chosen semantics finishes (no deadlock).
A compute-only schedule is lowered first, so the pairing and deadlock checks apply to
exactly what the simulator and executor will run.
"""

from __future__ import annotations

from .dryrun import COMMS, Deadlock, dry_run
from .ir import COMM_KINDS, Op, OpKind, Schedule, ScheduleError
from .ir import transfer_key

__all__ = ["validate"]

F, B, I, W = OpKind.F, OpKind.B, OpKind.I, OpKind.W
_WINDOW = 6


def _fail(schedule: Schedule, rank: int, step: int, rule: str) -> ScheduleError:
    op = schedule.ops[rank][step]
    grid = schedule.grid(mark=(rank, step), window=_WINDOW)
    return ScheduleError(f"{schedule.name}: rank {rank}, step {step}, op {op}: {rule}\n{grid}")


def _check_ops(schedule: Schedule, lowered: bool) -> None:
    """Rules 1-3 in one pass. Every op an op needs lives on the same rank (a stage has one
    rank, remote inputs arrive by a RECV on it), so "seen so far" means "done earlier here"."""
    m, stages, where = schedule.num_microbatches, schedule.num_stages, schedule.stage_to_rank
    last = stages - 1
    seen: dict[tuple, tuple[int, int]] = {}
    for rank, rank_ops in enumerate(schedule.ops):
        for step, op in enumerate(rank_ops):
            kind, s, mb = op.kind, op.stage, op.mb
            if not 0 <= s < stages:
                raise _fail(schedule, rank, step, f"stage {s} does not exist (0..{last})")
            if where[s] != rank:
                raise _fail(schedule, rank, step, f"stage {s} is held by rank {where[s]}, not {rank}")
            if kind is not OpKind.REDUCE_GRAD and (mb is None or not 0 <= mb < m):
                raise _fail(schedule, rank, step, f"microbatch {mb} does not exist (0..{m - 1})")
            key = (kind, s, mb)
            if key in seen:
                raise _fail(schedule, rank, step, f"{op} appears twice (also step {seen[key][1]}); each op runs once")
            for options, what in _needs(op, rank, where, last, lowered):
                if not any(n in seen for n in options):
                    raise _fail(schedule, rank, step, f"runs before {what}")
            seen[key] = (rank, step)
    for (kind, s, mb), at in seen.items():
        if kind is B and (I, s, mb) in seen:
            raise _fail(schedule, *at, "stage has both a full backward B and a split I for this microbatch")
        if kind is I and (W, s, mb) not in seen:
            raise _fail(schedule, *at, f"backward-input I has no matching W ({s}W{mb})")
    for s in range(stages):
        for mb in range(m):
            if (F, s, mb) not in seen:
                raise _missing(schedule, where[s], f"forward {s}F{mb} is missing")
            if (B, s, mb) not in seen and (I, s, mb) not in seen:
                raise _missing(schedule, where[s], f"backward {s}B{mb} (or {s}I{mb} + {s}W{mb}) is missing")


def _needs(op: Op, rank: int, where: tuple[int, ...], last: int, lowered: bool) -> list[tuple[tuple, str]]:
    """What must already be done on this rank before ``op`` runs: (any of these ops, name).
    Remote inputs count only once ``lowered``: before, their RECV is not there yet."""
    kind, s, mb = op.kind, op.stage, op.mb
    needs = []
    if kind is F and s > 0:
        if where[s - 1] == rank:
            needs.append((((F, s - 1, mb),), f"the forward of the previous stage {s - 1}F{mb}"))
        elif lowered:
            needs.append((((OpKind.RECV_F, s, mb),), f"the RECV_F of its input {s}RECV_F{mb}"))
    elif kind is B or kind is I:
        needs.append((((F, s, mb),), f"its forward {s}F{mb}"))
        if s < last and where[s + 1] == rank:
            needs.append((((B, s + 1, mb), (I, s + 1, mb)), f"the backward of the next stage {s + 1}I{mb}/B{mb}"))
        elif s < last and lowered:
            needs.append((((OpKind.RECV_B, s, mb),), f"the RECV_B of its gradient {s}RECV_B{mb}"))
    elif kind is W:
        needs.append((((I, s, mb),), f"its I {s}I{mb}"))
    elif kind is OpKind.SEND_F:
        needs.append((((F, s, mb),), f"its forward {s}F{mb} produced the data"))
    elif kind is OpKind.SEND_B:
        needs.append((((B, s, mb), (I, s, mb)), f"the backward {s}I{mb}/B{mb} produced the gradient"))
    return needs


def _missing(schedule: Schedule, rank: int, rule: str) -> ScheduleError:
    return ScheduleError(f"{schedule.name}: rank {rank}: {rule}\n{schedule.grid(mark=(rank, 0), window=_WINDOW)}")


def _check_pairs(schedule: Schedule) -> None:
    where, last = schedule.stage_to_rank, schedule.num_stages - 1
    sides: dict[tuple, list[tuple[int, int, bool]]] = {}
    for rank, rank_ops in enumerate(schedule.ops):
        for step, op in enumerate(rank_ops):
            if op.kind not in COMM_KINDS:
                continue
            peer = op.stage + (1 if op.kind in (OpKind.SEND_F, OpKind.RECV_B) else -1)
            if not 0 <= peer <= last:
                raise _fail(schedule, rank, step, f"no stage {peer} to exchange with")
            if where[peer] == rank:
                raise _fail(schedule, rank, step, f"stages {op.stage} and {peer} share rank {rank}: hand over locally, no SEND/RECV")
            is_send = op.kind in (OpKind.SEND_F, OpKind.SEND_B)
            sides.setdefault(transfer_key(op), []).append((rank, step, is_send))
    for key, ends in sides.items():
        sends = [e for e in ends if e[2]]
        recvs = [e for e in ends if not e[2]]
        if len(sends) != 1 or len(recvs) != 1:
            rank, step, _ = ends[0]
            if len(sends) > 1 or len(recvs) > 1:
                raise _fail(schedule, rank, step, "this transfer is posted more than once")
            raise _fail(schedule, rank, step, "has no matching " + ("RECV" if sends else "SEND"))


def _check_deadlock(schedule: Schedule, comm: str) -> None:
    try:
        dry_run(schedule, comm)
    except Deadlock as stuck:
        rank, step = min(stuck.stuck.items())
        waits = ", ".join(f"rank {r} at {schedule.ops[r][i]}" for r, i in sorted(stuck.stuck.items())[:8])
        raise _fail(schedule, rank, step, f"deadlock under {comm} communication: {waits}") from None


def validate(schedule: Schedule, comm: str = "async") -> Schedule:
    """Raise ScheduleError if ``schedule`` breaks a rule; return the lowered schedule."""
    if comm not in COMMS:
        raise ScheduleError(f"comm must be one of {', '.join(COMMS)}, got {comm!r}")
    given_comms = schedule.has_comms
    _check_ops(schedule, lowered=given_comms)
    if given_comms:
        _check_pairs(schedule)
    lowered = schedule.with_comms()
    # Our own lowering pairs every transfer and keeps inputs ahead of their use by
    # construction, and its blocking dry run already proved it deadlock-free under both
    # semantics (async waits on a subset of what blocking waits on).
    if not lowered.__dict__.get("_deadlock_free"):
        _check_deadlock(lowered, comm)
    return lowered
