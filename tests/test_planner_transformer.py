"""The transformer arithmetic against published counts and hand-worked formulas."""

from __future__ import annotations

import dataclasses

import pytest

from planner import GPUS, LINKS, MODELS, TransformerSpec

GPT3 = MODELS["gpt3-175b"]


@pytest.mark.parametrize("name, published", [
    ("gpt3-175b", 175e9),          # Brown et al. 2020: "175 billion parameters"
    ("llama2-7b", 6_738_415_616),  # exact count of meta-llama/Llama-2-7b-hf
    ("llama2-70b", 68_976_648_192),
    ("llama3-8b", 8_030_261_248),
])
def test_parameter_counts_match_published(name, published):
    rel = 0.005 if name == "gpt3-175b" else 0.0
    assert MODELS[name].params() == pytest.approx(published, rel=rel)


def test_gpt_layer_is_twelve_h_squared_plus_thirteen_h():
    h = GPT3.hidden
    assert GPT3.layer_matmul_params() == 12 * h * h
    assert GPT3.layer_params() == 12 * h * h + 13 * h


def test_grouped_query_attention_shrinks_k_and_v():
    spec = MODELS["llama2-70b"]
    h, kv = spec.hidden, spec.kv * spec.hidden // spec.heads
    assert spec.layer_matmul_params() == 2 * h * h + 2 * h * kv + 3 * h * spec.f


def test_forward_flops_are_two_params_tokens_plus_attention():
    b, s, h = 4, GPT3.seq, GPT3.hidden
    spec = dataclasses.replace(GPT3, microbatch_size=b)
    assert spec.layer_forward_flops() == 2 * 12 * h * h * b * s + 4 * b * s * s * h


def test_backward_splits_into_equal_matmul_halves_and_attention_goes_to_i():
    i, w = GPT3.layer_backward_flops()
    assert i + w == pytest.approx(2 * GPT3.layer_forward_flops())
    assert w == GPT3.layer_matmul_flops()
    assert i - w == pytest.approx(2 * GPT3.attention_flops())
    i_full, w_full = GPT3.layer_backward_flops("full")
    assert (i_full - i, w_full) == (pytest.approx(GPT3.layer_forward_flops()), w)


def test_flops_per_token_is_about_six_params():
    # 6 N + 12 s h L for the attention scores (Kaplan et al. 2020 count 6 N per token)
    expected = 6 * GPT3.params() + 12 * GPT3.seq * GPT3.hidden * GPT3.layers
    assert GPT3.flops_per_token() == pytest.approx(expected, rel=0.01)


def test_activation_bytes_follow_korthikanti():
    s, h, a = GPT3.seq, GPT3.hidden, GPT3.heads
    assert GPT3.activation_bytes_per_layer() == s * h * (34 + 5 * a * s / h)
    assert GPT3.activation_bytes_per_layer("full") == 2 * s * h
    two = dataclasses.replace(GPT3, microbatch_size=2)
    assert two.activation_bytes_per_layer() == 2 * GPT3.activation_bytes_per_layer()
    with pytest.raises(ValueError, match="recompute"):
        GPT3.activation_bytes_per_layer("partial")


# A small layer worked by hand: s = 8, b = 2, h = 16, a = 4, t = 2, so s b h = 256 and a s / h = 2.
SMALL = TransformerSpec("small", layers=2, hidden=16, heads=4, seq=8, vocab=64, microbatch_size=2)


@pytest.mark.parametrize("recompute, sp, expected", [
    ("none", False, 256 * (10 + 24 / 2 + 5 * 2 / 2)),   # TP: sbh(10 + 24/t + 5as/(ht)) = 256 x 27
    ("none", True, 256 / 2 * (34 + 5 * 2)),             # TP + SP: (sbh/t)(34 + 5as/h) = 128 x 44
    ("selective", False, 256 * (10 + 24 / 2)),          # TP + selective: sbh(10 + 24/t) = 256 x 22
    ("selective", True, 34 * 256 / 2),                  # TP + SP + selective: 34 sbh / t
    ("full", False, 2 * 256),                           # full: the layer input, 2 sbh
    ("full", True, 2 * 256 / 2),                        # with SP the stored input is sharded
])
def test_korthikanti_table_2_at_t_2(recompute, sp, expected):
    assert SMALL.activation_bytes_per_layer(recompute, tp=2, sequence_parallel=sp) == expected


