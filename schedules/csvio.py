"""torch.distributed.pipelining's CSV schedule format, read and written.

One row per rank, one action per cell in execution order (``0F0,0F1,0B0``); empty cells
are torch's idle steps and are dropped, since this IR states order, not time. Both
forms load: "compute_only" (no SEND/RECV) and "compute_comms". Stages, microbatches and
the stage -> rank placement are inferred from the cells.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .ir import Op, Schedule, ScheduleError

__all__ = ["load_csv", "write_csv"]


def _parse_cell(text: str, where: str) -> Op:
    if text.startswith("(") or "OVERLAP_F_B" in text:
        raise ScheduleError(f"{where}: {text!r}: OVERLAP_F_B (fused forward/backward) is not part of this IR")
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
        for op in rank_ops:
            other = placed.setdefault(op.stage, rank)
            if other != rank:
                raise ScheduleError(f"{path}: stage {op.stage} is held by two ranks ({other} and {rank}), op {op} on rank {rank}")
    if not placed:
        raise ScheduleError(f"{path}: no actions in any cell")
    num_stages = max(placed) + 1
    missing = [s for s in range(num_stages) if s not in placed]
    if missing:
        raise ScheduleError(f"{path}: stage {missing[0]} appears on no rank (stages 0..{num_stages - 1} are named)")
    num_microbatches = 1 + max(op.mb for rank_ops in ops for op in rank_ops if op.mb is not None)
    stage_to_rank = tuple(placed[s] for s in range(num_stages))
    return Schedule(name or path.stem, len(ops), num_microbatches, num_stages, stage_to_rank, ops)


def write_csv(schedule: Schedule, path, comms: bool = False, comm: str = "async") -> None:
    """Write ``schedule`` in torch's form: compute_comms (lowered for ``comm``) when
    ``comms``, else compute_only."""
    body = schedule.with_comms(comm=comm) if comms else schedule.compute_only()
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        for rank_ops in body.ops:
            writer.writerow([str(op) for op in rank_ops])
