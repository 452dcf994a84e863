"""What one GPU spends on each op of a layer, of the embedding and of the LM head.

A Megatron-LM GPT layer on one of t tensor-parallel ranks, one microbatch of b sequences
of s tokens (T = b s tokens, h hidden, a heads of d = h / a, f FFN, e bytes a value), with
Megatron's fused kernels (layer norm, scale-mask-softmax, bias-GeLU, bias-dropout-add):

  forward F   norm; [SP: all-gather]; QKV GEMM (T x h x 3h/t) and its bias, added after it;
              per head Q K^T (s x s x d); softmax; dropout over the b a/t s^2 scores; scores x V
              (s x d x s); the heads transposed back to [s, b, h/t]; output projection (T x
              h/t x h); all-reduce [SP: reduce-scatter]; dropout-add; norm; [SP: all-gather];
              FFN-in (T x h x f/t); GeLU; FFN-out (T x f/t x h); all-reduce [SP:
              reduce-scatter]; dropout-add
  input gradients I   each GEMM's dX (same FLOPs as its forward), the attention core's four
              backward GEMMs, every memory-bound op's backward (the transpose's, and the Q,
              K and V gradients joined into one [s, b, 3h/t]), and the two all-reduces of
              the column-parallel inputs' gradients [SP: a reduce-scatter and an all-gather
              each]; plus what recomputation reruns first (full: F; selective: the core)
  weight gradients W  each GEMM's dW (same FLOPs) and the bias gradients; with SP first the
              all-gathers of the two norms' outputs the QKV and FFN-in weight gradients
              need (sequence parallelism keeps only the sharded output, as in Korthikanti et
              al. 2022 and Megatron-LM)

The memory-bound ops are those Megatron-LM's layer launches, with their bytes as its code
moves them: ColumnParallelLinear adds the QKV bias in a kernel of its own (the projection's,
FFN-in's and FFN-out's have skip_bias_add and ride in the fused bias-GeLU and
bias-dropout-add), the attention's context is permuted back with ``.contiguous()``, and the
split of the QKV output into Q, K and V views becomes a concatenation in the backward.

With sequence parallelism (Korthikanti et al. 2022) norms and dropouts work on T / t
tokens and each all-reduce becomes a reduce-scatter plus an all-gather (the same bytes on
the wire). With grouped-query attention K and V are k d wide; SwiGLU's FFN-in is 2 f wide.

Costs (:func:`op_time`): a GEMM runs in waves of tiles (:func:`gemm_time`: tile and wave
quantization as NVIDIA's "Matrix Multiplication Background User's Guide" describes them,
one tile per SM at a time, a tile's FLOPs at the SM's share of the large-GEMM rate and its
output written after them; never faster than its operands' bytes at the HBM rate); a
memory-bound op its bytes at the HBM rate; each kernel adds the GPU's ``kernel_overhead``.
A collective over the t ranks of a node is a ring on the intra-node link: all-reduce
2 (t - 1)/t x bytes / bandwidth + 2 (t - 1) x latency, reduce-scatter and all-gather half
of that each. The GPU's numbers are in :mod:`planner.hardware`.

No collective overlaps compute (Megatron-LM overlaps the re-all-gathers with the input-
gradient GEMMs where it can; here they are priced in full). Left out: the two all-reduces
of T floats in the vocab-parallel cross-entropy and the embedding-gradient all-reduce
between the first and last stage of a tied model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

from .hardware import Gpu, Link
from .transformer import RECOMPUTE, TransformerSpec

__all__ = ["Op", "PhaseTimes", "PHASES", "COLLECTIVES", "TILES", "layer_ops", "embedding_ops", "head_ops", "gemm_time",
           "op_time",
           "phase_times", "layer_times", "embedding_times", "head_times"]

PHASES = ("F", "I", "W")
COLLECTIVES = ("all-reduce", "reduce-scatter", "all-gather")
_MASK = 1  # bytes of a dropout mask element


@dataclass(frozen=True)
class Op:
    """One kernel or collective of one microbatch on one GPU."""

    name: str
    kind: str
    """gemm, memory, or one of COLLECTIVES."""
    flops: float = 0.0
    bytes: float = 0.0
    """HBM traffic (gemm, memory) or the whole tensor a collective reduces or gathers."""
    dims: tuple[float, float, float, float, int] | None = None
    """A GEMM's (m, n, k, batch, bytes a value): what tiles and waves it runs in."""


