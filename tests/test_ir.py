"""The op record: torch's action syntax both ways, and the errors for what it cannot hold."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schedules import Op, OpKind, Schedule, ScheduleError
from schedules.ir import Transfer, peer_stage

PLAIN = [kind for kind in OpKind if kind is not OpKind.OVERLAP_F_B]


@st.composite
def plain_ops(draw) -> Op:
    kind = draw(st.sampled_from(PLAIN))
    stage = draw(st.integers(0, 10_000))
    mb = None if kind is OpKind.REDUCE_GRAD else draw(st.integers(0, 10_000))
    return Op(kind, stage, mb)


@st.composite
def pairs(draw) -> Op:
    f, b = (Op(kind, draw(st.integers(0, 999)), draw(st.integers(0, 999))) for kind in (OpKind.F, OpKind.B))
    return Op.overlap(f, b)


@given(st.one_of(plain_ops(), pairs()))
def test_str_parse_round_trip(op: Op) -> None:
    assert Op.parse(str(op)) == op


@given(plain_ops())
def test_str_is_torch_syntax(op: Op) -> None:
    mb = "" if op.mb is None else str(op.mb)
    assert str(op) == f"{op.stage}{op.kind.value}{mb}"


def test_overlap_pair_is_written_as_torch_writes_it() -> None:
    op = Op.parse("(0F7;7B3)OVERLAP_F_B")
    assert op.kind is OpKind.OVERLAP_F_B and op.parts == (Op(OpKind.F, 0, 7), Op(OpKind.B, 7, 3))
    assert (op.stage, op.mb) == (0, 7)  # the forward's
    assert str(op) == "(0F7;7B3)OVERLAP_F_B"


@pytest.mark.parametrize("text", ["(0B7;7F3)OVERLAP_F_B", "(0F7;7I3)OVERLAP_F_B", "(0F7)OVERLAP_F_B", "(0F7;7B3)"])
def test_overlap_pair_errors_are_one_line(text: str) -> None:
    with pytest.raises(ScheduleError) as err:
        Op.parse(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, op", [
    ("2F0", Op(OpKind.F, 2, 0)),
    ("0B3", Op(OpKind.B, 0, 3)),
    ("1I2", Op(OpKind.I, 1, 2)),
    ("1W2", Op(OpKind.W, 1, 2)),
    ("2SEND_F0", Op(OpKind.SEND_F, 2, 0)),
    ("3RECV_B1", Op(OpKind.RECV_B, 3, 1)),
    ("12SEND_B34", Op(OpKind.SEND_B, 12, 34)),
    ("0REDUCE_GRAD", Op(OpKind.REDUCE_GRAD, 0)),
    (" 4RECV_F7 ", Op(OpKind.RECV_F, 4, 7)),
])
def test_parse_examples(text: str, op: Op) -> None:
    assert Op.parse(text) == op


@pytest.mark.parametrize("text, words", [
    ("0UNSHARD", ["UNSHARD", "not part of this IR"]),
    ("3RESHARD", ["RESHARD", "not part of this IR"]),
    ("1OVERLAP_F_B", ["cannot parse"]),
    ("hello", ["cannot parse", "'hello'"]),
    ("F0", ["cannot parse"]),
    ("0X1", ["cannot parse"]),
    ("-1F0", ["cannot parse"]),
    ("0F", ["needs a microbatch"]),
    ("0SEND_F", ["needs a microbatch"]),
    ("0REDUCE_GRAD1", ["takes no microbatch"]),
    ("", ["cannot parse"]),
])
def test_parse_errors(text: str, words: list[str]) -> None:
    with pytest.raises(ScheduleError) as err:
        Op.parse(text)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_op_is_frozen_and_slotted() -> None:
    op = Op(OpKind.F, 0, 0)
    with pytest.raises(AttributeError):
        op.stage = 1  # type: ignore[misc]
    assert not hasattr(op, "__dict__")


def test_kind_classes() -> None:
    assert {k for k in OpKind if k.is_compute} == {OpKind.F, OpKind.B, OpKind.I, OpKind.W, OpKind.OVERLAP_F_B}
    assert {k for k in OpKind if k.is_comm} == {OpKind.SEND_F, OpKind.RECV_F, OpKind.SEND_B, OpKind.RECV_B}
    assert not OpKind.REDUCE_GRAD.is_compute and not OpKind.REDUCE_GRAD.is_comm


@given(st.integers(1, 50), st.integers(0, 50))
def test_a_transfer_is_named_alike_from_both_sides(stage: int, mb: int) -> None:
    # stage's output goes to stage + 1; stage's input gradient goes to stage - 1.
    assert Transfer.of(Op(OpKind.SEND_F, stage - 1, mb)) == Transfer.of(Op(OpKind.RECV_F, stage, mb))
    assert Transfer.of(Op(OpKind.SEND_B, stage, mb)) == Transfer.of(Op(OpKind.RECV_B, stage - 1, mb))
    assert peer_stage(Op(OpKind.SEND_F, stage, mb)) == stage + 1
    assert peer_stage(Op(OpKind.RECV_F, stage, mb)) == stage - 1
    assert peer_stage(Op(OpKind.SEND_B, stage, mb)) == stage - 1
    assert peer_stage(Op(OpKind.RECV_B, stage, mb)) == stage + 1
    with pytest.raises(ValueError):
        Transfer.of(Op(OpKind.F, stage, mb))


@given(st.integers(1, 12), st.integers(1, 9), st.data())
def test_a_transfer_is_one_value_for_every_side(stages: int, m: int, data) -> None:
    """The compute ops a transfer joins name it as its SEND and RECV do; its number is
    unique, the integer numbering the loops over every op use gives the same number, and
    the table the trace pairs rows by agrees with Transfer.of."""
    kind = data.draw(st.sampled_from([OpKind.F, OpKind.B, OpKind.I]))
    stage, mb = data.draw(st.integers(0, stages - 1)), data.draw(st.integers(0, m - 1))
    op = Op(kind, stage, mb)
    recv, send = (OpKind.RECV_F, OpKind.SEND_F) if kind is OpKind.F else (OpKind.RECV_B, OpKind.SEND_B)
    into, out = Transfer.into(op, stages), Transfer.out_of(op, stages)
    assert (into is None) == (stage == (0 if kind is OpKind.F else stages - 1))
    assert (out is None) == (stage == (stages - 1 if kind is OpKind.F else 0))
    if into is not None:
        assert into == Transfer.of(Op(recv, stage, mb)) == Transfer.out_of(Op(kind, into.stage, mb), stages)
    if out is not None:
        assert out == Transfer.of(Op(send, stage, mb)) == Transfer.into(Op(kind, peer_stage(Op(send, stage, mb)), mb),
                                                                        stages)
        assert {out.boundary, out.boundary + 1} == {stage, peer_stage(Op(send, stage, mb))}
    row, offset = Transfer.numbering(stages, m)
    sides = Transfer.sides()
    for comm in (recv, send):
        side = Op(comm, stage, mb)
        transfer = Transfer.of(side)
        assert stage * row + mb + offset[comm] == transfer.number(stages, m)
        assert (transfer.direction, transfer.stage - stage) == sides[comm.value]
    every = [Transfer(d, s, b) for d in "FB" for s in range(stages) for b in range(m)]
    assert sorted(t.number(stages, m) for t in every) == list(range(2 * stages * m))


def test_schedule_checks_its_shape() -> None:
    with pytest.raises(ScheduleError, match="stage_to_rank has 1 entries for 2 stages"):
        Schedule("x", 2, 1, 2, (0,), ((), ()))
    with pytest.raises(ScheduleError, match="ops has 1 rank lists for 2 ranks"):
        Schedule("x", 2, 1, 2, (0, 1), ((),))
    with pytest.raises(ScheduleError, match="outside 0..1"):
        Schedule("x", 2, 1, 2, (0, 2), ((), ()))


def test_schedule_accessors() -> None:
    s = Schedule("x", 2, 1, 4, (0, 1, 1, 0), ([Op(OpKind.F, 0, 0)], []))
    assert s.stages_of(0) == (0, 3) and s.stages_of(1) == (1, 2)
    assert s.chunks == 2
    assert s.num_ops() == 1
    assert list(s) == [(0, Op(OpKind.F, 0, 0))]
    assert isinstance(s.ops, tuple) and isinstance(s.ops[1], tuple)