def test_korthikanti_reduces_to_the_unsharded_layer_at_t_1():
    for recompute in ("none", "selective"):
        assert SMALL.activation_bytes_per_layer(recompute, 1, False) == SMALL.activation_bytes_per_layer(recompute, 1, True)
    assert SMALL.activation_bytes_per_layer("none", 1) == 256 * (34 + 5 * 2)
    # what recomputation rebuilds during one layer's backward: all of it (full), the core (selective)
    assert SMALL.recompute_buffer_bytes("full", 2, True) == SMALL.activation_bytes_per_layer("none", 2, True)
    assert SMALL.recompute_buffer_bytes("selective", 2, False) == 256 * 5 * 2 / 2  # 5 a s^2 b / t
    assert SMALL.recompute_buffer_bytes("none", 2, False) == 0.0


def test_megatron_flops_per_iteration_eq_3():
    """Narayanan et al. SC'21 eq. 3, with their Table 1's 145.6B row (B 2304, s 2048, l 80,
    h 12288, V 51200): full recomputation 96 B s l h^2 (1 + s/(6h) + V/(16 l h)); the model
    FLOPs (no recomputation) 72 B s l h^2 (1 + s/(6h) + V/(12 l h))."""
    B, s, l, h, V = 2304, 2048, 80, 12288, 51200
    spec = TransformerSpec("145.6B", layers=l, hidden=h, heads=96, seq=s, vocab=V)
    model, hardware = spec.iteration_flops(B, "full")
    assert hardware == pytest.approx(96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h)), rel=1e-12)
    assert model == pytest.approx(72 * B * s * l * h * h * (1 + s / (6 * h) + V / (12 * l * h)), rel=1e-12)
    assert spec.iteration_flops(B, "none") == (model, model)
    selective = spec.iteration_flops(B, "selective")[1]
    assert selective - model == pytest.approx(4 * B * s * s * h * l)  # Q K^T and scores x V rerun


def test_recomputation_adds_to_the_input_gradients():
    i, w = GPT3.layer_backward_flops("none")
    assert GPT3.layer_backward_flops("selective") == (pytest.approx(i + GPT3.attention_flops()), w)


def test_tensor_parallel_shares_of_the_parameters():
    h = GPT3.hidden
    whole = 2 * h + 4 * h  # row-parallel biases (O, FFN-out) and two layer norms stay whole
    assert GPT3.layer_params_per_rank(1) == GPT3.layer_params()
    assert GPT3.layer_params_per_rank(8) == pytest.approx((12 * h * h + 13 * h - whole) / 8 + whole)
    assert GPT3.padded_vocab(1) == 50304 and GPT3.padded_vocab(8) == 51200  # Megatron pads to 128 t
    assert GPT3.embedding_params_per_rank(8) == 51200 * h / 8 + 2048 * h
    assert GPT3.head_params_per_rank(8) == 2 * h + 51200 * h / 8
    assert GPT3.boundary_bytes(8) == GPT3.boundary_bytes() / 8


def test_state_is_sixteen_bytes_per_parameter_and_configurable():
    parts = GPT3.state_bytes(1e9)
    assert parts == {"weights": 2e9, "gradients": 2e9, "optimizer": 12e9}
    lean = dataclasses.replace(GPT3, state_bytes_per_param=8.0)
    assert sum(lean.state_bytes(1e9).values()) == 8e9
    # GPT-3 in 16-bit is the textbook's 350 GB
    assert GPT3.params() * GPT3.dtype_bytes == pytest.approx(350e9, rel=0.005)


def test_boundary_is_the_hidden_state():
    assert GPT3.boundary_bytes() == 2 * GPT3.seq * GPT3.hidden


def test_tied_head_counts_once_in_params_but_sits_on_the_last_stage():
    untied = dataclasses.replace(GPT3, tied_embeddings=False)
    assert untied.params() - GPT3.params() == GPT3.vocab * GPT3.hidden
    assert GPT3.head_params() >= GPT3.vocab * GPT3.hidden


@pytest.mark.parametrize("field, value, match", [
    ("layers", 0, "layers"), ("heads", 7, "divisible"), ("mlp", "relu", "mlp"),
    ("state_bytes_per_param", 3.0, "state_bytes"),
])
def test_bad_specs_fail_with_the_field_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(GPT3, **{field: value})


def test_presets_cite_their_sources():
    for table in (MODELS, GPUS, LINKS):
        for name, preset in table.items():
            assert preset.name == name and len(preset.source) > 20, name
    assert isinstance(GPT3, TransformerSpec)