def _gemm(name: str, m: float, n: float, k: float, count: float = 1, e: int = 2) -> Op:
    """(m x k) @ (k x n), ``count`` times (batched): 2 m n k FLOPs, each operand read once."""
    return Op(name, "gemm", 2.0 * m * n * k * count, e * (m * k + k * n + m * n) * count, (m, n, k, count, e))


def _memory(name: str, nbytes: float) -> Op:
    return Op(name, "memory", 0.0, float(nbytes))


@dataclass(frozen=True)
class _Shape:
    """The per-rank sizes every op list is written in."""

    T: float  # tokens of the microbatch
    Tn: float  # tokens a norm or dropout sees: T / t with SP, T without
    s: int
    h: int
    heads: float  # b a / t: attention heads x sequences on this rank
    d: int
    qkv: float  # (h + 2 k d) / t
    up: float  # FFN-in width / t (2 f for SwiGLU)
    f: float  # f / t
    vocab: float  # padded V / t
    e: int
    t: int
    sp: bool


def _shape(spec: TransformerSpec, tp: int, sp: bool) -> _Shape:
    T = float(spec.tokens)
    d = spec.hidden // spec.heads
    up = (2 if spec.mlp == "swiglu" else 1) * spec.f
    return _Shape(T, T / tp if sp else T, spec.seq, spec.hidden, spec.microbatch_size * spec.heads / tp, d,
                  (spec.hidden + 2 * spec.kv * d) / tp, up / tp, spec.f / tp, spec.padded_vocab(tp) / tp,
                  spec.dtype_bytes, tp, sp)


def _reduce(c: _Shape, name: str) -> list[Op]:
    """The end of a row-parallel block: all-reduce, or reduce-scatter with SP (none at t = 1)."""
    if c.t == 1:
        return []
    return [Op(name, "reduce-scatter" if c.sp else "all-reduce", 0.0, c.e * c.T * c.h)]


def _gather(c: _Shape, name: str) -> list[Op]:
    """The start of a column-parallel block with SP: all-gather of the sharded tokens."""
    return [Op(name, "all-gather", 0.0, c.e * c.T * c.h)] if c.sp and c.t > 1 else []


def _input_grad_reduce(c: _Shape, name: str) -> list[Op]:
    """The gradient of a column-parallel block's input: all-reduce, or with SP the
    backward of its all-gather, a reduce-scatter (none at t = 1)."""
    if c.t == 1:
        return []
    return [Op(name, "reduce-scatter" if c.sp else "all-reduce", 0.0, c.e * c.T * c.h)]


def _core_forward(c: _Shape) -> list[Op]:
    """Q K^T, softmax, dropout and scores x V of every head on this rank."""
    scores = c.heads * c.s * c.s
    return [_gemm("scores", c.s, c.s, c.d, c.heads, c.e), _memory("softmax", 2 * c.e * scores),
            _memory("attention-dropout", (2 * c.e + _MASK) * scores), _gemm("context", c.s, c.d, c.s, c.heads, c.e)]


