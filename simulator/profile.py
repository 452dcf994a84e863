"""``costs.json``: what a model costs on one machine, measured once, read for every prediction.

``mpiexec -n P python -m executor profile … --out DIR`` writes ``DIR/costs.json``;
:meth:`Profile.load` reads it and :meth:`Profile.costs` gives the :class:`simulator.Costs`
of one layout. JSON only (never a pickle): a file from elsewhere is data, not code.
Times are seconds, sizes bytes, bandwidths bytes per second; ``null`` bandwidth means
infinite (latency only: JSON has no inf). Format, version 1 (every key required unless
marked optional)::

    {"format": "pipebubble-costs", "version": 1,
     "conditions": {                      # what the numbers were taken under
       "host": str,                       #   hostname of world rank 0
       "ranks": int,                      #   world ranks the profile ran on (pipeline x dp)
       "ranks_per_node": int,             #   world ranks per node, placed in order
       "node_of": [int, ...],             #   optional: node of each world rank, instead
       "threads": int,                    #   torch threads per rank
       "dtype": str, "device": str,       #   e.g. "float32", "cpu"
       "torch": str, "mpi": str,          #   torch.__version__, MPI.Get_library_version() first line
       "date": str,                       #   ISO 8601, UTC
       "model": {flag: value, ...}},      #   the model flags of the run (model, sizes, batch, compute...)
     "canary": {                          # optional: one fixed op, timed before and after the profile
       "op": str, "seconds": [float, ...], #   what it is; seconds per world rank (the mean of
       "threads": int,                    #   before and after), on this many torch threads;
       "before": [float, ...], "after": [float, ...]},  # optional: the two timings
     "scheduler": {                       # optional: what the OS scheduler did with the node's ranks
       "cores": int, "ranks": int,        #   the node's cores and ranks
       "slice_s": float | null,           #   a busy rank's run on a core when all ranks are busy
                                          #   (null: none was taken off its core)
       "wait_s": float,                   #   its wait for a core then
       "wake_sleeping_s": float,          #   how late a waiting rank got back beside busy ones,
       "wake_spinning_s": float},         #   sleeping as a run waits, or yielding (medians)
     "share": [float, ...],               # per-rank compute rate while k = 1, 2, ... ranks of a node
                                          #   compute at once: time alone / time with k computing
                                          #   (so share[0] = 1), one entry per k = 1 .. ranks_per_node
     "comm_interference": float,          # fraction compute slows while the rank's own transfers fly:
                                          #   1 - time alone / time beside its transfers, in [0, 1)
     "links": {                           # pipeline links, ping-pong fitted by fit_link
       "latency": float, "bandwidth": float | null,      # fit over all pairs: links not listed
       "pairs": [{"src": int, "dst": int,                # pipeline ranks; applies both ways
                  "latency": float, "bandwidth": float | null,
                  "bytes": [float, ...], "seconds": [float, ...]}, ...]},  # the samples (optional)
     "layouts": [{                        # one per (ranks, chunks, microbatches, dp) profiled
       "ranks": int, "chunks": int, "microbatches": int, "dp": int,
       "stages": [{                       # one per model stage s = 0 .. ranks * chunks - 1
         "F": {"alone": float,            #   the op alone (the bare layers, other ranks asleep);
               "run": float,              #   optional: median in short real runs of reference
                                          #   schedules of this layout (what a run sees);
               "run_mean": float,         #   optional: the mean of the same ops;
               "sequence": float,         #   optional: alone, within a whole step's ops in a
                                          #   pipeline order (profiles before "run");
               "concurrent": float},      #   optional: every rank of the node computing too
         "B": {...}, "I": {...}, "W": {...},  # B is a fused full backward
         "memory": {"F": float, "B": float, "I": float, "W": float},  # optional: bytes F allocates
                                          #   and holds, bytes B, I and W each free (all >= 0)
         "grad_bytes": float}, ...],      # optional: bytes of the stage's weight gradients
       "layers": [int, ...],              # optional: the model's layers in each stage (for recut)
       "boundary_bytes": [float, ...],    # activation bytes per microbatch crossing s -> s + 1
       "optimizer": [float, ...],         # optimizer step, one per pipeline rank
       "allreduce": [float, ...]}],       # dp > 1 only: gradient all-reduce, one per stage
     "dispatch": {                        # optional: host time around ops (Costs.dispatch_*),
       "compute": float, "send": float,   #   read off short runs of the schedules named
       "recv": float, "schedules": [str, ...], "microbatches": int | [int, ...],
       "optimizer": [float, ...],         #   optional, per pipeline rank: the optimizer step in
       "step": [float, ...]}}             #   those runs, and a step's host time outside its ops

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

import json
import math
from pathlib import Path
from typing import Any, Sequence

from cliguard import UsageError, read_input
from schedules import Schedule

from .bounds import JSON_BYTES_PER_BYTE, MEASURED
from .costs import Costs
from .fit import fit_link
from .profile_check import DISPATCH, FORMAT, OPS, TIMES, VERSION, ProfileError, check_profile

__all__ = ["Profile", "ProfileError", "FORMAT", "VERSION"]


class Profile:
    """A checked ``costs.json``: conditions, node sharing, links and per-layout tables."""

    def __init__(self, data: dict[str, Any], source: str = "costs.json"):
        self.source = source
        check_profile(data, source)
        self.data = data

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """Read and check a costs.json; any fault of the file raises :class:`ProfileError`
        naming it (and the key, where one is to blame)."""
        try:
            text = read_input(path, "costs file", JSON_BYTES_PER_BYTE, measured_by=MEASURED,
                              kind="a costs.json")
        except UsageError as err:
            raise ProfileError(str(err)) from None
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except ValueError as err:  # JSONDecodeError, NaN/Infinity, an integer of 5000 digits
            raise ProfileError(f"{path} is not a costs.json: {str(err).splitlines()[0]}") from None
        except RecursionError:
            raise ProfileError(f"{path} is not a costs.json: nested deeper than Python can read") from None
        return cls(data, str(path))

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.data, indent=1, allow_nan=False) + "\n")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.data))  # a deep copy the caller may change

    @property
    def conditions(self) -> dict[str, Any]:
        return self.data["conditions"]

    @property
    def layouts(self) -> list[tuple[int, int, int, int]]:
        """(ranks, chunks, microbatches, dp) of every layout profiled."""
        return [(x["ranks"], x["chunks"], x["microbatches"], x["dp"]) for x in self.data["layouts"]]

    def layout(self, ranks: int, chunks: int, microbatches: int, dp: int | None = None) -> dict[str, Any]:
        """The table of one layout; ``dp`` None: the only dp profiled for it."""
        found = [x for x in self.data["layouts"]
                 if (x["ranks"], x["chunks"], x["microbatches"]) == (ranks, chunks, microbatches)
                 and dp in (None, x["dp"])]
        if len(found) == 1:
            return found[0]
        have = ", ".join(f"ranks={r} chunks={c} microbatches={m} dp={d}" for r, c, m, d in self.layouts)
        if found:
            raise ProfileError(f"{self.source} has layout ranks={ranks} chunks={chunks} microbatches={microbatches} "
                               f"at dp={', '.join(str(x['dp']) for x in found)}: say which dp")
        d = dp or 1
        raise ProfileError(
            f"{self.source} has no layout ranks={ranks} chunks={chunks} microbatches={microbatches} dp={d}; profile "
            f"with `mpiexec -n {ranks * d} python -m executor profile --chunks {chunks} --microbatches {microbatches}"
            f"{f' --dp {d}' if d > 1 else ''}` (it has: {have})")

    def summary(self) -> str:
        """One screen: conditions, node sharing, links and each layout's mean op times."""
        c, links = self.conditions, self.data["links"]
        bandwidth = links["bandwidth"]
        lines = [f"{self.source}: {c['host']} {c['date']}  ranks={c['ranks']} ({c['ranks_per_node']} a node)  "
                 f"threads={c['threads']} {c['dtype']} {c['device']}  torch {c['torch']}  {c['mpi']}",
                 f"share {', '.join(f'{r:.3f}' for r in self.data['share'])}  "
                 f"comm_interference {self.data['comm_interference']:.3f}  links {links['latency'] * 1e6:.1f} us + "
                 + ("bytes / inf" if bandwidth is None else f"bytes / {bandwidth / 1e9:.2f} GB/s")
                 + ("" if "dispatch" not in self.data else "  host per op: " + ", ".join(
                     f"{key} {self.data['dispatch'][key] * 1e6:.1f} us" for key in DISPATCH)),
                 f"{'ranks':>5} {'chunks':>6} {'m':>4} {'dp':>3}  {'F':>8} {'B':>8} {'I':>8} {'W':>8} "
                 f"{'run/alone':>10} {'seq/alone':>9}  {'optimizer':>9}  (ms, mean of stages, alone)"]
        for x in self.data["layouts"]:
            mean = {op: sum(s[op]["alone"] for s in x["stages"]) / len(x["stages"]) for op in ("F", "B", "I", "W")}
            lines.append(f"{x['ranks']:>5} {x['chunks']:>6} {x['microbatches']:>4} {x['dp']:>3}  "
                         + " ".join(f"{mean[op] * 1e3:>8.3f}" for op in ("F", "B", "I", "W"))
                         + f" {_ratio(x, 'run'):>10.3f} {_ratio(x, 'sequence'):>9.3f}"
                         f"  {max(x['optimizer']) * 1e3:>9.3f}")
        return "\n".join(lines)

    def costs(self, schedule: Schedule | None = None, *, ranks: int | None = None, chunks: int | None = None,
              microbatches: int | None = None, dp: int | None = None, times: str | None = None,
              scale: float = 1.0, layers: Sequence[int] | None = None) -> Costs:
        """The :class:`Costs` of ``schedule``'s layout (or of the one named by keywords);
        ``times`` None: ``run`` where the layout has it, else ``sequence``, else ``alone``;
        every compute time (ops, the host time around them, optimizer) times ``scale``;
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
        if layers is not None and list(layers) != table.get("layers"):
            table = recut(table, layers, self.source)
        stages = table["stages"]
        if times is None:
            times = next(t for t in ("run", "sequence", "alone") if all(t in s[op] for s in stages for op in OPS))
        fields: dict[str, Any] = {name: self._times(table, op, times) for name, op in
                                  (("t_f", "F"), ("t_i", "I"), ("t_w", "W"), ("t_b", "B"))}
        fields["act_bytes"] = table["boundary_bytes"] or 0.0
        fields["optimizer_time"] = table["optimizer"]
        fields["grad_bytes"] = [s.get("grad_bytes", 0.0) for s in stages]
        if all("memory" in s for s in stages):
            fields.update(_memory(stages))
        fields.update(self._links(ranks, schedule))
        fields.update(self._placement(ranks, table["dp"]))
        if times != "concurrent":
            fields.update(share=tuple(self.data["share"]), comm_interference=self.data["comm_interference"])
            if self.conditions["model"].get("compute") != "sleep":  # sleeping stages hold no core
                fields.update(_slices(self.data.get("scheduler")))
        if table["dp"] > 1:
            fields.update(dp=table["dp"], **_ring(table))
        dispatch = self.data.get("dispatch")
        if dispatch is not None:
            fields.update({f"dispatch_{key}": float(dispatch[key]) for key in DISPATCH})
            step = dispatch.get("step", ())
            if len(step) == ranks:  # a step's host time outside its ops, added to the optimizer
                # A profile with run times took its layouts' optimizer from those runs; an
                # older one timed it alone (half of what a run sees) and has the runs' in dispatch.
                runs = table["optimizer"] if times == "run" else dispatch.get("optimizer", ())
                if len(runs) == ranks:
                    fields["optimizer_time"] = [a + b for a, b in zip(runs, step)]
        c = self.conditions
        note = f"from {self.source}: {c['host']}, {c['date']}, times {times}"
        try:
            costs = Costs(**fields, notes=(note + (f", scaled x{scale:.4f}" if scale != 1.0 else ""),))
        except ValueError as err:  # a value the format allows but the costs do not (a share of 0 ...)
            raise ProfileError(f"{self.source}: {err}") from None
        return costs.scaled(scale)

    @property
    def canary(self) -> list[float] | None:
        """The canary's seconds per world rank when the profile was taken (None: not recorded)."""
        found = self.data.get("canary")
        return None if found is None else [float(t) for t in found["seconds"]]

    def _times(self, table: dict, op: str, times: str) -> list[float]:
        try:
            return [float(s[op][times]) for s in table["stages"]]
        except KeyError:
            raise ProfileError(f"{self.source}: layout ranks={table['ranks']} chunks={table['chunks']} microbatches="
                               f"{table['microbatches']} has no {times!r} time for {op}") from None

    def _links(self, ranks: int, schedule: Schedule | None) -> dict[str, Any]:
        """latency and bandwidth for every pipeline link the layout can use."""
        links = self.data["links"]
        measured = {(p["src"], p["dst"]): p for p in links["pairs"]}
        pairs = {(r, (r + 1) % ranks) for r in range(ranks) if ranks > 1}  # looping and V placements
        if schedule is not None:
            where = schedule.stage_to_rank
            pairs |= {(where[s], where[s + 1]) for s in range(len(where) - 1) if where[s] != where[s + 1]}
        latency, bandwidth = {}, {}
        for a, b in sorted(pairs):
            link = measured.get((a, b)) or measured.get((b, a)) or links
            latency[a, b], bandwidth[a, b] = link["latency"], _bandwidth(link["bandwidth"])
        if not pairs:
            return {"latency": links["latency"], "bandwidth": _bandwidth(links["bandwidth"])}
        return {"latency": latency, "bandwidth": bandwidth}

    def _placement(self, ranks: int, dp: int) -> dict[str, Any]:
        """Where the world ranks of the layout live (replica k's rank r is world rank k * ranks + r)."""
        node_of = self.conditions.get("node_of")
        if node_of is not None and len(node_of) >= ranks * dp:
            return {"node_of": tuple(node_of[:ranks * dp])}
        return {"ranks_per_node": self.conditions["ranks_per_node"]}


