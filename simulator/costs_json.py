"""``costs.json``, version 1: its typed schema, the one both its writer and its reader use.

``mpiexec -n P python -m executor profile … --out DIR`` builds a :class:`CostsDocument`
and :meth:`~CostsDocument.save`\\ s it; :meth:`CostsDocument.load` (through
:class:`simulator.Profile`) reads it back. JSON only (never a pickle): a file from
elsewhere is data, not code. Times are seconds, sizes bytes, bandwidths bytes per second;
a ``null`` bandwidth means infinite (latency only: JSON has no inf).

Each record below is one JSON object, each field one key, with its doc. Every key is
required unless its field says *optional*; a *null* one may hold ``null``. The reading
is checked key by key as it is parsed, so a bad file fails on load with one line naming
the key (``layouts[0].stages[1].W.alone is missing``), not later with a wrong
prediction: a whole number where the type is ``int``, a finite number >= 0 where it is
``float``, no key the record does not have (a typo such as ``"latncy"`` would otherwise
leave a default in place without a word), and each record's relations between keys
(:meth:`check`). Saving parses what it writes first: the writer is checked by the reader.
"""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cliguard import UsageError, read_input

from .bounds import JSON_BYTES_PER_BYTE, MEASURED

__all__ = ["FORMAT", "VERSION", "OPS", "TIMES", "DISPATCH", "ProfileError", "CostsDocument", "Conditions", "Canary",
           "Scheduler", "Links", "LinkPair", "Dispatch", "LayoutTable", "StageTable", "OpTimes", "OpMemory"]

FORMAT, VERSION = "pipebubble-costs", 1
OPS = ("F", "B", "I", "W")
TIMES = ("alone", "run", "run_mean", "sequence", "concurrent")  # how an op was timed: alone required
DISPATCH = ("compute", "send", "recv")  # host seconds around ops: Costs.dispatch_<key>


class ProfileError(ValueError):
    """A costs.json that cannot be read, or that lacks what was asked of it."""


def _optional(**rules) -> Any:
    """A key the object may leave out (None here, and not written)."""
    return field(default=None, metadata={"optional": True, **rules})


def _rules(**rules) -> Any:
    return field(metadata=rules)


class _Record:
    """What every record of the format does: relations between its keys, and a dict."""

    __slots__ = ()

    def check(self, reader: _Reader, where: str) -> None:
        """Raise (through ``reader.fail``) where two keys disagree; each record its own."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)
                if not (f.metadata.get("optional") and getattr(self, f.name) is None)}


def _plain(value: Any) -> Any:
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


@dataclass(slots=True)
class OpTimes(_Record):
    """How long one op of one stage took, timed each way the profile times it."""

    alone: float
    """The op alone (the bare layers, other ranks asleep)."""
    run: float | None = _optional()
    """Median in short real runs of reference schedules of this layout (what a run sees)."""
    run_mean: float | None = _optional()
    """The mean of the same ops."""
    sequence: float | None = _optional()
    """Alone, within a whole step's ops in a pipeline order (profiles before ``run``)."""
    concurrent: float | None = _optional()
    """Every rank of the node computing too."""


@dataclass(slots=True)
class OpMemory(_Record):
    """Bytes F allocates and holds, bytes B, I and W each free."""

    F: float
    B: float
    I: float  # noqa: E741
    W: float


@dataclass(slots=True)
class StageTable(_Record):
    """One model stage of a layout."""

    F: OpTimes
    B: OpTimes
    """A fused full backward."""
    I: OpTimes  # noqa: E741
    W: OpTimes
    memory: OpMemory | None = _optional()
    grad_bytes: float | None = _optional()
    """Bytes of the stage's weight gradients."""

    def op(self, kind: str) -> OpTimes:
        return getattr(self, kind)