def _forward(c: _Shape, swiglu: bool, bias: bool) -> list[Op]:
    e, T, Tn, h = c.e, c.T, c.Tn, c.h
    act = (3 if swiglu else 2) * e * T * c.f  # read the FFN-in output (2f wide for SwiGLU), write f
    qkv_bias = [_memory("qkv-bias", 2 * e * T * c.qkv)] if bias else []  # added after the GEMM, not in it
    return [_memory("norm-1", 2 * e * Tn * h), *_gather(c, "all-gather-1"), _gemm("qkv", T, c.qkv, h, e=e),
            *qkv_bias, *_core_forward(c), _memory("context-transpose", 2 * e * T * h / c.t),
            _gemm("projection", T, h, h / c.t, e=e),
            *_reduce(c, "reduce-1"), _memory("dropout-add-1", (3 * e + _MASK) * Tn * h),
            _memory("norm-2", 2 * e * Tn * h), *_gather(c, "all-gather-2"), _gemm("ffn-in", T, c.up, h, e=e),
            _memory("activation", act), _gemm("ffn-out", T, h, c.f, e=e), *_reduce(c, "reduce-2"),
            _memory("dropout-add-2", (3 * e + _MASK) * Tn * h)]


def _input_grads(c: _Shape, swiglu: bool) -> list[Op]:
    e, T, Tn, h = c.e, c.T, c.Tn, c.h
    scores = c.heads * c.s * c.s
    act = (5 if swiglu else 3) * e * T * c.f  # read inputs and the gradient, write the input gradients
    norm = 5 * e * Tn * h  # dX reads dY and X and writes dX; the scale and shift gradients read dY and X again
    return [_memory("dropout-add-2-bwd", (2 * e + _MASK) * Tn * h), *_gather(c, "all-gather-2-bwd"),
            _gemm("ffn-out-dgrad", T, c.f, h, e=e), _memory("activation-bwd", act),
            _gemm("ffn-in-dgrad", T, h, c.up, e=e), *_input_grad_reduce(c, "reduce-2-bwd"),
            _memory("norm-2-bwd", norm), _memory("dropout-add-1-bwd", (2 * e + _MASK) * Tn * h),
            *_gather(c, "all-gather-1-bwd"), _gemm("projection-dgrad", T, h / c.t, h, e=e),
            _memory("context-transpose-bwd", 2 * e * T * h / c.t),
            _memory("attention-dropout-bwd", (2 * e + _MASK) * scores),
            _gemm("context-dgrad-v", c.s, c.d, c.s, c.heads, e), _gemm("context-dgrad-p", c.s, c.s, c.d, c.heads, e),
            _memory("softmax-bwd", 3 * e * scores),
            _gemm("scores-dgrad-q", c.s, c.d, c.s, c.heads, e), _gemm("scores-dgrad-k", c.s, c.d, c.s, c.heads, e),
            _memory("qkv-split-bwd", 2 * e * T * c.qkv),
            _gemm("qkv-dgrad", T, h, c.qkv, e=e), *_input_grad_reduce(c, "reduce-1-bwd"),
            _memory("norm-1-bwd", norm)]


def _weight_grads(c: _Shape, bias: bool) -> list[Op]:
    e, T, h = c.e, c.T, c.h
    ops = [*_gather(c, "all-gather-1-wgrad"), _gemm("qkv-wgrad", h, c.qkv, T, e=e),
           _gemm("projection-wgrad", h / c.t, h, T, e=e), *_gather(c, "all-gather-2-wgrad"),
           _gemm("ffn-in-wgrad", h, c.up, T, e=e), _gemm("ffn-out-wgrad", c.f, h, T, e=e)]
    if bias:  # each bias gradient reads its output gradient once
        ops.append(_memory("bias-grads", e * T * (c.qkv + c.up + 2 * h)))
    return ops


def layer_ops(spec: TransformerSpec, tp: int = 1, sequence_parallel: bool = False,
              recompute: str = "none") -> dict[str, tuple[Op, ...]]:
    """One layer's ops by phase: F, I (recomputation's rerun first) and W."""
    if recompute not in RECOMPUTE:
        raise ValueError(f"recompute must be one of {', '.join(RECOMPUTE)}, got {recompute!r}")
    c = _shape(spec, tp, sequence_parallel)
    swiglu = spec.mlp == "swiglu"
    forward = _forward(c, swiglu, spec.bias)
    rerun = {"none": [], "selective": _core_forward(c), "full": forward}[recompute]
    return {"F": tuple(forward), "I": tuple([replace(op, name=f"recompute:{op.name}") for op in rerun]
                                            + _input_grads(c, swiglu)),
            "W": tuple(_weight_grads(c, spec.bias))}