def recut(table: dict[str, Any], layers: Sequence[int], source: str = "costs.json") -> dict[str, Any]:
    """A layout's table with its model stages cut again into ``layers`` layers each.

    Each layer of a profiled stage is taken to cost a share of that stage's op times,
    memory and gradient bytes in proportion to its count (the stage's layers alike, as
    the built-in models' are); a new stage sums its layers. The activation crossing a new
    boundary is the profiled one at that layer, or the one leaving its profiled stage."""
    have = table.get("layers")
    if have is None:
        raise ProfileError(f"{source}: layout ranks={table['ranks']} chunks={table['chunks']} microbatches="
                           f"{table['microbatches']} does not say its layers per stage; profile again to re-cut it")
    if len(layers) != len(have) or sum(layers) != sum(have) or min(layers) < 1:
        raise ProfileError(f"{source}: cannot cut {sum(have)} layers in {len(have)} stages as {list(layers)}")
    owner = [k for k, n in enumerate(have) for _ in range(n)]  # profiled stage of each layer
    ends = [sum(have[:k + 1]) for k in range(len(have))]

    def share(value: float, k: int) -> float:
        return value / have[k]

    stages, start = [], 0
    for n in layers:
        mine = owner[start:start + n]
        stage: dict[str, Any] = {op: {t: sum(share(table["stages"][k][op][t], k) for k in mine)
                                      for t in set.intersection(*(set(table["stages"][k][op]) for k in mine))}
                                 for op in OPS}
        if all("memory" in table["stages"][k] for k in mine):
            stage["memory"] = {op: sum(share(table["stages"][k]["memory"][op], k) for k in mine) for op in OPS}
        stage["grad_bytes"] = sum(share(table["stages"][k].get("grad_bytes", 0.0), k) for k in mine)
        stages.append(stage)
        start += n
    crossing = table["boundary_bytes"]
    cuts = [sum(layers[:s + 1]) for s in range(len(layers) - 1)]
    boundary = [crossing[ends.index(c)] if c in ends else crossing[min(owner[c - 1], len(crossing) - 1)]
                for c in cuts]
    return {**table, "stages": stages, "boundary_bytes": boundary, "layers": list(layers)}


