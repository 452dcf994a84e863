"""Published transformer configurations, each with the paper or model card it comes from."""

from __future__ import annotations

from .transformer import TransformerSpec

__all__ = ["MODELS"]

_LLAMA = dict(mlp="swiglu", bias=False, norm="rmsnorm", tied_embeddings=False, learned_positions=False)

MODELS: dict[str, TransformerSpec] = {
    "gpt3-175b": TransformerSpec(
        "gpt3-175b", layers=96, hidden=12288, heads=96, seq=2048, vocab=50257,
        source="Brown et al. 2020, 'Language Models are Few-Shot Learners', table 2.1 (GPT-3 175B: "
               "96 layers, d_model 12288, 96 heads, context 2048); GPT-2 BPE vocabulary of 50257"),
    "llama2-7b": TransformerSpec(
        "llama2-7b", layers=32, hidden=4096, heads=32, seq=4096, vocab=32000, ffn=11008, **_LLAMA,
        source="Touvron et al. 2023, 'Llama 2'; config.json of meta-llama/Llama-2-7b-hf "
               "(32 layers, 4096 hidden, 32 heads, intermediate 11008, vocab 32000, context 4096)"),
    "llama2-70b": TransformerSpec(
        "llama2-70b", layers=80, hidden=8192, heads=64, kv_heads=8, seq=4096, vocab=32000, ffn=28672, **_LLAMA,
        source="Touvron et al. 2023, 'Llama 2'; config.json of meta-llama/Llama-2-70b-hf "
               "(80 layers, 8192 hidden, 64 heads, 8 KV heads, intermediate 28672, vocab 32000)"),
    "llama3-8b": TransformerSpec(
        "llama3-8b", layers=32, hidden=4096, heads=32, kv_heads=8, seq=8192, vocab=128256, ffn=14336, **_LLAMA,
        source="Llama Team 2024, 'The Llama 3 Herd of Models', table 3; config.json of "
               "meta-llama/Meta-Llama-3-8B (32 layers, 4096 hidden, 32 heads, 8 KV heads, "
               "intermediate 14336, vocab 128256, context 8192)"),
    "executor-transformer": TransformerSpec(
        "executor-transformer", layers=4, hidden=256, heads=4, seq=64, vocab=1, learned_positions=False,
        tied_embeddings=False, dtype_bytes=4, state_bytes_per_param=8.0,
        source="this project's executor (executor/model.py, --model transformer): nn.TransformerEncoderLayer "
               "(h, a, 4h) stacked, float32, plain SGD (weights + gradients, no optimizer state), no "
               "embedding or head (vocab 1 makes the planner's head negligible)"),
}
