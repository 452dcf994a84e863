"""The flags both simulator commands take, ``python -m simulator`` and ``python -m simulator
sweep``: the costs (each field a flag, ``--costs costs.json`` a profile's layouts,
``--costs-from trace.csv`` a calibration) and ``--comm``, and the costs they give a schedule
(:class:`CostSource`). One module for both, so that neither command imports the other.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
from dataclasses import dataclass, field

import schedules
from cliguard import UsageError, read_input

from .bounds import MEASURED, TRACE_BYTES_PER_BYTE
from .costs import Costs
from .profile import Profile

__all__ = ["add_cost_flags", "costs_from_args", "CostSource"]


def _number_list(text: str) -> float | list[float]:
    """A number, or comma-separated numbers (one per stage)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers, got {text!r}") from None
    return values[0] if len(values) == 1 else values


# flag -> (Costs field, help). Defaults are None so that --costs-from values survive.
_COST_FLAGS = {
    "--t-f": ("t_f", "forward time per stage (s); one value or one per stage, comma-separated"),
    "--t-i": ("t_i", "backward-for-inputs time per stage (s)"),
    "--t-w": ("t_w", "backward-for-weights time per stage (s)"),
    "--t-b": ("t_b", "full (fused) backward time per stage (s); default t_i + t_w"),
    "--act-bytes": ("act_bytes", "activation bytes per microbatch per stage boundary"),
    "--grad-bytes": ("grad_bytes", "gradient bytes per stage (all-reduced when --dp > 1)"),
    "--act-memory": ("act_memory", "activation memory per microbatch per stage (bytes; default 1 = count)"),
}


def add_cost_flags(parser: argparse.ArgumentParser) -> None:
    for flag, (_, text) in _COST_FLAGS.items():
        parser.add_argument(flag, type=_number_list, default=None, help=text)
    parser.add_argument("--bandwidth", type=float, default=None, help="link bandwidth in bytes/s (default: inf)")
    parser.add_argument("--latency", type=float, default=None, help="per-transfer latency in s (default: 0)")
    parser.add_argument("--dp", type=int, default=None, help="data-parallel degree (adds gradient all-reduces)")
    parser.add_argument("--optimizer-time", type=float, default=None, help="optimizer step time in s")
    parser.add_argument("--w-memory-fraction", type=float, default=None,
                        help="share of a stage's activations W holds after I (default 0.5)")
    parser.add_argument("--ranks-per-node", type=int, default=None,
                        help="ranks per node, placed in order (default: one a node)")
    parser.add_argument("--share", type=_number_list, default=None,
                        help="per-rank compute rate with k = 1,2,... ranks of a node busy (default: all 1.0)")
    parser.add_argument("--comm-interference", type=float, default=None,
                        help="fraction compute slows while the rank's own transfers are in flight (default 0)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--costs", metavar="COSTS.json", default=None,
                        help="a profile (`python -m executor profile`): the costs of each layout; flags override")
    source.add_argument("--costs-from", metavar="TRACE.csv", default=None,
                        help="calibrate costs from a measured trace; explicit flags override them")
    parser.add_argument("--comm", default="async", help="async or blocking (sweep: comma-separated)")


@dataclass(frozen=True)
class CostSource:
    """The costs of each schedule as the flags give them: a profile's layout (``--costs``) or
    one set for every schedule (defaults or ``--costs-from``), then the explicit flags."""

    base: Costs
    profile: Profile | None = None
    overrides: dict = field(default_factory=dict)

    def __call__(self, schedule: schedules.Schedule) -> Costs:
        return self.layout(schedule.num_ranks, schedule.chunks, schedule.num_microbatches)

    def layout(self, ranks: int, chunks: int, microbatches: int) -> Costs:
        if self.profile is None:
            return dataclasses.replace(self.base, **self.overrides)
        overrides = dict(self.overrides)
        costs = self.profile.costs(ranks=ranks, chunks=chunks, microbatches=microbatches,
                                   dp=overrides.pop("dp", None))  # --dp picks the layout
        return dataclasses.replace(costs, **overrides)


def costs_from_args(args: argparse.Namespace) -> CostSource:
    base, profile = Costs(), None
    if args.costs:
        profile = Profile.load(args.costs)
    if args.costs_from:
        base = _calibrated(args.costs_from, args.act_bytes)
    fields = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _) in _COST_FLAGS.items()}
    for name in ("bandwidth", "latency", "dp", "optimizer_time", "w_memory_fraction", "ranks_per_node",
                 "comm_interference"):
        fields[name] = getattr(args, name)
    if args.share is not None:
        fields["share"] = tuple(args.share) if isinstance(args.share, list) else (args.share,)
    return CostSource(base, profile, {k: v for k, v in fields.items() if v is not None})


def _calibrated(path: str, act_bytes) -> Costs:
    """Costs calibrated from the measured trace at ``path``; any fault of the file is a
    :class:`UsageError` naming it."""
    import pandas as pd  # only here: loading it takes longer than a whole simulation

    from timeline import check_trace

    from .calibrate import costs_from_trace

    text = read_input(path, "trace", TRACE_BYTES_PER_BYTE, measured_by=MEASURED,
                      kind="a trace CSV")
    try:
        measured = pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError) as err:  # EmptyDataError is a ValueError
        raise UsageError(f"cannot read trace {path!r}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    try:
        return costs_from_trace(check_trace(measured), act_bytes=act_bytes)
    except (ValueError, KeyError) as err:
        raise UsageError(f"trace {path!r}: {str(err).strip(chr(39))}") from None
