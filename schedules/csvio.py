"""torch.distributed.pipelining's CSV schedule format, read and written.

One row per rank, one action per cell in execution order (``0F0,0F1,0B0``); empty cells
are torch's idle steps and are dropped, since this IR states order, not time. Both
forms load: "compute_only" (no SEND/RECV) and "compute_comms"; overlapped pairs are
written as torch writes them, ``(0F7;7B3)OVERLAP_F_B``. Stages, microbatches and the
stage -> rank placement are inferred from the cells.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .ir import Op, Schedule, ScheduleError
from .lowered import Lowered

__all__ = ["load_csv", "write_csv"]


def _parse_cell(text: str, where: str) -> Op:
    try:
        return Op.parse(text)
    except ScheduleError as err:
        raise ScheduleError(f"{where}: {err}") from None


def load_csv(path, name: str | None = None) -> Schedule:
    """Read a torch-format CSV into a Schedule (not yet validated: call ``validate``)."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as err:
        raise ScheduleError(f"cannot read schedule file {str(path)!r}: {err.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise ScheduleError(f"{path}: not a CSV schedule ({err})") from None
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()  # trailing blank lines
    if not rows:
        raise ScheduleError(f"{path}: no ranks (the file has no rows)")
    ops = [
        [_parse_cell(cell.strip(), f"{path}: rank {rank}, column {col + 1}") for col, cell in enumerate(row) if cell.strip()]
        for rank, row in enumerate(rows)
    ]
    placed: dict[int, int] = {}
    for rank, rank_ops in enumerate(ops):
        for op in (part for whole in rank_ops for part in whole.parts):
            other = placed.setdefault(op.stage, rank)
            if other != rank:
                raise ScheduleError(f"{path}: stage {op.stage} is held by two ranks ({other} and {rank}), op {op} on rank {rank}")
    if not placed:
        raise ScheduleError(f"{path}: no actions in any cell")
    num_stages = max(placed) + 1
    missing = [s for s in range(num_stages) if s not in placed]
    if missing:
        raise ScheduleError(f"{path}: stage {missing[0]} appears on no rank (stages 0..{num_stages - 1} are named)")
    num_microbatches = 1 + max(part.mb for rank_ops in ops for op in rank_ops for part in op.parts if part.mb is not None)
    stage_to_rank = tuple(placed[s] for s in range(num_stages))
    return Schedule(name or path.stem, len(ops), num_microbatches, num_stages, stage_to_rank, ops)


def write_csv(lists: Schedule | Lowered, path) -> None:
    """Write the per-rank lists in torch's form: a :class:`Lowered`'s final lists (the
    compute_comms form), or a Schedule's lists as they are (compute_only when built)."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        for rank_ops in lists.ops:
            writer.writerow([str(op) for op in rank_ops])
