"""Llama (Touvron et al. 2023, "LLaMA: Open and Efficient Foundation Language Models") <->
anyformer: pre-norm RMSNorm, rotary positions (the half-split rotate_half layout of HF
checkpoints, q/k weights unpermuted), SwiGLU, grouped-query attention (`kv_heads`), a final
RMSNorm and an LM head, tied or not. Mistral configs read the same when their sliding
window never bites (no window, or one at least max_position_embeddings wide)."""
from __future__ import annotations

from typing import Any

import torch

from anyformer.config import ModelConfig
from anyformer.errors import ConfigError
from anyformer.interop.hf.decoder import (
    StateReader,
    check_architecture,
    field,
    head_config,
    is_base_model,
    layer,
    option,
    plain_decoder_reason,
    strip_prefix,
    tied,
    vocab_size,
)
from anyformer.nn.ffn.glu import glu_hidden

Tensor = torch.Tensor

MODEL_TYPES = ("llama", "mistral")
ARCHITECTURES = ("LlamaModel", "LlamaForCausalLM", "MistralModel", "MistralForCausalLM")
# LlamaConfig's / MistralConfig's defaults, for fields a hand-written config.json leaves out.
COMMON: dict[str, Any] = {
    "vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
    "hidden_act": "silu", "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "rope_theta": 10000.0,
    "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {**COMMON, "intermediate_size": 11008, "max_position_embeddings": 2048},
    "mistral": {**COMMON, "intermediate_size": 14336, "max_position_embeddings": 4096 * 32,
                "num_key_value_heads": 8, "sliding_window": 4096},
}
# transformers' hidden_act -> anyformer's glu variant gating with the same function.
VARIANTS = {"silu": "swiglu", "swish": "swiglu", "gelu": "geglu", "relu": "reglu"}
EXPORT_ACTIVATIONS = {"swiglu": "silu", "geglu": "gelu", "reglu": "relu"}
# Non-parameter buffers of older checkpoints: rotary frequencies, recomputed at build.
IGNORED = (".rotary_emb.inv_freq",)


def _rope_base(hf: dict, model_type: str) -> float:
    """rope_theta, from transformers 5's `rope_parameters` or the older `rope_theta` and
    `rope_scaling`; any scaling but the default is a ConfigError naming its type."""
    theta = hf.get("rope_theta")
    for source in ("rope_scaling", "rope_parameters"):
        params = hf.get(source)
        if not params:
            continue
        kind = params.get("rope_type", params.get("type", "default"))
        if kind != "default":
            raise ConfigError(f"{model_type} config.json rope_scaling type {kind!r} (in {source}) is not supported; "
                              "anyformer's rotary positions are unscaled (type 'default')")
        if params.get("partial_rotary_factor", 1.0) != 1.0:
            raise ConfigError(f"{model_type} config.json {source}.partial_rotary_factor "
                              f"{params['partial_rotary_factor']} is not supported; every dim rotates")
        theta = params.get("rope_theta", theta)
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConfigError(f"{model_type} config.json partial_rotary_factor {hf['partial_rotary_factor']} is not supported")
    return float(COMMON["rope_theta"] if theta is None else theta)


