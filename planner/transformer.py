"""Parameters, FLOPs and memory of a decoder-only transformer, layer by layer.

Notation: L layers, h hidden size, a attention heads, k key/value heads (k = a without
grouped-query attention), d = h / a the head size, f the FFN size, s the sequence
length, V the vocabulary, b the microbatch size (sequences). Every formula is stated on
the method that computes it; ``tests/test_planner_transformer.py`` checks them against
published parameter counts (GPT-3 175B, Llama 2 7B / 70B, Llama 3 8B).

Tensor parallelism over t GPUs (Shoeybi et al. 2019) divides every layer matrix by t
(column-parallel Q, K, V and FFN-in; row-parallel output projection and FFN-out) and the
vocabulary by t (vocab-parallel embedding and LM head); norms and the biases of
row-parallel layers stay whole on every rank.

Sources: Narayanan et al. 2021 (Megatron-LM, SC'21) for the 12 h^2 layer, the
2 x parameters x tokens forward and the FLOPs per iteration (their eq. 3); Korthikanti et
al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", arXiv
2205.05198) for activation bytes under tensor and sequence parallelism and selective
recomputation; Rajbhandari et al. 2020 (ZeRO) for 16 bytes of mixed-precision Adam state
per parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TransformerSpec", "RECOMPUTE", "VOCAB_ALIGN"]

RECOMPUTE = ("none", "selective", "full")
"""Activation recomputation: none; selective (the attention core, Korthikanti et al. 2022);
full (every layer's forward, keeping only its input)."""

VOCAB_ALIGN = 128
"""Megatron-LM pads the vocabulary to a multiple of 128 x t (``--make-vocab-size-divisible-by``)."""


@dataclass(frozen=True)
class TransformerSpec:
    """One decoder-only transformer and the shape of the data it trains on."""

    name: str
    """Preset name or a label of your own."""
    layers: int
    """Transformer layers L."""
    hidden: int
    """Hidden size h."""
    heads: int
    """Attention (query) heads a."""
    seq: int
    """Sequence length s in tokens."""
    vocab: int
    """Vocabulary size V."""
    ffn: int | None = None
    """FFN inner size f; None means 4 h (GPT)."""
    kv_heads: int | None = None
    """Key/value heads k for grouped-query attention; None means k = a."""
    mlp: str = "gelu"
    """"gelu": two FFN matrices (up, down); "swiglu": three (gate, up, down), as in Llama."""
    bias: bool = True
    """Linear layers carry biases (GPT-3 yes, Llama no)."""
    norm: str = "layernorm"
    """"layernorm" (scale and shift, 2 h per norm) or "rmsnorm" (scale only, h per norm)."""
    tied_embeddings: bool = True
    """The LM head reuses the token embedding (GPT-3). Counted once in ``params``; with
    pipeline parallelism the last stage still holds a copy (as Megatron-LM does)."""
    learned_positions: bool = True
    """Learned position embeddings of s x h (GPT-3); False for rotary (Llama)."""
    microbatch_size: int = 1
    """Sequences per microbatch b."""
    dtype_bytes: int = 2
    """Bytes per value of weights, gradients, activations and transfers (2: bf16/fp16)."""
    state_bytes_per_param: float = 16.0
    """Weights + gradients + optimizer state per parameter; mixed-precision Adam keeps 2
    (16-bit weights) + 2 (16-bit gradients) + 12 (fp32 master weights and two moments)."""
    source: str = ""
    """Where the configuration comes from."""

    def __post_init__(self) -> None:
        for field in ("layers", "hidden", "heads", "seq", "vocab", "microbatch_size", "dtype_bytes"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model {field} must be a whole number >= 1, got {value!r}")
        if self.hidden % self.heads:
            raise ValueError(f"model hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.heads % self.kv:
            raise ValueError(f"model heads ({self.heads}) must be divisible by kv_heads ({self.kv})")
        if self.mlp not in ("gelu", "swiglu"):
            raise ValueError(f"model mlp must be gelu or swiglu, got {self.mlp!r}")
        if self.norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"model norm must be layernorm or rmsnorm, got {self.norm!r}")
        if not self.state_bytes_per_param >= 2 * self.dtype_bytes:
            raise ValueError(f"model state_bytes_per_param must be >= 2 x dtype_bytes "
                             f"(weights and gradients), got {self.state_bytes_per_param!r}")

    # ---- shape ---------------------------------------------------------------------

    @property
    def f(self) -> int:
        return 4 * self.hidden if self.ffn is None else self.ffn

    @property
    def kv(self) -> int:
        return self.heads if self.kv_heads is None else self.kv_heads

    @property
    def tokens(self) -> int:
        """Tokens per microbatch, b s."""
        return self.microbatch_size * self.seq

    # ---- parameters ----------------------------------------------------------------

    def layer_matmul_params(self) -> int:
        """Weights of one layer's matrices: Q and O are h x h, K and V are h x (k d), the FFN
        has 2 (gelu) or 3 (swiglu) matrices of h x f. GPT (k = a, f = 4 h): 12 h^2."""
        h, kvd = self.hidden, self.kv * (self.hidden // self.heads)
        return 2 * h * h + 2 * h * kvd + (3 if self.mlp == "swiglu" else 2) * h * self.f

    def layer_params(self) -> int:
        """Matrices plus biases plus two norms. Biases: Q, K, V (h + 2 k d), O (h), FFN
        inner (f, or 2 f for swiglu's gate and up) and outer (h); norms 2 x 2 h (layernorm)
        or 2 x h (rmsnorm). GPT: 12 h^2 + 13 h."""
        h, kvd = self.hidden, self.kv * (self.hidden // self.heads)
        biases = (h + 2 * kvd + h + (2 if self.mlp == "swiglu" else 1) * self.f + h) if self.bias else 0
        return self.layer_matmul_params() + biases + 2 * self._norm_params()

    def _norm_params(self) -> int:
        return 2 * self.hidden if self.norm == "layernorm" else self.hidden

    def embedding_params(self) -> int:
        """Token embedding V h, plus s h of learned positions if any."""
        return self.vocab * self.hidden + (self.seq * self.hidden if self.learned_positions else 0)

    def head_params(self) -> int:
        """What the last stage holds for the output: the final norm and the V x h LM head
        (a copy of the token embedding when tied)."""
        return self._norm_params() + self.vocab * self.hidden

    def params(self) -> int:
        """L x layer + embedding + final norm + (V h unless the head is tied)."""
        head = self.head_params() - (self.vocab * self.hidden if self.tied_embeddings else 0)
        return self.layers * self.layer_params() + self.embedding_params() + head

    def padded_vocab(self, tp: int = 1) -> int:
        """V rounded up to a multiple of 128 t, as Megatron-LM pads it (GPT-3's 50257 -> 50304)."""
        unit = VOCAB_ALIGN * tp
        return -(-self.vocab // unit) * unit

    def layer_params_per_rank(self, tp: int = 1) -> float:
        """One layer's parameters on one of t tensor-parallel ranks: the matrices and the
        column-parallel biases (Q, K, V, FFN-in) divided by t; the row-parallel biases (O,
        FFN-out, h each) and the norms whole on every rank."""
        h = self.hidden
        whole = (2 * h if self.bias else 0) + 2 * self._norm_params()
        return (self.layer_params() - whole) / tp + whole

    def embedding_params_per_rank(self, tp: int = 1) -> float:
        """The vocab-parallel token embedding (padded V / t rows) and the learned positions (whole)."""
        return self.padded_vocab(tp) * self.hidden / tp + (self.seq * self.hidden if self.learned_positions else 0)

    def head_params_per_rank(self, tp: int = 1) -> float:
        """The final norm (whole) and the vocab-parallel LM head (padded V / t rows)."""
        return self._norm_params() + self.padded_vocab(tp) * self.hidden / tp

    # ---- FLOPs per microbatch ------------------------------------------------------

    def layer_matmul_flops(self) -> float:
        """Forward matmul FLOPs of one layer: 2 x matrix weights x tokens (a multiply and
        an add per weight per token)."""
        return 2.0 * self.layer_matmul_params() * self.tokens

    def attention_flops(self) -> float:
        """Forward FLOPs of the attention scores Q K^T and of scores x V: 2 b s^2 h each,
        4 b s^2 h in all (no saving for the causal mask, as in Megatron-LM's count)."""
        return 4.0 * self.microbatch_size * self.seq ** 2 * self.hidden

    def layer_forward_flops(self) -> float:
        """2 x matmul weights x tokens + 4 b s^2 h."""
        return self.layer_matmul_flops() + self.attention_flops()

    def layer_backward_flops(self, recompute: str = "none") -> tuple[float, float]:
        """(I, W): the backward split into input and weight gradients.

        Rule: each matmul Y = X W has two backward matmuls of the forward's size, dX = dY W^T
        (I) and dW = X^T dY (W), so I and W each cost the forward matmul FLOPs. The
        attention scores have no weights: their backward (twice their forward) is all I.
        Recomputation reruns forward work before the backward that needs it: added to I
        (the whole layer forward for full, the attention core for selective). Without it,
        I + W = 2 x forward."""
        matmul, attention = self.layer_matmul_flops(), self.attention_flops()
        rerun = self.recompute_flops_per_token(recompute) * self.tokens / self.layers
        return matmul + 2 * attention + rerun, matmul

    def head_forward_flops(self) -> float:
        """LM head logits: 2 h V per token (the embedding lookup costs no FLOPs)."""
        return 2.0 * self.hidden * self.vocab * self.tokens

    def flops_per_token(self) -> float:
        """Training FLOPs per token without recomputation: 3 x forward (forward, then a
        backward of twice its size), forward = L x layer forward + head, over b s tokens.
        GPT-3 175B at s = 2048: about 6 x 175e9 + 3 x 4 s h L = 1.08e12."""
        forward = self.layers * self.layer_forward_flops() + self.head_forward_flops()
        return 3.0 * forward / self.tokens

    def recompute_flops_per_token(self, recompute: str) -> float:
        """FLOPs recomputation adds per token: full reruns every layer's forward (the head is
        not recomputed); selective reruns the attention core, Q K^T and scores x V."""
        per_layer = {"none": 0.0, "selective": self.attention_flops(),
                     "full": self.layer_forward_flops()}[_checked(recompute)]
        return self.layers * per_layer / self.tokens

    def iteration_flops(self, batch: int, recompute: str = "none") -> tuple[float, float]:
        """(model, hardware) FLOPs of one iteration over ``batch`` sequences: model FLOPs count
        no recomputation (what MFU divides), hardware FLOPs count it (Megatron-LM's "achieved
        teraFLOP/s"). For GPT layers (f = 4 h, k = a) these are Narayanan et al.'s
        72 B s l h^2 (1 + s/(6h) + V/(12 l h)) and, with full recomputation, their eq. 3,
        96 B s l h^2 (1 + s/(6h) + V/(16 l h))."""
        tokens = batch * self.seq
        model = self.flops_per_token() * tokens
        return model, model + self.recompute_flops_per_token(recompute) * tokens

    # ---- memory --------------------------------------------------------------------

    def activation_bytes_per_layer(self, recompute: str = "none", tp: int = 1,
                                   sequence_parallel: bool = False) -> float:
        """Bytes one layer keeps from its forward for its backward, per microbatch, on one of
        t tensor-parallel ranks (Korthikanti et al. 2022, 16-bit activations, their Table 2):

          none        TP: s b h (10 + 24/t + 5 a s/(h t));  TP + SP: (s b h / t)(34 + 5 a s / h)
          selective   TP: s b h (10 + 24/t);                TP + SP: 34 s b h / t
          full        2 s b h, the layer input; with SP the input is sharded: 2 s b h / t

        At t = 1 "none" is s b h (34 + 5 a s / h). The 10 s b h without SP are the layer
        norms' and dropouts' activations that every tensor-parallel rank keeps whole; the
        5 a s / h terms are the attention scores, softmax and dropout over s^2 per head,
        which selective recomputation rebuilds. Derived for GPT layers (f = 4 h, k = a);
        used as an estimate for others."""
        s, b, h, a, t = self.seq, self.microbatch_size, self.hidden, self.heads, tp
        sbh = float(s * b * h)
        scores = 5.0 * a * s / h  # attention core, per s b h
        kept = {"none": scores, "selective": 0.0}
        if _checked(recompute) == "full":
            return 2.0 * sbh / t if sequence_parallel else 2.0 * sbh
        if sequence_parallel:
            return sbh / t * (34.0 + kept[recompute])
        return sbh * (10.0 + 24.0 / t + kept[recompute] / t)

    def recompute_buffer_bytes(self, recompute: str, tp: int = 1, sequence_parallel: bool = False) -> float:
        """Extra bytes while a backward runs: with full recomputation one layer's activations
        are rebuilt at a time (its bytes without recomputation); with selective one layer's
        attention core, 5 a s^2 b / t; none otherwise."""
        if _checked(recompute) == "none":
            return 0.0
        whole = self.activation_bytes_per_layer("none", tp, sequence_parallel)
        return whole if recompute == "full" else whole - self.activation_bytes_per_layer("selective", tp, sequence_parallel)

    def head_activation_bytes(self, tp: int = 1, sequence_parallel: bool = False) -> float:
        """Bytes the head keeps per microbatch on one of t ranks: its 16-bit input (2 s b h,
        / t with SP) and the fp32 softmax of its vocab shard the cross-entropy backward reads
        (4 s b V / t)."""
        inputs = 2.0 * self.tokens * self.hidden / (tp if sequence_parallel else 1)
        return inputs + 4.0 * self.tokens * self.padded_vocab(tp) / tp

    def boundary_bytes(self, tp: int = 1) -> float:
        """Bytes one GPU sends across a stage boundary per microbatch, each way: the hidden
        state (forward) or its gradient (backward), dtype_bytes x s b h; with t > 1 each
        tensor-parallel rank sends 1/t of it (Megatron-LM's scatter/gather, SC'21 §4.1; with
        SP the tensor is already sharded)."""
        return float(self.dtype_bytes * self.tokens * self.hidden) / tp

    def state_bytes(self, params: float) -> dict[str, float]:
        """Weights, gradients and optimizer state of ``params`` parameters: dtype_bytes
        each for weights and gradients, the rest of state_bytes_per_param for the optimizer."""
        weights = grads = self.dtype_bytes * params
        return {"weights": weights, "gradients": grads,
                "optimizer": (self.state_bytes_per_param - 2 * self.dtype_bytes) * params}

    def describe(self) -> dict:
        """The figures ``python -m planner --describe --json`` prints."""
        return {
            "model": self.name, "params": self.params(), "layers": self.layers, "hidden": self.hidden,
            "heads": self.heads, "kv_heads": self.kv, "ffn": self.f, "seq": self.seq, "vocab": self.vocab,
            "microbatch_size": self.microbatch_size, "params_per_layer": self.layer_params(),
            "embedding_params": self.embedding_params(), "head_params": self.head_params(),
            "flops_per_token": self.flops_per_token(),
            "forward_flops_per_layer": self.layer_forward_flops(),
            "activation_bytes_per_layer": self.activation_bytes_per_layer("none"),
            "activation_bytes_per_layer_selective": self.activation_bytes_per_layer("selective"),
            "activation_bytes_per_layer_recompute": self.activation_bytes_per_layer("full"),
            "boundary_bytes": self.boundary_bytes(),
            "state_bytes": self.state_bytes_per_param * self.params(),
            "source": self.source,
        }


def _checked(recompute: str) -> str:
    if recompute not in RECOMPUTE:
        raise ValueError(f"recompute must be one of {', '.join(RECOMPUTE)}, got {recompute!r}")
    return recompute
