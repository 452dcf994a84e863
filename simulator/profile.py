"""A profile (``costs.json``): what a model costs on one machine, measured once, read for every
prediction.

``mpiexec -n P python -m executor profile … --out DIR`` writes ``DIR/costs.json``;
:meth:`Profile.load` reads it and :meth:`Profile.costs` gives the :class:`simulator.Costs`
of one layout. The format, its keys and its checks, is the typed schema of
:mod:`simulator.costs_json`, which the writer uses too.

In :meth:`Profile.costs`: t_f/t_i/t_w/t_b are the ``run`` times where every stage of
the layout has them, else the ``sequence`` times, else the ``alone`` times, and
``share`` and ``comm_interference`` slow them as the simulation runs (``times=`` asks for
one; ``times="concurrent"`` takes the concurrent times and no share table instead). An op
in a run finds the caches as the other ops left them (other microbatches' activations,
the other chunk's weights, the transfers' copies); an op repeated on one microbatch
finds its own (:mod:`executor.results.profile`). ``scale`` multiplies every compute time
(e.g. by the canary's drift since the profile: ``executor --canary``). act_memory is F's bytes and
w_memory_fraction W's share of I + W, over all stages; the all-reduce times are fitted to
the ring model of :class:`simulator.Costs` (dp_latency, dp_bandwidth); ``dispatch`` gives
dispatch_compute, dispatch_send and dispatch_recv, and where it has them, each rank's
optimizer time as the runs' optimizer plus their host time outside the ops (instead of
the layout's optimizer timed on its own).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from schedules import Schedule

from .costs import Costs
from .costs_json import DISPATCH, OPS, TIMES, CostsDocument, LayoutTable, OpMemory, OpTimes, ProfileError, StageTable
from .fit import fit_link

__all__ = ["Profile", "ProfileError", "recut"]


class Profile:
    """A checked ``costs.json`` (:class:`~simulator.costs_json.CostsDocument`): conditions,
    node sharing, links and per-layout tables, and the :class:`Costs` of each layout."""

    def __init__(self, doc: CostsDocument | dict[str, Any], source: str = "costs.json"):
        """``doc``: the typed document, or the JSON values of one (checked here)."""
        self.source = source
        self.doc = doc if isinstance(doc, CostsDocument) else CostsDocument.parse(doc, source)

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """Read and check a costs.json; any fault of the file raises :class:`ProfileError`
        naming it (and the key, where one is to blame)."""
        return cls(CostsDocument.load(path), str(path))

    def save(self, path: str | Path) -> None:
        self.doc.save(path)

    def to_dict(self) -> dict[str, Any]:
        """The document as JSON values (a copy the caller may change)."""
        return self.doc.to_dict()

    @property
    def conditions(self):
        """What the numbers were taken under (:class:`~simulator.costs_json.Conditions`)."""
        return self.doc.conditions

    @property
    def layouts(self) -> list[tuple[int, int, int, int]]:
        """(ranks, chunks, microbatches, dp) of every layout profiled."""
        return [x.key for x in self.doc.layouts]

    def layout(self, ranks: int, chunks: int, microbatches: int, dp: int | None = None) -> LayoutTable:
        """The table of one layout; ``dp`` None: the only dp profiled for it."""
        found = self.doc.layout(ranks, chunks, microbatches, dp)
        if len(found) == 1:
            return found[0]
        have = ", ".join(f"ranks={r} chunks={c} microbatches={m} dp={d}" for r, c, m, d in self.layouts)
        if found:
            raise ProfileError(f"{self.source} has layout ranks={ranks} chunks={chunks} microbatches={microbatches} "
                               f"at dp={', '.join(str(x.dp) for x in found)}: say which dp")
        d = dp or 1
        raise ProfileError(
            f"{self.source} has no layout ranks={ranks} chunks={chunks} microbatches={microbatches} dp={d}; profile "
            f"with `mpiexec -n {ranks * d} python -m executor profile --chunks {chunks} --microbatches {microbatches}"
            f"{f' --dp {d}' if d > 1 else ''}` (it has: {have})")

    def summary(self) -> str:
        """One screen: conditions, node sharing, links and each layout's mean op times."""
        doc = self.doc
        c, links, dispatch = doc.conditions, doc.links, doc.dispatch
        lines = [f"{self.source}: {c.host} {c.date}  ranks={c.ranks} ({c.ranks_per_node} a node)  "
                 f"threads={c.threads} {c.dtype} {c.device}  torch {c.torch}  {c.mpi}",
                 f"share {', '.join(f'{r:.3f}' for r in doc.share)}  "
                 f"comm_interference {doc.comm_interference:.3f}  links {links.latency * 1e6:.1f} us + "
                 + ("bytes / inf" if links.bandwidth is None else f"bytes / {links.bandwidth / 1e9:.2f} GB/s")
                 + ("" if dispatch is None else "  host per op: " + ", ".join(
                     f"{key} {getattr(dispatch, key) * 1e6:.1f} us" for key in DISPATCH)),
                 f"{'ranks':>5} {'chunks':>6} {'m':>4} {'dp':>3}  {'F':>8} {'B':>8} {'I':>8} {'W':>8} "
                 f"{'run/alone':>10} {'seq/alone':>9}  {'optimizer':>9}  (ms, mean of stages, alone)"]
        for x in doc.layouts:
            mean = {op: sum(s.op(op).alone for s in x.stages) / len(x.stages) for op in OPS}
            lines.append(f"{x.ranks:>5} {x.chunks:>6} {x.microbatches:>4} {x.dp:>3}  "
                         + " ".join(f"{mean[op] * 1e3:>8.3f}" for op in OPS)
                         + f" {_ratio(x, 'run'):>10.3f} {_ratio(x, 'sequence'):>9.3f}"
                         f"  {max(x.optimizer) * 1e3:>9.3f}")
        return "\n".join(lines)

    def costs(self, schedule: Schedule | None = None, *, ranks: int | None = None, chunks: int | None = None,
              microbatches: int | None = None, dp: int | None = None, times: str | None = None,
              scale: float = 1.0, layers: Sequence[int] | None = None) -> Costs:
        """The :class:`Costs` of ``schedule``'s layout (or of the one named by keywords);
        ``times`` None: ``run`` where the layout has it, else ``sequence``, else ``alone``;
        every compute time (ops, the host time around them, optimizer) times ``scale`` (the host's
        only when the profile slept, :attr:`sleeping`);
        ``layers``: the layers of each model stage of the run, where they differ from the
        profile's (:func:`recut`)."""
        if schedule is not None:
            ranks, chunks, microbatches = schedule.num_ranks, schedule.chunks, schedule.num_microbatches
        if ranks is None or chunks is None or microbatches is None:
            raise ValueError("Profile.costs takes a schedule, or ranks=, chunks= and microbatches=")
        if times is not None and times not in TIMES:
            raise ValueError(f"times must be one of {', '.join(map(repr, TIMES))}, got {times!r}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        table = self.layout(ranks, chunks, microbatches, dp)
        if layers is not None and list(layers) != table.layers:
            table = recut(table, layers, self.source)
        stages = table.stages
        if times is None:
            times = next(t for t in ("run", "sequence", "alone")
                         if all(getattr(s.op(op), t) is not None for s in stages for op in OPS))
        fields: dict[str, Any] = {name: self._times(table, op, times) for name, op in
                                  (("t_f", "F"), ("t_i", "I"), ("t_w", "W"), ("t_b", "B"))}
        fields["act_bytes"] = table.boundary_bytes or 0.0
        fields["optimizer_time"] = table.optimizer
        fields["grad_bytes"] = [s.grad_bytes or 0.0 for s in stages]
        if all(s.memory is not None for s in stages):
            fields.update(_memory(stages))
        fields.update(self._links(ranks, schedule))
        fields.update(self._placement(ranks, table.dp))
        if times != "concurrent":
            fields.update(share=tuple(self.doc.share), comm_interference=self.doc.comm_interference)
            if not self.sleeping:  # sleeping stages hold no core
                fields.update(_slices(self.doc.scheduler))
        if table.dp > 1:
            fields.update(dp=table.dp, **_ring(table))
        dispatch = self.doc.dispatch
        if dispatch is not None:
            fields.update({f"dispatch_{key}": float(getattr(dispatch, key)) for key in DISPATCH})
            step = dispatch.step or ()
            if len(step) == ranks:  # a step's host time outside its ops, added to the optimizer
                # A profile with run times took its layouts' optimizer from those runs; an
                # older one timed it alone (half of what a run sees) and has the runs' in dispatch.
                runs = table.optimizer if times == "run" else dispatch.optimizer or ()
                if len(runs) == ranks:
                    fields["optimizer_time"] = [a + b for a, b in zip(runs, step)]
        c = self.doc.conditions
        note = f"from {self.source}: {c.host}, {c.date}, times {times}"
        try:
            costs = Costs(**fields, notes=(note + (f", scaled x{scale:.4f}" if scale != 1.0 else ""),))
        except ValueError as err:  # a value the format allows but the costs do not (a share of 0 ...)
            raise ProfileError(f"{self.source}: {err}") from None
        return costs.scaled(scale, ops=not self.sleeping)

    @property
    def sleeping(self) -> bool:
        """Whether the profiled stages slept (``--compute sleep``) instead of computing: their
        ops hold no core and do not drift with the machine."""
        return self.doc.conditions.model.get("compute") == "sleep"

    @property
    def canary(self) -> list[float] | None:
        """The canary's seconds per world rank when the profile was taken (None: not recorded)."""
        found = self.doc.canary
        return None if found is None else [float(t) for t in found.seconds]

    def _times(self, table: LayoutTable, op: str, times: str) -> list[float]:
        found = [getattr(s.op(op), times) for s in table.stages]
        if any(t is None for t in found):
            raise ProfileError(f"{self.source}: layout ranks={table.ranks} chunks={table.chunks} microbatches="
                               f"{table.microbatches} has no {times!r} time for {op}")
        return [float(t) for t in found]

    def _links(self, ranks: int, schedule: Schedule | None) -> dict[str, Any]:
        """latency and bandwidth for every pipeline link the layout can use."""
        links = self.doc.links
        measured = {(p.src, p.dst): p for p in links.pairs}
        pairs = {(r, (r + 1) % ranks) for r in range(ranks) if ranks > 1}  # looping and V placements
        if schedule is not None:
            where = schedule.stage_to_rank
            pairs |= {(where[s], where[s + 1]) for s in range(len(where) - 1) if where[s] != where[s + 1]}
        latency, bandwidth = {}, {}
        for a, b in sorted(pairs):
            link = measured.get((a, b)) or measured.get((b, a)) or links
            latency[a, b], bandwidth[a, b] = link.latency, _bandwidth(link.bandwidth)
        if not pairs:
            return {"latency": links.latency, "bandwidth": _bandwidth(links.bandwidth)}
        return {"latency": latency, "bandwidth": bandwidth}

    def _placement(self, ranks: int, dp: int) -> dict[str, Any]:
        """Where the world ranks of the layout live (replica k's rank r is world rank k * ranks + r)."""
        node_of = self.doc.conditions.node_of
        if node_of is not None and len(node_of) >= ranks * dp:
            return {"node_of": tuple(node_of[:ranks * dp])}
        return {"ranks_per_node": self.doc.conditions.ranks_per_node}


def recut(table: LayoutTable, layers: Sequence[int], source: str = "costs.json") -> LayoutTable:
    """A layout's table with its model stages cut again into ``layers`` layers each.

    Each layer of a profiled stage is taken to cost a share of that stage's op times,
    memory and gradient bytes in proportion to its count (the stage's layers alike, as
    the built-in models' are); a new stage sums its layers. The activation crossing a new
    boundary is the profiled one at that layer, or the one leaving its profiled stage."""
    have = table.layers
    if have is None:
        raise ProfileError(f"{source}: layout ranks={table.ranks} chunks={table.chunks} microbatches="
                           f"{table.microbatches} does not say its layers per stage; profile again to re-cut it")
    if len(layers) != len(have) or sum(layers) != sum(have) or min(layers) < 1:
        raise ProfileError(f"{source}: cannot cut {sum(have)} layers in {len(have)} stages as {list(layers)}")
    owner = [k for k, n in enumerate(have) for _ in range(n)]  # profiled stage of each layer
    ends = [sum(have[:k + 1]) for k in range(len(have))]
    profiled = table.stages

    def summed(values: list[float | None], mine: list[int]) -> float | None:
        """The layers' shares of their stages' ``values``; None where a stage lacks it."""
        if any(values[k] is None for k in mine):
            return None
        return sum(values[k] / have[k] for k in mine)

    stages, start = [], 0
    for n in layers:
        mine = owner[start:start + n]
        ops = {op: OpTimes(**{t: summed([getattr(s.op(op), t) for s in profiled], mine) for t in TIMES})
               for op in OPS}
        memory = None
        if all(profiled[k].memory is not None for k in mine):
            memory = OpMemory(**{op: summed([getattr(s.memory, op) if s.memory else None for s in profiled], mine)
                                 for op in OPS})
        grad_bytes = summed([s.grad_bytes or 0.0 for s in profiled], mine)
        stages.append(StageTable(**ops, memory=memory, grad_bytes=grad_bytes))
        start += n
    crossing = table.boundary_bytes
    cuts = [sum(layers[:s + 1]) for s in range(len(layers) - 1)]
    boundary = [crossing[ends.index(c)] if c in ends else crossing[min(owner[c - 1], len(crossing) - 1)]
                for c in cuts]
    return replace(table, stages=stages, boundary_bytes=boundary, layers=list(layers))


def _ratio(layout: LayoutTable, times: str) -> float:
    """Mean over stages and ops of ``times`` over alone (nan where not measured)."""
    ratios = [getattr(s.op(op), times) / s.op(op).alone for s in layout.stages for op in OPS
              if getattr(s.op(op), times) is not None and s.op(op).alone > 0]
    return sum(ratios) / len(ratios) if ratios else float("nan")


def _slices(found) -> dict[str, Any]:
    """Costs.cores and Costs.slice_s where the profile saw ranks taken off their cores."""
    if found is None or found.slice_s is None:
        return {}
    return {"cores": int(found.cores), "slice_s": float(found.slice_s)}


def _bandwidth(value: float | None) -> float:
    return math.inf if value is None else float(value)


def _memory(stages: list[StageTable]) -> dict[str, Any]:
    """act_memory per stage (what F holds) and W's share of a split backward's frees."""
    held = [float(s.memory.F) for s in stages]
    split = sum(s.memory.I + s.memory.W for s in stages)
    w = sum(s.memory.W for s in stages) / split if split > 0 else 0.5
    return {"act_memory": held, "w_memory_fraction": w}


def _ring(table: LayoutTable) -> dict[str, float]:
    """dp_latency and dp_bandwidth from the all-reduce times: a ring of d moves
    2 (d - 1) / d * grad_bytes in 2 (d - 1) steps (see :mod:`simulator.costs`)."""
    d = table.dp
    moved = [2 * (d - 1) / d * (s.grad_bytes or 0.0) for s in table.stages]
    fit = fit_link(moved, table.allreduce, "all-reduce")
    return {"dp_latency": fit.latency / (2 * (d - 1)), "dp_bandwidth": fit.bandwidth}
