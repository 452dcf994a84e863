"""Text grid of a schedule: one column per rank, one row per step (position in the rank's list)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ir import Schedule
    from .lowered import Lowered

__all__ = ["format_grid"]


def format_grid(schedule: Schedule | Lowered, mark: tuple[int, int] | None = None, window: int | None = None) -> str:
    """The step x rank grid as text: a Schedule's lists, or a Lowered's final lists.

    Steps are positions in each rank's list, not time: schedules state order only.

    ``mark=(rank, step)`` brackets that cell with ``>> <<``; ``window=k`` shows only the
    k steps and the k ranks either side of the mark, so a schedule of 100k ops or 100k
    ranks still yields a readable error (in time and memory of the window, not of the grid).
    """
    ops = schedule.ops
    ranks = range(schedule.num_ranks)
    if mark is not None and window is not None:
        ranks = range(max(0, mark[0] - window), min(schedule.num_ranks, mark[0] + window + 1))
    depth = max((len(ops[r]) for r in ranks), default=0)
    first, stop = 0, depth
    if mark is not None and window is not None:
        first, stop = max(0, mark[1] - window), min(depth, mark[1] + window + 1)

    def cell(rank: int, step: int) -> str:
        text = str(ops[rank][step]) if step < len(ops[rank]) else ""
        return f">>{text}<<" if mark == (rank, step) else text

    rows = [[cell(r, s) for r in ranks] for s in range(first, stop)]
    header = [f"rank {r}" for r in ranks]
    widths = [max([len(header[c])] + [len(row[c]) for row in rows]) for c in range(len(ranks))]
    step_w = max(4, len(str(stop)))
    lines = ["step".rjust(step_w) + " | " + " | ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("-" * len(lines[0]))
    if first > 0:
        lines.append("...".rjust(step_w))
    for s, row in zip(range(first, stop), rows):
        lines.append(str(s).rjust(step_w) + " | " + " | ".join(c.ljust(w) for c, w in zip(row, widths)))
    if stop < depth:
        lines.append("...".rjust(step_w))
    return "\n".join(line.rstrip() for line in lines)
