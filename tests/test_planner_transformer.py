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
        GPT3.activation_bytes_per_layer("selective")


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