@dataclass(slots=True)
class LayoutTable(_Record):
    """One (ranks, chunks, microbatches, dp) profiled."""

    ranks: int = _rules(least=1)
    chunks: int = _rules(least=1)
    microbatches: int = _rules(least=1)
    dp: int = _rules(least=1)
    stages: list[StageTable] = _rules()
    """One per model stage s = 0 .. ranks * chunks - 1."""
    boundary_bytes: list[float] = _rules()
    """Activation bytes per microbatch crossing s -> s + 1."""
    optimizer: list[float] = _rules()
    """Optimizer step, one per pipeline rank."""
    layers: list[int] | None = _optional()
    """The model's layers in each stage (for :func:`simulator.profile.recut`)."""
    allreduce: list[float] | None = _optional()
    """dp > 1 only (then required): the gradient all-reduce, one per stage."""

    def check(self, reader: _Reader, where: str) -> None:
        stages = self.ranks * self.chunks
        if len(self.stages) != stages:
            reader.fail(f"{where}.stages", f"has {len(self.stages)} entries; expected ranks * chunks = {stages}")
        if self.layers is not None and (len(self.layers) != stages or any(
                isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.layers)):
            reader.fail(f"{where}.layers", f"must be {stages} whole numbers >= 1, got {self.layers!r}")
        reader.length(self.boundary_bytes, stages - 1, f"{where}.boundary_bytes")
        reader.length(self.optimizer, self.ranks, f"{where}.optimizer")
        if self.dp > 1:
            if self.allreduce is None:
                reader.fail(f"{where}.allreduce", "is missing")
            reader.length(self.allreduce, stages, f"{where}.allreduce")

    @property
    def key(self) -> tuple[int, int, int, int]:
        return self.ranks, self.chunks, self.microbatches, self.dp


@dataclass(slots=True)
class LinkPair(_Record):
    """One pipeline link, ping-pong fitted (:func:`simulator.fit.fit_link`); applies both ways."""

    src: int = _rules(least=0)
    dst: int = _rules(least=0)
    latency: float = _rules()
    bandwidth: float | None = _rules(null=True)
    bytes: list[float] | None = _optional()
    """The samples (optional, with ``seconds``)."""
    seconds: list[float] | None = _optional()

    def check(self, reader: _Reader, where: str) -> None:
        if self.bytes is not None or self.seconds is not None:
            for key in ("bytes", "seconds"):
                if getattr(self, key) is None:
                    reader.fail(f"{where}.{key}", "is missing")
            reader.length(self.seconds, len(self.bytes), f"{where}.seconds")


@dataclass(slots=True)
class Links(_Record):
    """The pipeline links: a fit over all pairs (for links not listed) and each pair's."""

    latency: float
    bandwidth: float | None = _rules(null=True)
    pairs: list[LinkPair] = _rules()


@dataclass(slots=True)
class Conditions(_Record):
    """What the numbers were taken under."""

    host: str
    """Hostname of world rank 0."""
    ranks: int
    """World ranks the profile ran on (pipeline x dp)."""
    ranks_per_node: int
    """World ranks per node, placed in order."""
    threads: int
    """torch threads per rank."""
    dtype: str
    device: str
    torch: str
    """torch.__version__."""
    mpi: str
    """MPI.Get_library_version(), first line."""
    date: str
    """ISO 8601, UTC."""
    model: dict
    """The model flags of the run (model, sizes, batch, compute...)."""
    node_of: list[float] | None = _optional()
    """Node of each world rank, instead of ``ranks_per_node``."""

    def check(self, reader: _Reader, where: str) -> None:
        if self.node_of is not None:
            reader.length(self.node_of, self.ranks, f"{where}.node_of")


@dataclass(slots=True)
class Canary(_Record):
    """One fixed op, timed before and after the profile (:mod:`executor.record.canary`)."""

    op: str
    """What it is."""
    seconds: list[float]
    """Per world rank, the mean of before and after."""
    threads: int | None = _optional()
    """torch threads it ran on."""
    before: list[float] | None = _optional()
    after: list[float] | None = _optional()

    def check(self, reader: _Reader, where: str) -> None:
        if not self.seconds:
            reader.fail(f"{where}.seconds", "is empty")