def embedding_ops(spec: TransformerSpec, tp: int = 1, sequence_parallel: bool = False) -> dict[str, tuple[Op, ...]]:
    """The first stage's input: a vocab-parallel lookup (each rank writes its shard's rows,
    zeros elsewhere), learned positions added, an all-reduce (SP: reduce-scatter) over the
    ranks, dropout; its only backward is the embedding gradient, a scatter-add (W)."""
    c = _shape(spec, tp, sequence_parallel)
    e, T, Tn, h = c.e, c.T, c.Tn, c.h
    forward = [_memory("embedding-lookup", 2 * e * T * h)]
    if spec.learned_positions:
        forward.append(_memory("position-add", 3 * e * T * h))
    forward += _reduce(c, "embedding-reduce") + [_memory("embedding-dropout", (2 * e + _MASK) * Tn * h)]
    weights = [_memory("embedding-wgrad", 3 * e * T * h)]
    return {"F": tuple(forward), "I": (), "W": tuple(weights)}


def head_ops(spec: TransformerSpec, tp: int = 1, sequence_parallel: bool = False) -> dict[str, tuple[Op, ...]]:
    """The last stage's output: final norm, [SP: all-gather], the vocab-parallel logits GEMM
    (T x h x V/t) and Megatron-LM's vocab-parallel cross-entropy in fp32 over the shard, pass
    by pass as its code runs them: the cast to fp32 (read e, write 4 bytes a logit), the max
    (read 4), the subtraction of the max into a new tensor (read 4, write 4), exp in place
    (read 4, write 4), the sum (read 4) and the division in place (read 4, write 4): e + 36
    bytes a logit. Backward: the gradient scaled in place (read 4, write 4) and cast back
    (read 4, write e): 12 + e; then the logits' dX (all-reduced, SP: reduce-scattered) and dW
    GEMMs and the norm's backward."""
    c = _shape(spec, tp, sequence_parallel)
    e, T, Tn, h = c.e, c.T, c.Tn, c.h
    logits = T * c.vocab
    forward = [_memory("final-norm", 2 * e * Tn * h), *_gather(c, "head-all-gather"),
               _gemm("logits", T, c.vocab, h, e=e), _memory("cross-entropy", (e + 36) * logits)]
    inputs = [_memory("cross-entropy-bwd", (12 + e) * logits), _gemm("logits-dgrad", T, h, c.vocab, e=e),
              *_input_grad_reduce(c, "head-reduce-bwd"), _memory("final-norm-bwd", 5 * e * Tn * h)]
    return {"F": tuple(forward), "I": tuple(inputs), "W": (_gemm("logits-wgrad", h, c.vocab, T, e=e),)}


TILES = ((256, 128), (128, 256), (128, 128))
"""Output tiles a GEMM runs in, rows x columns: the largest cuBLAS uses on Ampere (NVIDIA,
"Matrix Multiplication Background User's Guide", typical tile dimensions)."""


