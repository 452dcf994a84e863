"""Per-op costs: the op lists against the FLOPs model, the tensor-parallel collectives, and
each op's time against its closed form (roofline GEMM, HBM-bound op, ring collectives)."""

from __future__ import annotations

import dataclasses

import pytest

from planner import GPUS, LINKS, MODELS, TransformerSpec
from planner.hardware import Gpu, Link
from planner.ops import (COLLECTIVES, Op, PhaseTimes, embedding_ops, head_ops, layer_ops, layer_times, op_time,
                         phase_times)

GPT3 = MODELS["gpt3-175b"]
LLAMA = MODELS["llama2-70b"]
GPU = Gpu("test", peak_flops=100e12, memory_bytes=80e9, hbm_bandwidth=1e12, gemm_efficiency=0.5,
          hbm_efficiency=0.8, kernel_overhead=2e-6)
LINK = Link("test", bandwidth=1e9, latency=1e-6)


def _flops(ops, kind="gemm") -> float:
    return sum(op.flops for op in ops if op.kind == kind)


def _names(ops, kind) -> list[str]:
    return [op.name for op in ops if op.kind == kind]


@pytest.mark.parametrize("spec", [GPT3, LLAMA], ids=["gpt3", "llama2-70b"])
@pytest.mark.parametrize("tp", [1, 8])
def test_gemm_flops_are_the_transformer_flops_over_t(spec, tp):
    spec = dataclasses.replace(spec, microbatch_size=2)
    ops = layer_ops(spec, tp)
    i, w = spec.layer_backward_flops()
    assert _flops(ops["F"]) == pytest.approx(spec.layer_forward_flops() / tp, rel=1e-12)
    assert _flops(ops["I"]) == pytest.approx(i / tp, rel=1e-12)
    assert _flops(ops["W"]) == pytest.approx(w / tp, rel=1e-12)


@pytest.mark.parametrize("recompute", ["selective", "full"])
def test_recomputation_runs_before_the_input_gradients(recompute):
    base, again = layer_ops(GPT3, 8), layer_ops(GPT3, 8, recompute=recompute)
    rerun = [op for op in again["I"] if op.name.startswith("recompute:")]
    assert again["I"][:len(rerun)] == tuple(rerun)  # first, then the backward
    assert again["F"] == base["F"] and again["W"] == base["W"]
    i = GPT3.layer_backward_flops(recompute)[0]
    assert _flops(again["I"]) == pytest.approx(i / 8, rel=1e-12)
    if recompute == "full":  # the rerun forward all-reduces again
        assert len(_names(again["I"], "all-reduce")) == 4
    else:  # the attention core: no weights, no collective
        assert {op.name for op in rerun} == {"recompute:scores", "recompute:softmax", "recompute:attention-dropout",
                                             "recompute:context"}


def test_two_all_reduces_forward_and_backward_or_reduce_scatter_and_all_gather_with_sp():
    T, h = GPT3.tokens, GPT3.hidden
    plain, sp = layer_ops(GPT3, 4), layer_ops(GPT3, 4, sequence_parallel=True)
    for phase in ("F", "I"):
        assert len(_names(plain[phase], "all-reduce")) == 2
        assert not _names(plain[phase], "reduce-scatter") and not _names(plain[phase], "all-gather")
        assert len(_names(sp[phase], "reduce-scatter")) == 2 and len(_names(sp[phase], "all-gather")) == 2
        assert not _names(sp[phase], "all-reduce")
        assert {op.bytes for op in plain[phase] + sp[phase] if op.kind in COLLECTIVES} == {2.0 * T * h}
    assert not any(op.kind in COLLECTIVES for op in plain["W"])
    # sequence parallelism keeps the norms' outputs sharded: the weight gradients gather them again
    assert _names(sp["W"], "all-gather") == ["all-gather-1-wgrad", "all-gather-2-wgrad"]
    assert not any(op.kind in COLLECTIVES for phase in "FIW" for op in layer_ops(GPT3, 1, True)[phase])


def test_sequence_parallelism_shards_the_norms_and_dropouts():
    plain, sp = layer_ops(GPT3, 8)["F"], layer_ops(GPT3, 8, sequence_parallel=True)["F"]
    by_name = {op.name: op.bytes for op in sp}
    for op in plain:
        if op.name.startswith(("norm", "dropout-add")):
            assert by_name[op.name] == pytest.approx(op.bytes / 8)
    assert by_name["softmax"] == {op.name: op.bytes for op in plain}["softmax"]  # heads were split already