@dataclass(slots=True)
class Scheduler(_Record):
    """What the OS scheduler did with the node's ranks (medians)."""

    cores: int = _rules(least=1)
    ranks: int = _rules(least=1)
    """The node's cores and ranks."""
    slice_s: float | None = _rules(null=True)
    """A busy rank's run on a core while all ranks are busy (null: none was taken off its core)."""
    wait_s: float = _rules()
    """Its wait for a core then."""
    wake_sleeping_s: float = _rules()
    """How late a waiting rank got back beside busy ones, sleeping as a run waits,"""
    wake_spinning_s: float = _rules()
    """or yielding."""

    def check(self, reader: _Reader, where: str) -> None:
        if self.slice_s == 0:
            reader.fail(f"{where}.slice_s", "must be > 0 or null")


@dataclass(slots=True)
class Dispatch(_Record):
    """Host time around ops (``Costs.dispatch_*``), read off short runs of the schedules named."""

    compute: float
    """Seconds after each compute op (``Costs.dispatch_compute``)."""
    send: float
    """Seconds a SEND takes to post."""
    recv: float
    """Seconds a RECV takes to hand its data over."""
    schedules: list[str] | None = _optional()
    """The schedules whose runs these come from,"""
    microbatches: list[int] | int | None = _optional(least=1)
    """and their microbatch counts: one, or one per layout the runs covered."""
    optimizer: list[float] | None = _optional()
    """Per pipeline rank: the optimizer step in those runs,"""
    step: list[float] | None = _optional()
    """and a step's host time outside its ops."""

    def check(self, reader: _Reader, where: str) -> None:
        if self.schedules is not None and not all(isinstance(name, str) for name in self.schedules):
            reader.fail(f"{where}.schedules", "must be a list of schedule names")
        counts = self.microbatches
        if isinstance(counts, list) and (not counts or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                                                           for n in counts)):
            reader.fail(f"{where}.microbatches", f"must be a whole number >= 1 or a list of them, got {counts!r}")


@dataclass(slots=True)
class CostsDocument(_Record):
    """A whole costs.json."""

    format: str
    version: int
    conditions: Conditions
    share: list[float]
    """Per-rank compute rate while k = 1, 2, ... ranks of a node compute at once: time alone /
    time with k computing (so share[0] = 1), one entry per k = 1 .. ranks_per_node."""
    comm_interference: float
    """Fraction compute slows while the rank's own transfers fly: 1 - time alone / time
    beside its transfers, in [0, 1)."""
    links: Links
    layouts: list[LayoutTable]
    canary: Canary | None = _optional()
    scheduler: Scheduler | None = _optional()
    dispatch: Dispatch | None = _optional()

    def check(self, reader: _Reader, where: str) -> None:
        if not self.share or any(rate == 0 for rate in self.share):
            reader.fail("share", "needs a rate > 0 for each k = 1 .. ranks_per_node")
        if self.comm_interference >= 1:
            reader.fail("comm_interference", "must be below 1")
        if not self.layouts:
            reader.fail("layouts", "is empty: nothing was profiled")
        pipeline = self.conditions.ranks // max(1, self.layouts[0].dp)
        for key in ("optimizer", "step"):  # per pipeline rank, from the same runs
            if self.dispatch is not None and getattr(self.dispatch, key) is not None:
                reader.length(getattr(self.dispatch, key), pipeline, f"dispatch.{key}")
        # A link joins two pipeline ranks of a layout profiled (a pair naming another would
        # be ignored by every prediction).
        ranks = max(layout.ranks for layout in self.layouts)
        for n, pair in enumerate(self.links.pairs):
            for end in ("src", "dst"):
                if getattr(pair, end) >= ranks:
                    reader.fail(f"links.pairs[{n}].{end}", f"is rank {getattr(pair, end)}, but no layout has more "
                                f"than {ranks} pipeline ranks (0..{ranks - 1})")
            if pair.src == pair.dst:
                reader.fail(f"links.pairs[{n}]", f"joins rank {pair.src} to itself")

    @classmethod
    def parse(cls, data: Any, source: str = "costs.json") -> CostsDocument:
        """The document in ``data`` (what json.load gives), checked; else ProfileError."""
        reader = _Reader(source)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            reader.fail("format", f"must be {FORMAT!r}: not a costs.json written by `python -m executor profile`")
        if data.get("version") != VERSION:
            reader.fail("version", f"is {data.get('version')!r}; this simulator reads version {VERSION}")
        return reader.record(cls, data, "")

    @classmethod
    def load(cls, path: str | Path) -> CostsDocument:
        """Read and check a costs.json; any fault of the file raises :class:`ProfileError`
        naming it (and the key, where one is to blame)."""
        try:
            text = read_input(path, "costs file", JSON_BYTES_PER_BYTE, measured_by=MEASURED, kind="a costs.json")
        except UsageError as err:
            raise ProfileError(str(err)) from None
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except ValueError as err:  # JSONDecodeError, NaN/Infinity, an integer of 5000 digits
            raise ProfileError(f"{path} is not a costs.json: {str(err).splitlines()[0]}") from None
        except RecursionError:
            raise ProfileError(f"{path} is not a costs.json: nested deeper than Python can read") from None
        return cls.parse(data, str(path))

    def save(self, path: str | Path) -> None:
        """Write the document, checked as the reader checks it (a fault raises, nothing written)."""
        data = self.to_dict()
        CostsDocument.parse(json.loads(json.dumps(data)), str(path))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")

    def layout(self, ranks: int, chunks: int, microbatches: int, dp: int | None = None) -> list[LayoutTable]:
        """The layouts of these sizes (``dp`` None: of any dp)."""
        return [x for x in self.layouts if (x.ranks, x.chunks, x.microbatches) == (ranks, chunks, microbatches)
                and dp in (None, x.dp)]


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


