"""Checks a ``costs.json`` document (format in :mod:`simulator.profile`) key by key, so a
bad file fails on load with one line naming the key, not later with a wrong prediction."""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["ProfileError", "check_profile", "FORMAT", "VERSION", "OPS", "TIMES"]

FORMAT, VERSION = "pipebubble-costs", 1
OPS = ("F", "B", "I", "W")
TIMES = ("alone", "run", "run_mean", "sequence", "concurrent")  # how an op was timed: alone required, the rest optional
_CONDITIONS = {"host": str, "ranks": int, "ranks_per_node": int, "threads": int, "dtype": str, "device": str,
               "torch": str, "mpi": str, "date": str, "model": dict}


class ProfileError(ValueError):
    """A costs.json that cannot be read, or that lacks what was asked of it."""


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, what: str):
        raise ProfileError(f"{self.source}: {where} {what}")

    def get(self, obj: Any, key: str, where: str, kind: type) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            self.fail(f"{where}.{key}" if where else key, "is missing")
        value = obj[key]
        if kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
            self.fail(f"{where}.{key}", f"must be a whole number, got {value!r}")
        if kind is not int and kind is not float and not isinstance(value, kind):
            self.fail(f"{where}.{key}", f"must be {kind.__name__}, got {type(value).__name__}")
        if kind is float:
            self.number(value, f"{where}.{key}")
        return value

    def number(self, value: Any, where: str, allow_null: bool = False) -> None:
        if value is None and allow_null:
            return
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
            self.fail(where, f"must be a finite number >= 0, got {value!r}")

    def numbers(self, obj: dict, key: str, where: str, length: int | None = None) -> list:
        values = self.get(obj, key, where, list)
        for i, value in enumerate(values):
            self.number(value, f"{where}.{key}[{i}]")
        if length is not None and len(values) != length:
            self.fail(f"{where}.{key}", f"has {len(values)} values; expected {length}")
        return values

    def known(self, obj: Any, keys, where: str) -> None:
        """Refuse keys the format does not have: a typo (``"latncy"``) would otherwise
        leave a default in place without a word."""
        if isinstance(obj, dict):
            extra = [key for key in obj if key not in keys]
            if extra:
                key = extra[0] if extra[0].isidentifier() else repr(extra[0])  # a key "\n" stays on one line
                self.fail(f"{where}.{key}" if where else key, f"is not a key of the format (it has: {', '.join(keys)})")

    def whole(self, obj: dict, key: str, where: str, least: int = 1) -> int:
        value = self.get(obj, key, where, int)
        if value < least:
            self.fail(f"{where}.{key}", f"must be >= {least}, got {value}")
        return value


DISPATCH = ("compute", "send", "recv")  # host seconds around ops: Costs.dispatch_<key>
# The keys of each object of the format (see simulator.profile), for Checker.known.
_TOP = ("format", "version", "conditions", "canary", "scheduler", "share", "comm_interference", "links", "layouts",
        "dispatch")
_CANARY = ("op", "seconds", "threads", "before", "after")
_SCHEDULER = ("cores", "ranks", "slice_s", "wait_s", "wake_sleeping_s", "wake_spinning_s")
_LINKS, _PAIR = ("latency", "bandwidth", "pairs"), ("src", "dst", "latency", "bandwidth", "bytes", "seconds")
_DISPATCH = DISPATCH + ("schedules", "microbatches", "optimizer", "step")
_LAYOUT = ("ranks", "chunks", "microbatches", "dp", "stages", "layers", "boundary_bytes", "optimizer", "allreduce")
_STAGE = OPS + ("memory", "grad_bytes")


def _dp(data: dict) -> int:
    layouts = data.get("layouts")
    first = layouts[0] if isinstance(layouts, list) and layouts and isinstance(layouts[0], dict) else {}
    dp = first.get("dp", 1)
    return dp if isinstance(dp, int) and not isinstance(dp, bool) and dp > 0 else 1