def gemm_time(op: Op, gpu: Gpu) -> float:
    """Seconds of the GEMM ``op`` without the kernel overhead.

    With the GPU's SM count known and the GEMM's dimensions given, it runs in waves (NVIDIA's
    guide, tile and wave quantization): its m x n output (per batch member) is cut into tiles
    of one of :data:`TILES`, each SM computes one tile at a time, so ceil(tiles / SMs) waves
    run one after another. A wave takes one tile's FLOPs at an SM's share of the large-GEMM
    rate (every SM computes a tile of the full tile size, however little of it is used), then
    writes its output tiles at the SMs' share of the HBM rate: the write follows the tile's
    last multiply-accumulate and is not hidden behind it, which is what makes a GEMM with a
    short k (the attention's Q K^T, k = head size) or few waves run further from peak. The
    tile that finishes first is taken (cuBLAS picks by shape), and no GEMM runs faster than
    its operands' bytes at the HBM rate. Without SMs (or dimensions): the roofline, the longer
    of FLOPs at the GEMM rate and bytes at the HBM rate."""
    roofline = max(op.flops / gpu.gemm_flops, op.bytes / gpu.hbm_bytes)
    if not gpu.sms or op.dims is None:
        return roofline
    m, n, k, batch, e = op.dims
    best = math.inf
    for rows, cols in TILES:
        waves = math.ceil(math.ceil(m / rows) * math.ceil(n / cols) * batch / gpu.sms)
        tile = 2.0 * rows * cols * k / gpu.gemm_flops + e * rows * cols / gpu.hbm_bytes
        best = min(best, waves * tile * gpu.sms)
    return max(best, op.bytes / gpu.hbm_bytes)


def op_time(op: Op, gpu: Gpu, link: Link, tp: int) -> float:
    """Seconds ``op`` takes on ``gpu``; collectives run over ``tp`` ranks on ``link``."""
    if op.kind == "gemm":
        return gemm_time(op, gpu) + gpu.kernel_overhead
    if op.kind == "memory":
        return op.bytes / gpu.hbm_bytes + gpu.kernel_overhead
    if op.kind not in COLLECTIVES:
        raise ValueError(f"unknown op kind {op.kind!r}")
    steps = 2 * (tp - 1) if op.kind == "all-reduce" else tp - 1
    return steps * (op.bytes / tp / link.bandwidth + link.latency)


@dataclass(frozen=True)
class PhaseTimes:
    """Seconds of F, I and W for one microbatch, and how much of each is communication."""

    f: float
    i: float
    w: float
    comm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Of f, i and w: seconds in tensor-parallel collectives."""

    def __add__(self, other: PhaseTimes) -> PhaseTimes:
        return PhaseTimes(self.f + other.f, self.i + other.i, self.w + other.w,
                          tuple(a + b for a, b in zip(self.comm, other.comm)))

    def scaled(self, n: float) -> PhaseTimes:
        return PhaseTimes(n * self.f, n * self.i, n * self.w, tuple(n * c for c in self.comm))


def phase_times(ops: dict[str, tuple[Op, ...]], gpu: Gpu, link: Link, tp: int) -> PhaseTimes:
    """Sum of each phase's op times."""
    total = {p: sum(op_time(op, gpu, link, tp) for op in ops[p]) for p in PHASES}
    comm = tuple(sum(op_time(op, gpu, link, tp) for op in ops[p] if op.kind in COLLECTIVES) for p in PHASES)
    return PhaseTimes(total["F"], total["I"], total["W"], comm)


@lru_cache(maxsize=4096)
def layer_times(spec: TransformerSpec, gpu: Gpu, link: Link, tp: int = 1, sequence_parallel: bool = False,
                recompute: str = "none") -> PhaseTimes:
    """F, I, W of one layer (cached: the search asks for the same few many times)."""
    return phase_times(layer_ops(spec, tp, sequence_parallel, recompute), gpu, link, tp)


@lru_cache(maxsize=4096)
def embedding_times(spec: TransformerSpec, gpu: Gpu, link: Link, tp: int = 1,
                    sequence_parallel: bool = False) -> PhaseTimes:
    return phase_times(embedding_ops(spec, tp, sequence_parallel), gpu, link, tp)


@lru_cache(maxsize=4096)
def head_times(spec: TransformerSpec, gpu: Gpu, link: Link, tp: int = 1, sequence_parallel: bool = False) -> PhaseTimes:
    return phase_times(head_ops(spec, tp, sequence_parallel), gpu, link, tp)