class _Reader:
    """Parses JSON values into the records above, failing on the first fault with its key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, what: str) -> typing.NoReturn:
        raise ProfileError(f"{self.source}: {where} {what}")

    def record(self, cls: type, obj: dict, where: str) -> Any:
        names = [f.name for f in fields(cls)]
        extra = [key for key in obj if key not in names]
        if extra:
            key = extra[0] if isinstance(extra[0], str) and extra[0].isidentifier() else repr(extra[0])  # one line
            self.fail(_at(where, key), f"is not a key of the format (it has: {', '.join(names)})")
        values = {}
        hints = _hints(cls)
        for item in fields(cls):
            if item.name not in obj:
                if item.metadata.get("optional"):
                    continue
                self.fail(_at(where, item.name), "is missing")
            values[item.name] = self.value(hints[item.name], obj[item.name], _at(where, item.name), item.metadata)
        made = cls(**values)
        made.check(self, where)
        return made

    def value(self, kind: Any, value: Any, where: str, rules: Any = None) -> Any:
        rules = rules or {}
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None, or X | Y | None
            if value is None and rules.get("null"):
                return None
            members = [arg for arg in typing.get_args(kind) if arg is not type(None)]
            for member in members[:-1]:
                if isinstance(value, typing.get_origin(member) or member):
                    return self.value(member, value, where, rules)
            kind = members[-1]  # the last member's error where none fits
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(where, f"must be a whole number, got {value!r}")
            if "least" in rules and value < rules["least"]:
                self.fail(where, f"must be >= {rules['least']}, got {value}")
            return value
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                self.fail(where, f"must be a finite number >= 0, got {value!r}")
            return value
        origin = typing.get_origin(kind) or kind
        if is_dataclass(kind):
            origin = dict
        if not isinstance(value, origin):
            self.fail(where, f"must be {origin.__name__}, got {type(value).__name__}")
        if is_dataclass(kind):
            return self.record(kind, value, where)
        item = (typing.get_args(kind) or (None,))[0]
        if origin is list and (item is float or is_dataclass(item)):
            return [self.value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value  # a str, the model's free-form dict, a list another check reads

    def length(self, values: list, length: int, where: str) -> None:
        if len(values) != length:
            self.fail(where, f"has {len(values)} values; expected {length}")


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)