def model_config(hf: dict) -> dict:
    """Llama (or exact Mistral) config.json -> an anyformer model config dict."""
    model_type = hf.get("model_type", "llama")
    if model_type not in DEFAULTS:
        raise ConfigError(f"model_type {model_type!r} is not a Llama-family type; supported: {', '.join(MODEL_TYPES)}")
    get = lambda name: field(hf, DEFAULTS[model_type], name)  # noqa: E731
    base_model = check_architecture(hf, model_type, ARCHITECTURES)
    dim, heads = int(get("hidden_size")), int(get("num_attention_heads"))
    kv_heads = int(get("num_key_value_heads") or heads)
    if dim % heads:
        raise ConfigError(f"{model_type} config.json hidden_size {dim} is not divisible by num_attention_heads {heads}")
    if get("head_dim") not in (None, dim // heads):
        raise ConfigError(f"{model_type} config.json head_dim {get('head_dim')} is not supported; anyformer's "
                          f"head dim is hidden_size / num_attention_heads = {dim // heads}")
    if heads % kv_heads:
        raise ConfigError(f"{model_type} config.json num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    act = get("hidden_act")
    if act not in VARIANTS:
        raise ConfigError(f"{model_type} config.json hidden_act {act!r} is not supported; supported: {', '.join(VARIANTS)}")
    max_len = int(get("max_position_embeddings"))
    window = get("sliding_window")
    if window is not None and int(window) < max_len:
        raise ConfigError(f"{model_type} config.json sliding_window {window} is not supported (below max_position_embeddings "
                          f"{max_len}); set it to null for full attention")
    mixer = {"name": "softmax", "bias": bool(get("attention_bias")), "attn_dropout": float(get("attention_dropout"))}
    if kv_heads != heads:
        mixer["kv_heads"] = kv_heads
    return {
        "dim": dim, "depth": int(get("num_hidden_layers")), "heads": heads, "max_len": max_len, "causal": True,
        "mixer": mixer,
        "ffn": {"name": "glu", "variant": VARIANTS[act], "hidden": int(get("intermediate_size")), "bias": bool(get("mlp_bias"))},
        "norm": {"name": "rmsnorm", "eps": float(get("rms_norm_eps")), "placement": "pre"},
        "position": {"name": "rotary", "base": _rope_base(hf, model_type)},
        "encoder": {"name": "tokens", "vocab_size": int(get("vocab_size"))},
        "head": head_config(base_model, bool(get("tie_word_embeddings"))),
        "dropout": 0.0, "final_norm": True,
    }


ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down"))


def _pairs(i: int, attention_bias: bool, mlp_bias: bool) -> list[tuple[str, str]]:
    """(checkpoint key without the 'model.' prefix, anyformer key) of layer i's tensors."""
    h = f"layers.{i}."
    suffixes = ("weight", "bias") if attention_bias else ("weight",)
    pairs = [(f"{h}self_attn.{p}.{s}", layer(i, 0, f"fn.{p}.{s}")) for p in ATTENTION for s in suffixes]
    suffixes = ("weight", "bias") if mlp_bias else ("weight",)
    pairs += [(f"{h}mlp.{p}.{s}", layer(i, 1, f"fn.{a}.{s}")) for p, a in MLP for s in suffixes]
    pairs += [(f"{h}input_layernorm.weight", layer(i, 0, "norm_in.weight")),
              (f"{h}post_attention_layernorm.weight", layer(i, 1, "norm_in.weight"))]
    return pairs


def import_state(hf_state: dict[str, Tensor], hf: dict) -> dict[str, Tensor]:
    """Llama checkpoint tensors (LlamaModel or LlamaForCausalLM keys) -> the anyformer
    state_dict; every tensor is copied as it is (same layout: nn.Linear [out, in])."""
    cfg = model_config(hf)
    s = StateReader(strip_prefix(hf_state, "model.", IGNORED), hf.get("model_type", "llama"))
    out = {"encoder.embedding.weight": s("embed_tokens.weight"), "final_norm.weight": s("norm.weight")}
    for i in range(cfg["depth"]):
        for hf_key, key in _pairs(i, cfg["mixer"]["bias"], cfg["ffn"]["bias"]):
            out[key] = s(hf_key)
    if cfg["head"]["name"] == "lm":
        # Tied: the embedding is what HF reads (a stored lm_head copy is left unread).
        out["head.fc.weight"] = out["encoder.embedding.weight"] if cfg["head"]["tie"] else s("lm_head.weight")
    return out


def exports(config: ModelConfig) -> str | None:
    """None when `config` is Llama exactly, else the component with no Llama equivalent."""
    reason = plain_decoder_reason(config, "Llama")
    if reason:
        return reason
    p = config.position
    if p.name != "rotary" or option("position", p, "fraction") != 1.0:
        return f"position {p.name!r} has no Llama equivalent (Llama rotates every dim: 'rotary' with fraction 1)"
    if config.norm.name != "rmsnorm":
        return f"norm {config.norm.name!r} has no Llama equivalent (Llama uses 'rmsnorm')"
    if config.mixer.name != "softmax":
        return f"mixer {config.mixer.name!r} has no Llama equivalent (Llama uses 'softmax' attention)"
    f = config.ffn
    if f.name != "glu" or option("ffn", f, "variant") not in EXPORT_ACTIVATIONS:
        return f"ffn {f.name!r} has no Llama equivalent (Llama uses 'glu', variant one of {', '.join(EXPORT_ACTIVATIONS)})"
    return None


def _check(config: ModelConfig) -> None:
    reason = exports(config)
    if reason:
        raise ConfigError(f"cannot export as llama: {reason}")


def export_config(config: ModelConfig) -> dict:
    """An anyformer model config that `exports` accepts -> Llama config.json; rope written
    both as transformers 5's rope_parameters and the older rope_theta."""
    _check(config)
    f, m = config.ffn, config.mixer
    base = float(option("position", config.position, "base"))
    out = {
        "model_type": "llama", "architectures": ["LlamaModel" if is_base_model(config) else "LlamaForCausalLM"],
        "vocab_size": vocab_size(config),
        "hidden_size": config.dim, "num_hidden_layers": config.depth, "num_attention_heads": config.heads,
        "num_key_value_heads": option("mixer", m, "kv_heads") or config.heads, "head_dim": config.dim // config.heads,
        "intermediate_size": glu_hidden(config.dim, option("ffn", f, "ratio"), option("ffn", f, "hidden"),
                                        option("ffn", f, "match_params")),
        "hidden_act": EXPORT_ACTIVATIONS[option("ffn", f, "variant")], "max_position_embeddings": config.max_len,
        "rms_norm_eps": float(option("norm", config.norm, "eps")), "tie_word_embeddings": tied(config),
        "rope_theta": base, "rope_parameters": {"rope_type": "default", "rope_theta": base},
        "attention_bias": bool(option("mixer", m, "bias")), "mlp_bias": bool(option("ffn", f, "bias")),
        "attention_dropout": float(option("mixer", m, "attn_dropout")),
    }
    pad = option("encoder", config.encoder, "pad_id")
    if pad is not None:
        out["pad_token_id"] = pad
    return out


def export_state(state: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """The anyformer state_dict -> LlamaForCausalLM (LlamaModel for head 'features')
    checkpoint tensors, import_state's inverse."""
    _check(config)
    m = "" if is_base_model(config) else "model."
    out = {m + "embed_tokens.weight": state["encoder.embedding.weight"], m + "norm.weight": state["final_norm.weight"]}
    for i in range(config.depth):
        for hf_key, key in _pairs(i, bool(option("mixer", config.mixer, "bias")), bool(option("ffn", config.ffn, "bias"))):
            out[m + hf_key] = state[key]
    if not is_base_model(config) and not tied(config):  # tied: HF ties lm_head to embed_tokens itself
        out["lm_head.weight"] = state["head.fc.weight"]
    return out
