"""``--model config.json``: a Hugging Face model configuration as a :class:`TransformerSpec`.

Two families of field names are read (Hugging Face ``transformers`` config classes):

  GPT-2 (``model_type: gpt2``)  n_layer, n_embd, n_head, n_positions (or n_ctx), vocab_size,
                                n_inner (None: 4 n_embd); GELU MLP, biases, layer norm,
                                learned positions, tied embeddings (tie_word_embeddings,
                                default true)
  Llama, Mistral                num_hidden_layers, hidden_size, num_attention_heads,
                                num_key_value_heads (default: the heads), intermediate_size,
                                max_position_embeddings, vocab_size; SwiGLU MLP, RMSNorm,
                                rotary positions, no biases unless attention_bias /
                                mlp_bias, untied unless tie_word_embeddings

The family is the ``model_type`` field, else guessed from the names present. The sequence
length is the model's context (n_positions or max_position_embeddings); train on a
shorter one with ``--set model.seq=4096``. Mistral's sliding window does not change the
FLOPs or memory counted here (a dense causal attention is assumed). A missing or
ill-typed field is reported in one line naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path

from .options import OptionError, read_json_object
from .transformer import TransformerSpec

__all__ = ["FAMILIES", "is_config_path", "load_hf_config"]

FAMILIES = {"gpt2": "gpt2", "llama": "llama", "mistral": "llama"}
"""model_type -> the field names it uses."""


def is_config_path(name: str) -> bool:
    """Whether ``--model`` names a file rather than a preset."""
    return name.endswith(".json") or "/" in name or Path(name).is_file()


def _field(data: dict, path: str, names: tuple[str, ...], family: str, kind: type = int, default=None):
    for name in names:
        if name in data and data[name] is not None:
            value = data[name]
            if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise OptionError(f"{path}: field {name!r} must be a whole number >= 1, got {value!r}")
            if kind is bool and not isinstance(value, bool):
                raise OptionError(f"{path}: field {name!r} must be true or false, got {value!r}")
            return value
    if default is not None:
        return default
    raise OptionError(f"{path}: field {names[0]!r} is missing ({family} config; "
                      f"fields read: see `python -m planner --help`)")


def _family(data: dict, path: str) -> str:
    kind = data.get("model_type")
    if isinstance(kind, str) and kind in FAMILIES:
        return FAMILIES[kind]
    if kind is not None:
        raise OptionError(f"{path}: model_type {kind!r} is not one the planner reads "
                          f"({', '.join(FAMILIES)})")
    if "n_layer" in data:
        return "gpt2"
    if "num_hidden_layers" in data:
        return "llama"
    raise OptionError(f"{path}: neither 'n_layer' (GPT-2) nor 'num_hidden_layers' (Llama, Mistral) is present")


def load_hf_config(path: str) -> TransformerSpec:
    """The model a Hugging Face ``config.json`` describes; OptionError naming file and field."""
    data = read_json_object(path, "--model")
    name = Path(path).parent.name or Path(path).stem
    family = _family(data, path)
    if family == "gpt2":
        hidden = _field(data, path, ("n_embd",), family)
        spec = dict(layers=_field(data, path, ("n_layer",), family), hidden=hidden,
                    heads=_field(data, path, ("n_head",), family), seq=_field(data, path, ("n_positions", "n_ctx"), family),
                    vocab=_field(data, path, ("vocab_size",), family), ffn=_field(data, path, ("n_inner",), family, default=4 * hidden),
                    tied_embeddings=_field(data, path, ("tie_word_embeddings",), family, bool, default=True))
    else:
        heads = _field(data, path, ("num_attention_heads",), family)
        bias = _field(data, path, ("attention_bias",), family, bool, default=False) or \
            _field(data, path, ("mlp_bias",), family, bool, default=False)
        spec = dict(layers=_field(data, path, ("num_hidden_layers",), family),
                    hidden=_field(data, path, ("hidden_size",), family), heads=heads,
                    kv_heads=_field(data, path, ("num_key_value_heads",), family, default=heads),
                    seq=_field(data, path, ("max_position_embeddings",), family),
                    vocab=_field(data, path, ("vocab_size",), family),
                    ffn=_field(data, path, ("intermediate_size",), family), mlp="swiglu", bias=bias, norm="rmsnorm",
                    tied_embeddings=_field(data, path, ("tie_word_embeddings",), family, bool, default=False),
                    learned_positions=False)
    try:
        return TransformerSpec(name, source=f"Hugging Face config {path} ({family} field names)", **spec)
    except ValueError as err:
        raise OptionError(f"{path}: {err}") from None