def check_profile(data: Any, source: str) -> None:
    """Raise :class:`ProfileError` unless ``data`` is a costs.json document of this version."""
    c = _Checker(source)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        c.fail("format", f"must be {FORMAT!r}: not a costs.json written by `python -m executor profile`")
    if data.get("version") != VERSION:
        c.fail("version", f"is {data.get('version')!r}; this simulator reads version {VERSION}")
    c.known(data, _TOP, "")
    conditions = c.get(data, "conditions", "", dict)
    c.known(conditions, (*_CONDITIONS, "node_of"), "conditions")
    for key, kind in _CONDITIONS.items():
        c.get(conditions, key, "conditions", kind)
    if "node_of" in conditions:
        c.numbers(conditions, "node_of", "conditions", conditions["ranks"])
    share = c.numbers(data, "share", "")
    if not share or any(rate == 0 for rate in share):
        c.fail("share", "needs a rate > 0 for each k = 1 .. ranks_per_node")
    if c.get(data, "comm_interference", "", float) >= 1:
        c.fail("comm_interference", "must be below 1")
    _check_links(c, c.get(data, "links", "", dict))
    if "scheduler" in data:
        found = c.get(data, "scheduler", "", dict)
        c.known(found, _SCHEDULER, "scheduler")
        c.whole(found, "cores", "scheduler")
        c.whole(found, "ranks", "scheduler")
        c.number(found.get("slice_s", "missing"), "scheduler.slice_s", allow_null=True)
        if found.get("slice_s") == 0:
            c.fail("scheduler.slice_s", "must be > 0 or null")
        for key in ("wait_s", "wake_sleeping_s", "wake_spinning_s"):
            c.get(found, key, "scheduler", float)
    if "canary" in data:
        found = c.get(data, "canary", "", dict)
        c.known(found, _CANARY, "canary")
        c.get(found, "op", "canary", str)
        if not c.numbers(found, "seconds", "canary"):
            c.fail("canary.seconds", "is empty")
    if "dispatch" in data:
        dispatch = c.get(data, "dispatch", "", dict)
        c.known(dispatch, _DISPATCH, "dispatch")
        for key in DISPATCH:
            c.get(dispatch, key, "dispatch", float)
        if "schedules" in dispatch and not all(isinstance(name, str) for name in c.get(dispatch, "schedules",
                                                                                       "dispatch", list)):
            c.fail("dispatch.schedules", "must be a list of schedule names")
        if "microbatches" in dispatch:  # the runs' m: one, or one per layout the runs covered
            found = dispatch["microbatches"]
            counts = found if isinstance(found, list) else [found]
            if not counts or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
                c.fail("dispatch.microbatches", f"must be a whole number >= 1 or a list of them, got {found!r}")
        for key in ("optimizer", "step"):  # optional: per pipeline rank, from the same runs
            if key in dispatch:
                c.numbers(dispatch, key, "dispatch", conditions["ranks"] // max(1, _dp(data)))
    layouts = c.get(data, "layouts", "", list)
    if not layouts:
        c.fail("layouts", "is empty: nothing was profiled")
    for n, layout in enumerate(layouts):
        _check_layout(c, layout, f"layouts[{n}]")
    _check_link_ranks(c, data["links"]["pairs"], max(layout["ranks"] for layout in layouts))


def _check_links(c: _Checker, links: dict) -> None:
    c.known(links, _LINKS, "links")
    c.get(links, "latency", "links", float)
    c.number(links.get("bandwidth", "missing"), "links.bandwidth", allow_null=True)
    for n, pair in enumerate(c.get(links, "pairs", "links", list)):
        where = f"links.pairs[{n}]"
        c.known(pair, _PAIR, where)
        c.whole(pair, "src", where, 0), c.whole(pair, "dst", where, 0), c.get(pair, "latency", where, float)
        c.number(pair.get("bandwidth", "missing"), f"{where}.bandwidth", allow_null=True)
        if "bytes" in pair or "seconds" in pair:
            c.numbers(pair, "seconds", where, len(c.numbers(pair, "bytes", where)))


def _check_link_ranks(c: _Checker, pairs: list, ranks: int) -> None:
    """A link joins two pipeline ranks of a layout profiled (a pair naming another would be
    ignored by every prediction)."""
    for n, pair in enumerate(pairs):
        for end in ("src", "dst"):
            if pair[end] >= ranks:
                c.fail(f"links.pairs[{n}].{end}", f"is rank {pair[end]}, but no layout has more than {ranks} "
                       f"pipeline ranks (0..{ranks - 1})")
        if pair["src"] == pair["dst"]:
            c.fail(f"links.pairs[{n}]", f"joins rank {pair['src']} to itself")


def _check_layout(c: _Checker, layout: Any, where: str) -> None:
    c.known(layout, _LAYOUT, where)
    ranks, chunks = c.whole(layout, "ranks", where), c.whole(layout, "chunks", where)
    c.whole(layout, "microbatches", where)
    dp = c.whole(layout, "dp", where)
    stages = c.get(layout, "stages", where, list)
    if len(stages) != ranks * chunks:
        c.fail(f"{where}.stages", f"has {len(stages)} entries; expected ranks * chunks = {ranks * chunks}")
    for s, stage in enumerate(stages):
        at = f"{where}.stages[{s}]"
        c.known(stage, _STAGE, at)
        for op in OPS:
            c.get(c.get(stage, op, at, dict), "alone", f"{at}.{op}", float)
            c.known(stage[op], TIMES, f"{at}.{op}")
            for optional in TIMES[1:]:
                if optional in stage[op]:
                    c.get(stage[op], optional, f"{at}.{op}", float)
        if "memory" in stage:
            c.known(c.get(stage, "memory", at, dict), OPS, f"{at}.memory")
            for op in OPS:
                c.get(c.get(stage, "memory", at, dict), op, f"{at}.memory", float)
        if "grad_bytes" in stage:
            c.get(stage, "grad_bytes", at, float)
    if "layers" in layout:
        counts = c.get(layout, "layers", where, list)
        if len(counts) != ranks * chunks or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
            c.fail(f"{where}.layers", f"must be {ranks * chunks} whole numbers >= 1, got {counts!r}")
    c.numbers(layout, "boundary_bytes", where, ranks * chunks - 1)
    c.numbers(layout, "optimizer", where, ranks)
    if dp > 1:
        c.numbers(layout, "allreduce", where, ranks * chunks)
