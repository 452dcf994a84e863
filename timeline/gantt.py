"""Gantt charts of a trace (simulated or measured): one band per rank, time across.

Each rank's band holds its compute boxes (F, B, I, W, optimizer), coloured by kind and
hatched too, so the kinds stay apart in greyscale print, with the microbatch written in
the box while boxes are wide enough to read; under them thin lanes show the send, recv
and reduce streams (a bar from post to completion). Figures are made without pyplot
(Agg canvas), so nothing here touches a global backend or needs a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .schema import bubble_of, check_trace

__all__ = ["plot_gantt", "plot_compare"]

# kind -> (face colour, hatch, label). Lightness steps apart for greyscale; hatches differ.
STYLE = {
    "F": ("#9ecae1", "", "F forward"),
    "B": ("#e6550d", "//", "B backward"),
    "I": ("#fdae6b", "\\\\", "I backward (inputs)"),
    "W": ("#31a354", "xx", "W backward (weights)"),
    "OPTIMIZER": ("#636363", "..", "optimizer"),
}
LANES = {"send": ("#3182bd", "send"), "recv": ("#756bb1", "recv"), "reduce": ("#d62728", "reduce")}
_COMPUTE_H, _LANE_H, _BAND = 0.55, 0.12, 1.0
_MAX_LABELS = 800  # beyond this many boxes the numbers only clutter


def _draw(ax: Axes, trace: pd.DataFrame, ranks: int) -> None:
    compute = trace[trace["stream"] == "compute"]
    span = max(float(trace["end"].max()), 1e-12)
    # outlines only while boxes are wide enough: on a crowded rank they would hide the colours
    edge = 0.3 if len(compute) <= _MAX_LABELS else 0.0
    for (rank, kind), rows in compute.groupby(["rank", "kind"], sort=False):
        face, hatch, _ = STYLE.get(kind, ("#bdbdbd", "", kind))
        bars = list(zip(rows["start"], rows["end"] - rows["start"]))
        ax.broken_barh(bars, (rank * _BAND, _COMPUTE_H), facecolors=face, edgecolors="#404040",
                       linewidth=edge, hatch=hatch)
    if len(compute) <= _MAX_LABELS:
        for row in compute.itertuples(index=False):
            if row.mb >= 0 and (row.end - row.start) > span / 150:
                ax.text((row.start + row.end) / 2, row.rank * _BAND + _COMPUTE_H / 2, str(row.mb),
                        ha="center", va="center", fontsize=6)
    for lane, stream in enumerate(LANES):
        rows = trace[trace["stream"] == stream]
        colour, _ = LANES[stream]
        for rank, part in rows.groupby("rank", sort=False):
            y = rank * _BAND + _COMPUTE_H + 0.02 + lane * _LANE_H
            bars = list(zip(part["start"], (part["end"] - part["start"]).clip(lower=span / 2000)))
            ax.broken_barh(bars, (y, _LANE_H * 0.8), facecolors=colour, alpha=0.6, linewidth=0)
    ax.set_ylim(ranks * _BAND, -0.1)
    ax.set_yticks([r * _BAND + _COMPUTE_H / 2 for r in range(ranks)], [f"rank {r}" for r in range(ranks)])
    ax.set_xlim(0, span)
    ax.set_xlabel("time (s)")


def _legend(fig: Figure, traces: Sequence[pd.DataFrame]) -> None:
    kinds = set().union(*(set(t["kind"]) for t in traces))
    streams = set().union(*(set(t["stream"]) for t in traces))
    handles = [Patch(facecolor=c, hatch=h, edgecolor="black", label=label)
               for kind, (c, h, label) in STYLE.items() if kind in kinds]
    handles += [Patch(facecolor=c, alpha=0.6, label=label) for s, (c, label) in LANES.items() if s in streams]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)


def _title(trace: pd.DataFrame, ranks: int) -> str:
    attrs = trace.attrs
    name = attrs.get("schedule", "schedule")
    m = attrs.get("microbatches", int(trace.loc[trace["mb"] >= 0, "mb"].max()) + 1 if len(trace) else 0)
    return f"{name}  p={ranks}  m={m}  bubble fraction {bubble_of(trace, ranks):.1%}"


def _ranks(trace: pd.DataFrame) -> int:
    return int(trace.attrs.get("ranks", int(trace["rank"].max()) + 1 if len(trace) else 1))


def _save(fig: Figure, path: str | Path | None) -> Figure:
    FigureCanvasAgg(fig)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150)
    return fig


def plot_gantt(trace: pd.DataFrame, path: str | Path | None = None, title: str | None = None,
               width: float = 12.0) -> Figure:
    """Draw one trace; save it to ``path`` (PNG, SVG or any matplotlib format) if given."""
    check_trace(trace)
    ranks = _ranks(trace)
    height = 0.55 * ranks + 1.8
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    _draw(ax, trace, ranks)
    ax.set_title(title if title is not None else _title(trace, ranks), fontsize=10)
    _legend(fig, [trace])
    return _save(fig, path)


def plot_compare(trace_a: pd.DataFrame, trace_b: pd.DataFrame, labels: tuple[str, str] = ("predicted", "measured"),
                 path: str | Path | None = None, title: str | None = None, width: float = 12.0) -> Figure:
    """Two timelines on one shared time axis, ``trace_a`` above ``trace_b``."""
    check_trace(trace_a), check_trace(trace_b)
    ranks = max(_ranks(trace_a), _ranks(trace_b))
    height = 2 * (0.8 + 0.55 * ranks) + 1.4
    fig = Figure(figsize=(width, height), layout="constrained")
    top = fig.add_subplot(2, 1, 1)
    bottom = fig.add_subplot(2, 1, 2, sharex=top)
    for ax, trace, label in ((top, trace_a, labels[0]), (bottom, trace_b, labels[1])):
        _draw(ax, trace, ranks)
        ax.set_title(f"{label}: {_title(trace, ranks)}", fontsize=9)
    top.set_xlim(0, max(float(trace_a["end"].max()), float(trace_b["end"].max())))
    top.set_xlabel("")
    if title:
        fig.suptitle(title)
    _legend(fig, [trace_a, trace_b])
    return _save(fig, path)