def _ratio(layout: dict, times: str) -> float:
    """Mean over stages and ops of ``times`` over alone (nan where not measured)."""
    ratios = [s[op][times] / s[op]["alone"] for s in layout["stages"] for op in ("F", "B", "I", "W")
              if times in s[op] and s[op]["alone"] > 0]
    return sum(ratios) / len(ratios) if ratios else float("nan")


def _slices(found: dict | None) -> dict[str, Any]:
    """Costs.cores and Costs.slice_s where the profile saw ranks taken off their cores."""
    if not found or found.get("slice_s") is None:
        return {}
    return {"cores": int(found["cores"]), "slice_s": float(found["slice_s"])}


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _bandwidth(value: float | None) -> float:
    return math.inf if value is None else float(value)


def _memory(stages: list[dict]) -> dict[str, Any]:
    """act_memory per stage (what F holds) and W's share of a split backward's frees."""
    held = [float(s["memory"]["F"]) for s in stages]
    split = sum(s["memory"]["I"] + s["memory"]["W"] for s in stages)
    w = sum(s["memory"]["W"] for s in stages) / split if split > 0 else 0.5
    return {"act_memory": held, "w_memory_fraction": w}


def _ring(table: dict) -> dict[str, float]:
    """dp_latency and dp_bandwidth from the all-reduce times: a ring of d moves
    2 (d - 1) / d * grad_bytes in 2 (d - 1) steps (see :mod:`simulator.costs`)."""
    d = table["dp"]
    moved = [2 * (d - 1) / d * s.get("grad_bytes", 0.0) for s in table["stages"]]
    fit = fit_link(moved, table["allreduce"], "all-reduce")
    return {"dp_latency": fit.latency / (2 * (d - 1)), "dp_bandwidth": fit.bandwidth}
