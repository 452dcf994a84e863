"""torch.distributed.pipelining's CSV schedule format, read and written.

One row per rank, one action per cell in execution order (``0F0,0F1,0B0``); empty cells
are torch's idle steps and are dropped, since this IR states order, not time. Both
forms load: "compute_only" (no SEND/RECV) and "compute_comms"; overlapped pairs are
written as torch writes them, ``(0F7;7B3)OVERLAP_F_B``. Stages, microbatches and the
stage -> rank placement are inferred from the cells.

A file is refused, in one line naming the file and the cell or row, when it cannot be
a schedule: a cell that is no action, a stage on two ranks, stage numbers with a gap, a
blank row between ranks (it would be a rank with nothing to do), or a file larger than
this machine can hold once lowered (:mod:`schedules.bounds`: every op takes at least
four bytes of the file, a cell and its comma, so the file's size bounds its ops before
anything is read). Blank lines at the end are ignored.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from cliguard import UsageError, read_input

from .bounds import BYTES_PER_OP
from .ir import Op, Schedule, ScheduleError
from .lowered import Lowered

__all__ = ["load_csv", "write_csv"]

_BYTES_PER_CELL = 4  # the shortest action, "0F0", and the comma or newline after it
_LOWERED_PER_OP = 3  # the lowering adds at most a RECV and a SEND per compute op


def _parse_cell(text: str, where: str) -> Op:
    try:
        return Op.parse(text)
    except ScheduleError as err:
        raise ScheduleError(f"{where}: {err}") from None


def _read_text(path: Path, bytes_per_op: int) -> str:
    """The file's text, refused before it is read if it could hold more ops than fit."""
    try:
        return read_input(path, "schedule file", _LOWERED_PER_OP * bytes_per_op // _BYTES_PER_CELL + 1,
                          measured_by=f"python -m schedules.measure; an op takes {_BYTES_PER_CELL} bytes of the file "
                          f"or more and makes at most {_LOWERED_PER_OP} once lowered", kind="a CSV schedule")
    except UsageError as err:
        raise ScheduleError(str(err)) from None


def _rows(text: str, path: Path) -> list[list[Op]]:
    """The ops of each row, blank rows at the end dropped."""
    try:
        rows = [[_parse_cell(cell.strip(), f"{path}: rank {rank}, column {col + 1}")
                 for col, cell in enumerate(row) if cell.strip()]
                for rank, row in enumerate(csv.reader(io.StringIO(text, newline="")))]
    except csv.Error as err:
        raise ScheduleError(f"{path}: not a CSV schedule ({err})") from None
    while rows and not rows[-1]:
        rows.pop()
    return rows


def load_csv(path, name: str | None = None, *, bytes_per_op: int = BYTES_PER_OP) -> Schedule:
    """Read a torch-format CSV into a Schedule (not yet validated: call ``validate``).
    The file must fit in memory once lowered at ``bytes_per_op`` (:mod:`schedules.bounds`).
    Any other input raises :class:`ScheduleError`, one line naming the file (and the cell
    or row to blame), never another error."""
    path = Path(path)
    ops = _rows(_read_text(path, bytes_per_op), path)
    if not ops:
        raise ScheduleError(f"{path}: no ranks (the file has no rows)")
    placed: dict[int, int] = {}
    for rank, rank_ops in enumerate(ops):
        for op in (part for whole in rank_ops for part in whole.parts):
            other = placed.setdefault(op.stage, rank)
            if other != rank:
                raise ScheduleError(f"{path}: stage {op.stage} is held by two ranks ({other} and {rank}), op {op} on rank {rank}")
    if not placed:
        raise ScheduleError(f"{path}: no actions in any cell")
    num_stages = max(placed) + 1
    if len(placed) < num_stages:  # a gap: find the first, counting only up to the stages named
        missing = next(s for s in range(len(placed) + 1) if s not in placed)
        raise ScheduleError(f"{path}: stage {missing} appears on no rank (stages 0..{num_stages - 1} are named)")
    idle = next((rank for rank, rank_ops in enumerate(ops) if not rank_ops), None)
    if idle is not None:
        raise ScheduleError(f"{path}: row {idle + 1} is blank but more ranks follow: it would be a rank "
                            f"with nothing to do; remove it")
    num_microbatches = 1 + max((part.mb for rank_ops in ops for op in rank_ops for part in op.parts
                                if part.mb is not None), default=-1)
    if num_microbatches == 0:
        raise ScheduleError(f"{path}: no action names a microbatch (only REDUCE_GRAD)")
    stage_to_rank = tuple(placed[s] for s in range(num_stages))
    return Schedule(name or path.stem, len(ops), num_microbatches, num_stages, stage_to_rank, ops)


def write_csv(lists: Schedule | Lowered, path) -> None:
    """Write the per-rank lists in torch's form: a :class:`Lowered`'s final lists (the
    compute_comms form), or a Schedule's lists as they are (compute_only when built)."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        for rank_ops in lists.ops:
            writer.writerow([str(op) for op in rank_ops])
