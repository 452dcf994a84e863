"""What a search prints and writes: the ranked table, CSV, JSON and the Pareto plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from .hardware import GIB
from .search import Plan, Search

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["size", "format_table", "plans_frame", "plot_pareto", "pareto_front", "explain_rejections"]

_HEADER = (f"{'#':>3}  {'schedule':<17} {'tp':>2} {'pp':>4} {'dp':>5} {'v':>2} {'m':>5} {'b':>2}  {'split':<8} "
           f"{'recomp':<9} {'sp':<3} {'zero':<4} {'step s':>9} {'bubble':>7} {'peak GiB':>8} {'tokens/s':>10} "
           f"{'smp/GPU/s':>9} {'TFLOP/s':>7} {'MFU':>6}")


def size(n: float) -> str:
    """Bytes as GiB to one decimal, or MiB below a tenth of a GiB (the executor's small models)."""
    return f"{n / GIB:.1f} GiB" if n >= 0.1 * GIB else f"{n / 2 ** 20:.1f} MiB"


def _gib(n: float) -> str:
    return f"{n / GIB:.1f}" if n >= 0.1 * GIB else f"{n / GIB:.2g}"


def format_table(plans: list[Plan]) -> str:
    """The ranked table, best first."""
    lines = [_HEADER]
    for i, p in enumerate(plans, 1):
        lay = p.layout
        split = lay.split if len(lay.split) <= 8 else lay.split[:7] + "+"
        lines.append(f"{i:>3}  {lay.schedule:<17} {lay.tp:>2} {lay.pp:>4} {lay.dp:>5} {lay.chunks:>2} "
                     f"{lay.microbatches:>5} {lay.microbatch_size:>2}  {split:<8} {lay.recompute:<9} "
                     f"{'on' if lay.sequence_parallel else 'off':<3} {'on' if lay.distributed_optimizer else 'off':<4} "
                     f"{p.step_time:>9.4g} {p.bubble_fraction:>7.2%} {_gib(p.memory.total):>8} {p.tokens_per_s:>10.4g} "
                     f"{p.samples_per_gpu_per_s:>9.4g} {p.tflops_per_gpu:>7.4g} {p.mfu:>6.1%}")
    return "\n".join(lines)


def plans_frame(plans: list[Plan]) -> pd.DataFrame:
    """One row per simulated layout (the --csv table), best first."""
    import pandas as pd  # a third of a second to load: not before a plan needs it

    return pd.DataFrame([p.row() for p in plans])


def explain_rejections(search: Search, cap: float) -> str:
    """One line per overflowing part: how many layouts it broke, and the closest of them."""
    rejected = [c for c in search.candidates if c.overflow is not None]
    if not rejected:
        return ""
    lines = []
    for part in dict.fromkeys(c.overflow for c in rejected):
        hit = [c for c in rejected if c.overflow == part]
        near = min(hit, key=lambda c: c.memory.total)
        lines.append(f"{len(hit)} layout(s) over {size(cap)} at {part}; closest {near.layout.label()}: "
                     f"{size(near.memory.total)} on rank {near.memory.rank} "
                     f"({', '.join(f'{k} {size(v)}' for k, v in near.memory.parts.items())})")
    return "\n".join(lines)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats in both step time and memory, by time."""
    order = sorted(range(len(points)), key=lambda i: points[i])
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(search: Search, path: str | Path, cap: float, title: str = "") -> None:
    """Peak memory per rank against step time, one colour per schedule: filled dots are
    simulated, rings the pre-filter's estimates of the other fitting layouts, grey crosses
    the estimates of layouts over the cap; the line joins the simulated layouts that no
    other beats in both."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    over = [c for c in search.candidates if c.overflow is not None]
    ax.scatter([c.estimate for c in over], [c.memory.total / GIB for c in over], marker="x", color="0.7",
               s=14, label="over the cap (estimated)")
    names = list(dict.fromkeys(c.layout.schedule for c in search.fitting))
    colours = {n: matplotlib.colormaps["tab10"](i % 10) for i, n in enumerate(names)}
    simulated = {p.layout for p in search.plans}
    for name in names:
        rest = [c for c in search.fitting if c.layout.schedule == name and c.layout not in simulated]
        ax.scatter([c.estimate for c in rest], [c.memory.total / GIB for c in rest], facecolors="none",
                   edgecolors=[colours[name]], s=22, alpha=0.6)
        mine = [p for p in search.plans if p.layout.schedule == name]
        ax.scatter([p.step_time for p in mine], [p.memory.total / GIB for p in mine], color=colours[name],
                   s=36, label=name, zorder=3)
    points = [(p.step_time, p.memory.total / GIB) for p in search.plans]
    front = pareto_front(points)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="black", lw=1, zorder=2,
            label="Pareto front (simulated)")
    ax.axhline(cap / GIB, color="red", ls="--", lw=1, label="memory cap")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step time (s, log scale)")
    ax.set_ylabel("peak memory per rank (GiB, log scale)")
    ax.set_title(title or "layouts: simulated (dots), estimated (rings), over the cap (crosses)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
