"""Every builder, property-based: valid under both semantics, each op once, transfers paired,
and the unit-cost dry run equal to the closed forms of REFERENCE.md."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import schedules
from schedules import COMM_MODES, OpKind, Schedule, ScheduleError, analytic
from schedules.ir import Transfer, is_send

F, B, I, W = OpKind.F, OpKind.B, OpKind.I, OpKind.W
SPLIT = {"zb-h1", "zb-h2", "interleaved-zb", "zbv", "v-half", "v-min", "zb-1p", "zb-2p", "zb-auto"}  # I and W
MIXED = {"dualpipev"}  # full B for some microbatches, I + W for others, pairs overlapped
MANY_CHUNKS = {"interleaved-1f1b", "interleaved-zb", "looped-bfs"}  # any chunk count >= 2


@st.composite
def configs(draw, names=None) -> tuple[str, int, int, int]:
    """A valid (name, ranks, microbatches, chunks): ranks 1..8, microbatches 1..16 (those
    the schedule accepts, e.g. torch's rounds rule), chunks 2..4 where any count works."""
    name = draw(st.sampled_from(names or schedules.names()))
    ranks = draw(st.integers(1, 8))
    chunks = draw(st.integers(2, 4)) if name in MANY_CHUNKS else schedules.default_chunks(name)
    microbatches = draw(st.sampled_from([m for m in range(1, 17) if schedules.registry.accepts(name, ranks, m)]
                                        or [16]))
    if not schedules.registry.accepts(name, ranks, microbatches):  # dualpipev: m >= 2p
        microbatches = 2 * ranks
    return name, ranks, microbatches, chunks


def build(config: tuple[str, int, int, int]) -> Schedule:
    name, ranks, microbatches, chunks = config
    return schedules.build(name, ranks=ranks, microbatches=microbatches, chunks=chunks)


@given(configs())
def test_validates_under_both_semantics(config) -> None:
    schedule = build(config)
    for comm in COMM_MODES:
        lowered = schedules.validate(schedule, comm)
        assert lowered.program.compute_only().ops == schedule.ops  # lowering only adds comm ops
        assert schedules.dry_run(lowered).makespan == 0.0  # untimed, but it finishes


@given(configs())
def test_each_forward_and_backward_exactly_once(config) -> None:
    schedule = build(config)
    name, m = config[0], schedule.num_microbatches
    counts = Counter((part.kind, part.stage, part.mb) for _, op in schedule for part in op.parts)
    everything = {(s, mb) for s in range(schedule.num_stages) for mb in range(m)}
    backward_kinds = (I, W) if name in SPLIT else (B,)
    if name in MIXED:  # each (stage, mb) has a B or an I and a W
        full = {(s, mb) for (k, s, mb) in counts if k is B}
        split = {(s, mb) for (k, s, mb) in counts if k is I}
        assert full | split == everything and not full & split
        assert {(s, mb) for (k, s, mb) in counts if k is W} == split
        backward_kinds = tuple(k for k in (B, I, W) if any(c[0] is k for c in counts))
    else:
        for kind in (F, *backward_kinds):
            assert {(s, mb) for (k, s, mb), n in counts.items() if k is kind} == everything
    assert set(counts.values()) == {1}
    assert {k for k, _, _ in counts} == {F, *backward_kinds}
    for rank, op in schedule:
        assert schedule.stage_to_rank[op.stage] == rank


@given(configs())
def test_sends_and_receives_pair_up(config) -> None:
    schedule = build(config)
    lowered = schedules.validate(schedule)
    sends = Counter(Transfer.of(op) for _, op in lowered if is_send(op.kind))
    recvs = Counter(Transfer.of(op) for _, op in lowered if op.kind.is_comm and not is_send(op.kind))
    where, last = schedule.stage_to_rank, schedule.num_stages - 1
    # Exactly the transfers between stages on different ranks, each sent once, received once.
    expected = {("F", s, mb) for s in range(last) if where[s] != where[s + 1] for mb in range(schedule.num_microbatches)}
    expected |= {("B", s + 1, mb) for _, s, mb in expected}
    assert set(sends) == set(recvs) == expected
    assert set(sends.values()) <= {1} and set(recvs.values()) <= {1}


@given(configs())
def test_sends_right_after_their_producer(config) -> None:
    # The async list: each SEND right after its producer (blocking lists may post later).
    lowered = schedules.validate(build(config))
    for rank_ops in lowered.ops:
        for i, op in enumerate(rank_ops):
            if is_send(op.kind):
                producer = next(o for o in reversed(rank_ops[:i]) if not o.kind.is_comm)
                kinds = (F,) if op.kind is OpKind.SEND_F else (B, I)
                assert any((part.stage, part.mb) == (op.stage, op.mb) and part.kind in kinds for part in producer.parts)


def _unit(t: float) -> dict[OpKind, float]:
    return {F: t, I: t, W: t}


@given(configs(names=["naive", "gpipe", "1f1b", "interleaved-1f1b", "looped-bfs"]),
       st.sampled_from([(1, 1, 1), (1, 2, 3), (3, 1, 1)]))
def test_dry_run_makespan_equals_closed_form(config, costs) -> None:
    name, p, m, v = config
    assume(not (name == "interleaved-1f1b" and m % p) and not (name == "looped-bfs" and m < p))
    t_f, t_i, t_w = costs
    t_b = t_i + t_w
    expected = {
        "naive": m * p * (t_f + t_b),
        "gpipe": (m + p - 1) * (t_f + t_b),
        "1f1b": (m + p - 1) * (t_f + t_b),  # m < p included
        "interleaved-1f1b": (m * v + p - 1) * (t_f + t_b),  # per-chunk costs
        "looped-bfs": (m * v + p - 1) * (t_f + t_b),  # m >= p
    }[name]
    lowered = schedules.validate(build(config), "async")
    assert schedules.dry_run(lowered, durations={F: t_f, I: t_i, W: t_w}).makespan == expected
    assert analytic.makespan(name, p, m, v, t_f, t_i, t_w) == expected


@given(configs(names=["naive", "gpipe", "1f1b"]))
def test_blocking_keeps_the_closed_form_of_single_chunk_schedules(config) -> None:
    # Batched sends and receives meet in the same step for these: rendezvous costs nothing.
    name, p, m, v = config
    lowered = schedules.validate(build(config), "blocking")
    assert schedules.dry_run(lowered, durations=_unit(1)).makespan == analytic.makespan(name, p, m, v)


@given(configs())
def test_blocking_is_never_faster_than_async(config) -> None:
    schedule = build(config)
    spans = {c: schedules.dry_run(schedules.validate(schedule, c), durations={F: 1, I: 2, W: 1}).makespan for c in COMM_MODES}
    assert spans["blocking"] >= spans["async"]


@given(configs(names=["zb-h1"]), st.sampled_from([1, 2]))
def test_zb_h1_makespan(config, t) -> None:
    _, p, m, _ = config
    lowered = schedules.validate(build(config), "async")
    span = schedules.dry_run(lowered, durations=_unit(t)).makespan
    if m >= p:
        assert span == t * (3 * m + p - 1)
        assert analytic.bubble_fraction("zb-h1", p, m, t_f=t, t_i=t, t_w=t) == pytest.approx((p - 1) / (3 * m + p - 1))
    else:  # no closed form; never worse than 1F1B's
        assert span <= t * 3 * (m + p - 1)


def test_zb_h1_example_with_cost_two() -> None:
    # p = 4, m = 8, t_f = t_i = t_w = 2: 2 * (3 * 8 + 4 - 1) = 54
    lowered = schedules.validate(schedules.build("zb-h1", ranks=4, microbatches=8), "async")
    assert schedules.dry_run(lowered, durations=_unit(2)).makespan == 54


@given(configs(), st.sampled_from(COMM_MODES))
def test_reduce_grad_once_per_stage_after_its_last_backward(config, comm) -> None:
    schedule = build(config)
    lowered = schedules.validate(schedule, comm, reduce_grad=True)
    assert lowered.reduce_grad and lowered.schedule is schedule
    assert lowered.program.compute_only().ops == schedule.ops
    assert schedules.validate(lowered.program, comm).ops == lowered.ops  # already lowered: kept as given
    ends = [schedules.batch_ends(rank_ops) for rank_ops in lowered.ops]
    for rank, rank_ops in enumerate(lowered.ops):
        where = {op.stage: i for i, op in enumerate(rank_ops) if op.kind is OpKind.REDUCE_GRAD}
        assert sorted(where) == list(schedule.stages_of(rank))
        for stage, at in where.items():
            last = max(i for i, op in enumerate(rank_ops) for part in op.parts
                       if part.stage == stage and part.kind in (B, W))
            assert at > last
            between = rank_ops[last + 1:at]
            if comm == "async":  # right after the SENDs of that backward
                assert all(is_send(op.kind) or op.kind is OpKind.REDUCE_GRAD for op in between)
            else:  # after the whole batch there: a REDUCE_GRAD never splits a batch
                assert all(op.kind.is_comm or op.kind is OpKind.REDUCE_GRAD for op in between)
                assert at == len(rank_ops) - 1 or not rank_ops[at - 1].kind.is_comm or ends[rank][at - 1] == at


@pytest.mark.parametrize("name", schedules.names())
def test_builders_are_pure(name: str) -> None:
    assert build((name, 4, 8, None)).ops == build((name, 4, 8, None)).ops


@pytest.mark.parametrize("name, ranks, microbatches, chunks, message", [
    ("nope", 2, 2, None, "unknown schedule 'nope'"),
    ("1f1b", 0, 2, None, "ranks must be a whole number >= 1"),
    ("1f1b", 2, 0, None, "microbatches must be a whole number >= 1"),
    ("1f1b", 2, 2, 2, "1f1b: chunks must be 1"),
    ("zbv", 2, 2, 3, "zbv: chunks must be 2"),
    ("interleaved-1f1b", 2, 2, 1, "chunks (model stages per rank) must be >= 2"),
    ("interleaved-1f1b", 4, 9, 2, "microbatches must be divisible by max(1, microbatches // ranks) rounds"),
    ("interleaved-zb", 4, 9, 2, "rounds (torch's rule), got ranks=4, microbatches=9"),
    ("dualpipev", 4, 7, None, "dualpipev: microbatches must be >= 2 [*] ranks"),
    ("looped-bfs", 2, 2, 0, "looped-bfs: chunks (model stages per rank) must be >= 1"),
    ("v-half", 2, 2, 3, "v-half: chunks must be 2"),
])
def test_build_rejects_bad_arguments(name, ranks, microbatches, chunks, message) -> None:
    with pytest.raises(ScheduleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        schedules.build(name, ranks=ranks, microbatches=microbatches, chunks=chunks)


@given(st.integers(1, 8), st.integers(1, 16), st.integers(2, 4))
@settings(max_examples=30)
def test_interleaved_constraint(ranks, microbatches, chunks) -> None:
    # torch 2.13's rule: max(1, m // p) rounds, m a multiple of them (p = 4: m = 5, 6, 10 build)
    if microbatches % max(1, microbatches // ranks):
        with pytest.raises(ScheduleError, match="rounds"):
            schedules.build("interleaved-1f1b", ranks=ranks, microbatches=microbatches, chunks=chunks)
    else:
        schedules.build("interleaved-1f1b", ranks=ranks, microbatches=microbatches, chunks=chunks)


def test_names_and_default_chunks() -> None:
    assert schedules.names() == ["naive", "gpipe", "1f1b", "interleaved-1f1b", "looped-bfs", "zb-h1", "zb-h2",
                                 "interleaved-zb", "zbv", "dualpipev", "v-half", "v-min", "zb-1p", "zb-2p", "zb-auto"]
    assert {n: schedules.default_chunks(n) for n in schedules.names()} == {
        "naive": 1, "gpipe": 1, "1f1b": 1, "interleaved-1f1b": 2, "looped-bfs": 2, "zb-h1": 1, "zb-h2": 1,
        "interleaved-zb": 2, "zbv": 2, "dualpipev": 2, "v-half": 2, "v-min": 2, "zb-1p": 1, "zb-2p": 1, "zb-auto": 1}
