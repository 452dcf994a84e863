"""Closed forms for makespan and bubble fraction, uniform stage costs, free communication.

Times are per model stage: for interleaved-1f1b a stage is one chunk, so a rank's share
of the model costs v * t_f forward. The bubble fraction is this project's definition,
1 - busy / (p * makespan), the share of rank-time spent idle; Megatron's paper instead
divides the bubble by the ideal time ((p - 1)/m and (p - 1)/(v m)).

Cases without a closed form raise ValueError instead of guessing.
"""

from __future__ import annotations

__all__ = ["makespan", "bubble_fraction", "busy_per_rank", "peak_inflight", "longest_span", "CHUNKED"]

# Schedules whose stages are chunks of a rank's share: their times are per chunk.
CHUNKED = frozenset({"interleaved-1f1b", "looped-bfs", "interleaved-zb", "zbv", "dualpipev", "v-half", "v-min"})


def _check(ranks: int, microbatches: int, chunks: int, times: tuple[float, ...]) -> None:
    if ranks < 1 or microbatches < 1 or chunks < 1:
        raise ValueError("ranks, microbatches and chunks must be >= 1")
    if any(not t >= 0 for t in times):
        raise ValueError(f"times must be non-negative numbers, got {times}")


def busy_per_rank(name: str, ranks: int, microbatches: int, chunks: int = 1,
                  t_f: float = 1.0, t_i: float = 1.0, t_w: float = 1.0) -> float:
    """Compute time of one rank in one step: every microbatch through its stages."""
    v = chunks if name in CHUNKED else 1
    return microbatches * v * (t_f + t_i + t_w)


def makespan(name: str, ranks: int, microbatches: int, chunks: int = 1,
             t_f: float = 1.0, t_i: float = 1.0, t_w: float = 1.0) -> float:
    """Step time of the named schedule; t_b = t_i + t_w is the full backward."""
    p, m, v = ranks, microbatches, chunks
    _check(p, m, v, (t_f, t_i, t_w))
    t_b = t_i + t_w
    if name == "naive":
        return m * p * (t_f + t_b)
    if name in ("gpipe", "1f1b"):
        return (m + p - 1) * (t_f + t_b)
    if name == "interleaved-1f1b":
        if m % p:
            raise ValueError("interleaved-1f1b: the closed form needs microbatches divisible by ranks")
        return (m * v + p - 1) * (t_f + t_b)
    if name == "looped-bfs":
        if m < p:
            raise ValueError("looped-bfs: the closed form needs microbatches >= ranks")
        return (m * v + p - 1) * (t_f + t_b)
    if name == "zb-h2":
        _zb_h2_range(p, m, t_f, t_i, t_w)
        if t_i < 2 * t_w:
            raise ValueError("zb-h2: the makespan from 0 has the closed form only for t_i >= 2 t_w "
                             "(else rank p - 1's late start shows; see longest_span)")
        return m * (t_f + t_b) + (p - 1) * (t_f + t_i - 2 * t_w)
    if name == "zb-h1":
        if m < p:
            raise ValueError("zb-h1: the closed form needs microbatches >= ranks")
        # W passes can only fill the cool-down gaps if none is longer than the F or I it
        # stands in for; checked against the dry run over a grid of cost ratios.
        if t_w > min(t_f, t_i):
            raise ValueError("zb-h1: the closed form needs t_w <= min(t_f, t_i)")
        return m * (t_f + t_b) + (p - 1) * (t_f + t_i - t_w)
    raise ValueError(f"no closed form for schedule {name!r}")


def _zb_h2_range(p: int, m: int, t_f: float, t_i: float, t_w: float) -> None:
    # Checked against the dry run over a grid of p, m and cost ratios (tests/test_schedules_new.py).
    if m < 2 * p - 1:
        raise ValueError("zb-h2: the closed form needs microbatches >= 2 ranks - 1")
    if t_w > min(t_f, t_i):
        raise ValueError("zb-h2: the closed form needs t_w <= min(t_f, t_i)")


def longest_span(name: str, ranks: int, microbatches: int, chunks: int = 1,
                 t_f: float = 1.0, t_i: float = 1.0, t_w: float = 1.0) -> float:
    """The zero-bubble paper's cost: the longest span of one rank from its own first op to
    its last (Qi et al. 2024, Table 5), for ZB-H2: m(t_f + t_b) + (p - 1)(t_f + t_i - 2 t_w)."""
    p, m = ranks, microbatches
    _check(p, m, chunks, (t_f, t_i, t_w))
    if name != "zb-h2":
        raise ValueError(f"no closed form for the longest span of {name!r}")
    _zb_h2_range(p, m, t_f, t_i, t_w)
    return m * (t_f + t_i + t_w) + (p - 1) * (t_f + t_i - 2 * t_w)


def bubble_fraction(name: str, ranks: int, microbatches: int, chunks: int = 1,
                    t_f: float = 1.0, t_i: float = 1.0, t_w: float = 1.0) -> float:
    """1 - busy / (p * makespan): the share of rank-time spent idle."""
    span = makespan(name, ranks, microbatches, chunks, t_f, t_i, t_w)
    if span == 0:
        return 0.0
    return 1.0 - busy_per_rank(name, ranks, microbatches, chunks, t_f, t_i, t_w) / span


def peak_inflight(name: str, ranks: int, microbatches: int, rank: int) -> int:
    """Microbatches whose forward ran but whose (input-)backward has not, at the peak, on ``rank``."""
    if name == "naive":
        return 1
    if name == "gpipe":
        return microbatches
    if name in ("1f1b", "zb-h1"):
        return min(microbatches, ranks - rank)
    if name == "zb-h2":
        return min(microbatches, 2 * (ranks - rank) - 1)
    raise ValueError(f"no closed form for peak activations of {name!r}")
