"""Closed forms for makespan and bubble fraction, uniform stage costs, free communication.

Times are per model stage: for interleaved-1f1b a stage is one chunk, so a rank's share
of the model costs v * t_f forward. The bubble fraction is this project's definition,
1 - busy / (p * makespan), the share of rank-time spent idle; Megatron's paper instead
divides the bubble by the ideal time ((p - 1)/m and (p - 1)/(v m)).

Cases without a closed form raise ValueError instead of guessing.
"""

from __future__ import annotations

__all__ = ["makespan", "bubble_fraction", "busy_per_rank", "peak_inflight"]


def _check(ranks: int, microbatches: int, chunks: int, times: tuple[float, ...]) -> None:
    if ranks < 1 or microbatches < 1 or chunks < 1:
        raise ValueError("ranks, microbatches and chunks must be >= 1")
    if any(not t >= 0 for t in times):
        raise ValueError(f"times must be non-negative numbers, got {times}")


def busy_per_rank(name: str, ranks: int, microbatches: int, chunks: int = 1,
                  t_f: float = 1.0, t_i: float = 1.0, t_w: float = 1.0) -> float:
    """Compute time of one rank in one step: every microbatch through its stages."""
    v = chunks if name in ("interleaved-1f1b", "zbv") else 1
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
    if name == "zb-h1":
        if m < p:
            raise ValueError("zb-h1: the closed form needs microbatches >= ranks")
        # W passes can only fill the cool-down gaps if none is longer than the F or I it
        # stands in for; checked against the dry run over a grid of cost ratios.
        if t_w > min(t_f, t_i):
            raise ValueError("zb-h1: the closed form needs t_w <= min(t_f, t_i)")
        return m * (t_f + t_b) + (p - 1) * (t_f + t_i - t_w)
    raise ValueError(f"no closed form for schedule {name!r}")


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
    raise ValueError(f"no closed form for peak activations of {name!r}")