def test_ring_collectives_on_the_intra_node_link():
    """Ring all-reduce over t ranks: 2 (t - 1)/t x bytes / bandwidth + 2 (t - 1) x latency;
    reduce-scatter and all-gather: (t - 1)/t x bytes / bandwidth + (t - 1) x latency."""
    nbytes = 8e6
    assert op_time(Op("ar", "all-reduce", 0, nbytes), GPU, LINK, 4) == pytest.approx(2 * 3 / 4 * 8e6 / 1e9 + 6e-6)
    for kind in ("reduce-scatter", "all-gather"):
        assert op_time(Op("x", kind, 0, nbytes), GPU, LINK, 4) == pytest.approx(3 / 4 * 8e6 / 1e9 + 3e-6)
    rs_ag = sum(op_time(Op("x", k, 0, nbytes), GPU, LINK, 8) for k in ("reduce-scatter", "all-gather"))
    assert rs_ag == pytest.approx(op_time(Op("ar", "all-reduce", 0, nbytes), GPU, LINK, 8))  # same wire time
    assert op_time(Op("ar", "all-reduce", 0, nbytes), GPU, LINK, 1) == 0.0


def test_a_gemm_is_the_longer_of_its_flops_and_its_bytes():
    big = Op("big", "gemm", flops=2 * 8192 ** 3, bytes=2 * 3 * 8192 ** 2)  # intensity 2731 FLOP/byte
    assert op_time(big, GPU, LINK, 1) == pytest.approx(2 * 8192 ** 3 / 50e12 + 2e-6)
    thin = Op("thin", "gemm", flops=2 * 4096 * 4096 * 64, bytes=2 * (2 * 4096 * 64 + 4096 * 4096))  # K = 64
    assert op_time(thin, GPU, LINK, 1) == pytest.approx(thin.bytes / 0.8e12 + 2e-6)  # memory-bound
    assert op_time(Op("ln", "memory", 0, 4e6), GPU, LINK, 1) == pytest.approx(4e6 / 0.8e12 + 2e-6)
    # small GEMMs run further from peak: a GEMM whose FLOPs take as long as the overhead
    # (1e8 FLOPs at 50 TFLOP/s = 2 us) reaches half the large-GEMM share, 0.25 of peak
    share = [n / (op_time(Op("g", "gemm", n, 0), GPU, LINK, 1) * 100e12) for n in (1e8, 1e9, 1e10, 1e11)]
    assert share == sorted(share) and share[0] == pytest.approx(0.25) and share[-1] == pytest.approx(0.5 / 1.001)


def test_the_per_head_attention_gemms_are_memory_bound_on_an_a100():
    a100, nvlink = GPUS["a100-80gb"], LINKS["nvlink"]
    scores = next(op for op in layer_ops(GPT3, 8)["F"] if op.name == "scores")
    assert scores.bytes / a100.hbm_bytes > scores.flops / a100.gemm_flops
    qkv = next(op for op in layer_ops(GPT3, 8)["F"] if op.name == "qkv")
    assert op_time(qkv, a100, nvlink, 8) == pytest.approx(qkv.flops / a100.gemm_flops + a100.kernel_overhead)


def test_stage_ends():
    T, h = GPT3.tokens, GPT3.hidden
    head = head_ops(GPT3, 8)
    V = GPT3.padded_vocab(8) / 8
    assert _flops(head["F"]) == _flops(head["W"]) == _flops(head["I"]) == pytest.approx(2 * T * h * V)
    assert len(_names(head["I"], "all-reduce")) == 1 and not _names(head["F"], "all-reduce")
    embed = embedding_ops(GPT3, 8)
    assert embed["I"] == () and _flops(embed["F"]) == 0.0  # a lookup; its gradient is a scatter-add (W)
    assert len(_names(embed["F"], "all-reduce")) == 1 and embed["W"]


def test_phase_times_add_up_and_split_out_communication():
    ops = layer_ops(GPT3, 8, sequence_parallel=True)
    times = phase_times(ops, GPU, LINK, 8)
    assert times.f == pytest.approx(sum(op_time(op, GPU, LINK, 8) for op in ops["F"]))
    assert times.comm[0] == pytest.approx(sum(op_time(op, GPU, LINK, 8) for op in ops["F"] if op.kind in COLLECTIVES))
    assert 0 < times.comm[2] < times.comm[1] < times.i  # W: the two re-gathers; I: two of each
    assert layer_times(GPT3, GPU, LINK, 8, True) == times
    doubled = times + times
    assert (doubled.f, doubled.comm) == (pytest.approx(2 * times.f), tuple(pytest.approx(2 * c) for c in times.comm))
    assert times.scaled(3).w == pytest.approx(3 * times.w)
    assert isinstance(PhaseTimes(1.0, 2.0, 3.0).comm, tuple)


def test_input_gradients_cost_more_than_weight_gradients():
    """I carries the attention core's backward, every memory-bound op's backward and the
    collectives; W only the weight GEMMs: the zero-bubble paper measures T_B about 2 T_W."""
    small = TransformerSpec("1.5B", layers=22, hidden=2304, heads=24, seq=1024, vocab=32004, microbatch_size=6)
    t = layer_times(small, GPUS["a100-80gb"], LINKS["nvlink"])
    assert t.i > t.f > t.w
