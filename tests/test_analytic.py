"""Closed forms of REFERENCE.md, and the builders checked against the papers' counts:
1F1B warm-up p - r - 1, ZB-H1's in-flight activations equal to 1F1B's, ZB-V's bubble."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import schedules
from schedules import OpKind, analytic

F, B, I, W = OpKind.F, OpKind.B, OpKind.I, OpKind.W
UNIT = {F: 1.0, I: 1.0, W: 1.0}


@pytest.mark.parametrize("name, p, m, v, expected", [
    ("naive", 4, 8, 1, 4 * 8 * 3),
    ("gpipe", 4, 8, 1, 11 * 3),
    ("1f1b", 4, 2, 1, 5 * 3),
    ("interleaved-1f1b", 4, 8, 2, 19 * 3),
    ("zb-h1", 4, 8, 1, 3 * 8 + 3),
])
def test_makespan_examples(name, p, m, v, expected) -> None:
    assert analytic.makespan(name, p, m, v) == expected


@given(st.integers(1, 64), st.integers(1, 512))
def test_bubble_fractions_of_reference(p: int, m: int) -> None:
    # The share of rank-time idle, 1 - busy / (p * makespan), not Megatron's bubble/ideal.
    assert analytic.bubble_fraction("naive", p, m) == pytest.approx(1 - 1 / p)
    for name in ("gpipe", "1f1b"):
        assert analytic.bubble_fraction(name, p, m) == pytest.approx((p - 1) / (m + p - 1))
    if m % p == 0:
        assert analytic.bubble_fraction("interleaved-1f1b", p, m, 3) == pytest.approx((p - 1) / (3 * m + p - 1))
    if m >= p:
        zb = analytic.bubble_fraction("zb-h1", p, m)
        assert zb == pytest.approx((p - 1) / (3 * m + p - 1))
        # a third of 1F1B's bubble time: (p - 1) units against 3(p - 1)
        assert zb * analytic.makespan("zb-h1", p, m) == pytest.approx(
            analytic.bubble_fraction("1f1b", p, m) * analytic.makespan("1f1b", p, m) / 3)


@pytest.mark.parametrize("args, message", [
    (("zbv", 4, 8, 2), "no closed form"),
    (("interleaved-1f1b", 4, 6, 2), "divisible"),
    (("zb-h1", 4, 3, 1), "microbatches >= ranks"),
    (("1f1b", 0, 3, 1), ">= 1"),
    (("mystery", 2, 2, 1), "no closed form"),
])
def test_no_closed_form_raises(args, message) -> None:
    with pytest.raises(ValueError, match=message):
        analytic.makespan(*args)
    with pytest.raises(ValueError, match=message):
        analytic.bubble_fraction(*args)


def _inflight(ops, done_kinds) -> int:
    """Peak count of microbatches forwarded on a rank and not yet through ``done_kinds``."""
    peak = live = 0
    for op in ops:
        live += (op.kind is F) - (op.kind in done_kinds)
        peak = max(peak, live)
    return peak


@given(st.integers(1, 8), st.integers(1, 16))
def test_1f1b_warm_up_is_p_minus_r_minus_1(p: int, m: int) -> None:
    schedule = schedules.build("1f1b", ranks=p, microbatches=m)
    for rank, ops in enumerate(schedule.ops):
        first_backward = next(i for i, op in enumerate(ops) if op.kind is B)
        # warm-up forwards, then the steady state's first forward, then the first backward
        assert first_backward == min(p - rank - 1, m) + (1 if m > p - rank - 1 else 0)
        assert _inflight(ops, {B}) == analytic.peak_inflight("1f1b", p, m, rank) == min(m, p - rank)


@given(st.integers(1, 8), st.integers(1, 16))
def test_zb_h1_holds_1f1b_activations(p: int, m: int) -> None:
    one_f_one_b = schedules.build("1f1b", ranks=p, microbatches=m)
    zb = schedules.build("zb-h1", ranks=p, microbatches=m)
    for rank in range(p):
        # forwarded and not yet input-backwarded: exactly 1F1B's count on every rank
        assert _inflight(zb.ops[rank], {I}) == _inflight(one_f_one_b.ops[rank], {B}) == min(m, p - rank)
        # forwarded and W not yet done (what the W pass still needs): 1F1B's first rank, min(m, p)
        assert _inflight(zb.ops[rank], {W}) == min(m, p)


def _bubble_units(name: str, p: int, m: int) -> float:
    """Idle time per rank, in units of one op, of the async unit-cost dry run."""
    schedule = schedules.build(name, ranks=p, microbatches=m)
    span = schedules.dry_run(schedules.validate(schedule, "async"), durations=UNIT).makespan
    return span - analytic.busy_per_rank(name, p, m, schedule.chunks)


@pytest.mark.parametrize("m", [3, 4, 8, 16, 32])
def test_zbv_bubble_is_p_minus_1_units_on_two_ranks(m: int) -> None:
    # With t_f = t_i = t_w, ZB-V idles p - 1 units per rank whatever m: ZB-H1's bubble
    # time spread over twice the work (torch's ScheduleZBVZeroBubble, same op order).
    assert _bubble_units("zbv", 2, m) == 1


@pytest.mark.parametrize("p, m", [(3, 6), (4, 8), (4, 32), (8, 32)])
def test_zbv_bubble_stays_flat_as_microbatches_grow(p: int, m: int) -> None:
    assert _bubble_units("zbv", p, m) == p - 1
