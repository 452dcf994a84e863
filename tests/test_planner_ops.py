"""Per-op costs: the op lists against the FLOPs model, the tensor-parallel collectives, and
each op's time against its closed form (roofline GEMM, HBM-bound op, ring collectives)."""

from __future__ import annotations

import dataclasses

import pytest

from planner import GPUS, LINKS, MODELS, TransformerSpec
from planner.hardware import Gpu, Link
from planner.ops import (COLLECTIVES, TILES, Op, PhaseTimes, embedding_ops, gemm_time, head_ops, layer_ops,
                         layer_times, op_time, phase_times)

GPT3 = MODELS["gpt3-175b"]
LLAMA = MODELS["llama2-70b"]
GPU = Gpu("test", peak_flops=100e12, memory_bytes=80e9, hbm_bandwidth=1e12, gemm_efficiency=0.5,
          hbm_efficiency=0.8, kernel_overhead=2e-6)
LINK = Link("test", bandwidth=1e9, latency=1e-6)
WAVES = dataclasses.replace(GPU, sms=10)  # the same GPU with 10 SMs: GEMMs run in waves of tiles


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
    # QKV at tp 8, b = 1: 2048 x 4608 output, k = 12288. In 256 x 128 tiles 8 x 36 = 288 tiles
    # on 108 SMs are 3 waves (2.67 full), in 128 x 128 tiles 576 are 6 (5.33): the big tile wins
    qkv = next(op for op in layer_ops(GPT3, 8)["F"] if op.name == "qkv")
    wave = 108 * (2 * 256 * 128 * 12288 / a100.gemm_flops + 2 * 256 * 128 / a100.hbm_bytes)
    assert op_time(qkv, a100, nvlink, 8) == pytest.approx(3 * wave + a100.kernel_overhead)
    assert op_time(qkv, a100, nvlink, 8) > qkv.flops / a100.gemm_flops * 1.1  # a third wave 2/3 full


def test_a_gemm_runs_in_waves_of_one_tile_per_sm():
    """Hand-worked on 10 SMs at 50 TFLOP/s and 0.8 TB/s: an SM does 5 TFLOP/s and writes 80 GB/s."""
    # 512 x 256 output, k = 1024: 4 tiles of 256 x 128 or 8 of 128 x 128, one wave either way;
    # the small tile takes half as long, 2 x 128 x 128 x 1024 / 5e12 + 2 x 128 x 128 / 8e10
    flat = Op("g", "gemm", 2 * 512 * 256 * 1024, 2 * (512 * 1024 + 1024 * 256 + 512 * 256), (512, 256, 1024, 1, 2))
    assert gemm_time(flat, WAVES) == pytest.approx(6.7108864e-6 + 0.4096e-6)
    assert gemm_time(flat, GPU) == pytest.approx(flat.flops / 50e12)  # no SMs given: the roofline
    assert (256, 128) in TILES and (128, 128) in TILES
    # batched with a short k (the attention's Q K^T): 20 x 256 x 256, k = 64, 80 tiles of
    # 128 x 128 in 8 waves of 0.42 us of FLOPs and 0.41 us of output; the roofline (the output
    # bytes at the HBM rate) would hide the FLOPs behind the writes
    thin = Op("t", "gemm", 2 * 256 * 256 * 64 * 20, 2 * (2 * 256 * 64 + 256 * 256) * 20, (256, 256, 64, 20, 2))
    assert gemm_time(thin, WAVES) == pytest.approx(8 * (2 * 128 * 128 * 64 / 5e12 + 2 * 128 * 128 / 8e10))
    assert gemm_time(thin, WAVES) > thin.bytes / 0.8e12 == gemm_time(thin, GPU)
    # a GEMM that fills whole waves of big tiles runs at the large-GEMM rate plus its output writes
    full = Op("f", "gemm", 2 * 1280 * 1024 * 4096, 0.0, (1280, 1024, 4096, 1, 2))  # 40 tiles of 256 x 128: 4 waves
    assert gemm_time(full, WAVES) == pytest.approx(4 * 10 * (2 * 256 * 128 * 4096 / 50e12 + 2 * 256 * 128 / 0.8e12))


def test_megatron_kernels_outside_the_gemms():
    """QKV's bias is added after its GEMM (the other biases ride in the fused bias-GeLU and
    bias-dropout-add), the attention's output is transposed back to [s, b, h] and, in the
    backward, the Q, K and V gradients are joined into one [s, b, 3h]."""
    T, h = GPT3.tokens, GPT3.hidden
    ops = {op.name: op for phase in "FI" for op in layer_ops(GPT3, 8)[phase]}
    assert ops["qkv-bias"].bytes == 2 * 2 * T * 3 * h / 8 == ops["qkv-split-bwd"].bytes
    assert ops["context-transpose"].bytes == 2 * 2 * T * h / 8 == ops["context-transpose-bwd"].bytes
    assert "qkv-bias" not in {op.name for op in layer_ops(LLAMA, 8)["F"]}  # no biases
    assert "qkv-split-bwd" in {op.name for op in layer_ops(LLAMA, 8)["I"]}


def test_stage_ends():
    T, h = GPT3.tokens, GPT3.hidden
    head = head_ops(GPT3, 8)
    V = GPT3.padded_vocab(8) / 8
    assert _flops(head["F"]) == _flops(head["W"]) == _flops(head["I"]) == pytest.approx(2 * T * h * V)
    assert len(_names(head["I"], "all-reduce")) == 1 and not _names(head["F"], "all-reduce")
    # Megatron-LM's cross-entropy in fp32: cast (2 + 4 bytes a logit), max (4), subtract (8),
    # exp (8), sum (4), divide (8); backward: scale the saved softmax (8), cast back (4 + 2)
    by_name = {op.name: op.bytes for phase in "FI" for op in head[phase]}
    assert by_name["cross-entropy"] == 38 * T * V and by_name["cross-entropy-bwd"] == 14 * T * V
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
