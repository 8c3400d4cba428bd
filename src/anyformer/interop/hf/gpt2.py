"""GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners") <->
anyformer's `gpt` preset: learned positions, pre-norm LayerNorm, softmax attention, a GELU
MLP, a final LayerNorm and an LM head tied to the token embedding.

transformers' GPT-2 keeps its linear layers as Conv1D, weight [in, out] (y = x W + b), the
transpose of nn.Linear's [out, in], and packs q, k, v in one `c_attn` [D, 3D]."""
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
from anyformer.nn.ffn.mlp import hidden_size

Tensor = torch.Tensor

MODEL_TYPES = ("gpt2",)
ARCHITECTURES = ("GPT2Model", "GPT2LMHeadModel")
FAMILY = "gpt2"
# GPT2Config's defaults, for fields a hand-written config.json leaves out.
DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": None,
    "activation_function": "gelu_new", "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
    "layer_norm_epsilon": 1e-5, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False, "add_cross_attention": False, "tie_word_embeddings": True,
}
# transformers' ACT2FN names -> anyformer's mlp activations computing the same function:
# gelu_new is GELU's tanh approximation written out, gelu_pytorch_tanh the same in torch.
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
               "relu": "relu", "silu": "silu", "swish": "silu"}
# anyformer -> config.json; gelu_new (not gelu_pytorch_tanh) is GPT-2's own name.
EXPORT_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}
# Flags of GPT-2 variants anyformer's softmax attention cannot compute: name -> the value it can.
ATTENTION_FLAGS = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                   "reorder_and_upcast_attn": False, "add_cross_attention": False}
# Non-parameter buffers of older checkpoints: the causal mask and its fill value.
IGNORED = (".attn.bias", ".attn.masked_bias")


def model_config(hf: dict) -> dict:
    """GPT-2 config.json -> an anyformer model config dict (the `gpt` preset's layout)."""
    get = lambda name: field(hf, DEFAULTS, name)  # noqa: E731
    base_model = check_architecture(hf, FAMILY, ARCHITECTURES)
    for name, ok in ATTENTION_FLAGS.items():
        if bool(get(name)) != ok:
            raise ConfigError(f"gpt2 config.json {name}={get(name)!r} is not supported; anyformer computes {name}={ok}")
    act = get("activation_function")
    if act not in ACTIVATIONS:
        raise ConfigError(f"gpt2 config.json activation_function {act!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
    dim, heads = int(get("n_embd")), int(get("n_head"))
    if dim % heads:
        raise ConfigError(f"gpt2 config.json n_embd {dim} is not divisible by n_head {heads}")
    return {
        "dim": dim, "depth": int(get("n_layer")), "heads": heads, "max_len": int(get("n_positions")), "causal": True,
        "mixer": {"name": "softmax", "attn_dropout": float(get("attn_pdrop"))},
        "ffn": {"name": "mlp", "hidden": int(get("n_inner") or 4 * dim), "activation": ACTIVATIONS[act], "bias": True},
        "norm": {"name": "layernorm", "eps": float(get("layer_norm_epsilon")), "placement": "pre"},
        "position": {"name": "learned"},
        "encoder": {"name": "tokens", "vocab_size": int(get("vocab_size"))},
        "head": head_config(base_model, bool(get("tie_word_embeddings"))),
        # resid_pdrop drops every residual branch; anyformer's dropout also acts after the
        # input, where GPT-2 uses embd_pdrop (the same 0.1 in every published GPT-2).
        "dropout": float(get("resid_pdrop")), "final_norm": True,
    }


def import_state(hf_state: dict[str, Tensor], hf: dict) -> dict[str, Tensor]:
    """GPT-2 checkpoint tensors (GPT2Model or GPT2LMHeadModel keys) -> the anyformer
    state_dict: Conv1D weights transposed, c_attn split into q/k/v rows, nothing else changed."""
    cfg = model_config(hf)
    s = StateReader(strip_prefix(hf_state, "transformer.", IGNORED), FAMILY)
    dim = cfg["dim"]
    out = {"encoder.embedding.weight": s("wte.weight"), "position.weight": s("wpe.weight"),
           "final_norm.weight": s("ln_f.weight"), "final_norm.bias": s("ln_f.bias")}
    for i in range(cfg["depth"]):
        h = f"h.{i}."
        # Conv1D [in, out] -> Linear [out, in]; c_attn's output columns are q | k | v.
        for name, w, b in zip(("q_proj", "k_proj", "v_proj"), s(h + "attn.c_attn.weight").t().split(dim, 0),
                              s(h + "attn.c_attn.bias").split(dim, 0)):
            out[layer(i, 0, f"fn.{name}.weight")] = w.contiguous()
            out[layer(i, 0, f"fn.{name}.bias")] = b.contiguous()
        out[layer(i, 0, "fn.o_proj.weight")] = s(h + "attn.c_proj.weight").t().contiguous()
        out[layer(i, 0, "fn.o_proj.bias")] = s(h + "attn.c_proj.bias")
        out[layer(i, 1, "fn.fc1.weight")] = s(h + "mlp.c_fc.weight").t().contiguous()
        out[layer(i, 1, "fn.fc1.bias")] = s(h + "mlp.c_fc.bias")
        out[layer(i, 1, "fn.fc2.weight")] = s(h + "mlp.c_proj.weight").t().contiguous()
        out[layer(i, 1, "fn.fc2.bias")] = s(h + "mlp.c_proj.bias")
        for sub, ln in ((0, "ln_1"), (1, "ln_2")):
            out[layer(i, sub, "norm_in.weight")] = s(h + f"{ln}.weight")
            out[layer(i, sub, "norm_in.bias")] = s(h + f"{ln}.bias")
    if cfg["head"]["name"] == "lm":
        # Tied: the embedding is what HF reads (a stored lm_head copy is left unread).
        out["head.fc.weight"] = out["encoder.embedding.weight"] if cfg["head"]["tie"] else s("lm_head.weight")
    return out


def exports(config: ModelConfig) -> str | None:
    """None when `config` is GPT-2 exactly, else the component with no GPT-2 equivalent."""
    reason = plain_decoder_reason(config, "GPT-2")
    if reason:
        return reason
    if config.position.name != "learned":
        return f"position {config.position.name!r} has no GPT-2 equivalent (GPT-2 learns absolute positions: 'learned')"
    if config.norm.name != "layernorm" or not option("norm", config.norm, "bias"):
        return f"norm {config.norm.name!r} has no GPT-2 equivalent (GPT-2 uses 'layernorm' with bias)"
    m = config.mixer
    kv_heads = option("mixer", m, "kv_heads")
    if m.name != "softmax" or not option("mixer", m, "bias") or kv_heads not in (None, config.heads):
        return (f"mixer {m.name!r} (bias {option('mixer', m, 'bias')}, kv_heads {kv_heads}) has no GPT-2 equivalent "
                "(GPT-2 uses 'softmax' attention with bias, as many key/value heads as heads)")
    f = config.ffn
    if f.name != "mlp" or not option("ffn", f, "bias") or option("ffn", f, "activation") not in EXPORT_ACTIVATIONS:
        return (f"ffn {f.name!r} (activation {option('ffn', f, 'activation')}) has no GPT-2 equivalent "
                f"(GPT-2 uses 'mlp' with bias and activation one of {', '.join(EXPORT_ACTIVATIONS)})")
    return None


def _check(config: ModelConfig) -> None:
    reason = exports(config)
    if reason:
        raise ConfigError(f"cannot export as gpt2: {reason}")


def export_config(config: ModelConfig) -> dict:
    """An anyformer model config that `exports` accepts -> GPT-2 config.json."""
    _check(config)
    vocab = vocab_size(config)
    inner = hidden_size(config.dim, option("ffn", config.ffn, "ratio"), option("ffn", config.ffn, "hidden"), "mlp")
    out = {
        "model_type": "gpt2", "architectures": ["GPT2Model" if is_base_model(config) else "GPT2LMHeadModel"],
        "vocab_size": vocab,
        "n_positions": config.max_len, "n_embd": config.dim, "n_layer": config.depth, "n_head": config.heads,
        "n_inner": None if inner == 4 * config.dim else inner,  # None: GPT-2's own 4 x n_embd
        "activation_function": EXPORT_ACTIVATIONS[option("ffn", config.ffn, "activation")],
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout,
        "attn_pdrop": float(option("mixer", config.mixer, "attn_dropout")),
        "layer_norm_epsilon": float(option("norm", config.norm, "eps")),
        # A bare GPT2Model has no head; True (GPT-2's default) lets GPT2LMHeadModel read it tied.
        **ATTENTION_FLAGS, "tie_word_embeddings": is_base_model(config) or tied(config),
    }
    pad = option("encoder", config.encoder, "pad_id")
    if pad is not None:
        out["pad_token_id"] = pad
    if vocab <= 50256:  # GPT2Config's default bos/eos id 50256 lies outside a smaller vocabulary
        out["bos_token_id"] = out["eos_token_id"] = None
    return out


def export_state(state: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """The anyformer state_dict -> GPT2LMHeadModel (GPT2Model for head 'features') checkpoint
    tensors, import_state's inverse: q/k/v rows concatenated into c_attn, Linear weights
    transposed to Conv1D."""
    _check(config)
    t = "" if is_base_model(config) else "transformer."
    out = {t + "wte.weight": state["encoder.embedding.weight"], t + "wpe.weight": state["position.weight"],
           t + "ln_f.weight": state["final_norm.weight"], t + "ln_f.bias": state["final_norm.bias"]}
    for i in range(config.depth):
        h = f"{t}h.{i}."
        qkv = [state[layer(i, 0, f"fn.{n}.weight")] for n in ("q_proj", "k_proj", "v_proj")]
        out[h + "attn.c_attn.weight"] = torch.cat(qkv, 0).t().contiguous()
        out[h + "attn.c_attn.bias"] = torch.cat([state[layer(i, 0, f"fn.{n}.bias")] for n in ("q_proj", "k_proj", "v_proj")])
        out[h + "attn.c_proj.weight"] = state[layer(i, 0, "fn.o_proj.weight")].t().contiguous()
        out[h + "attn.c_proj.bias"] = state[layer(i, 0, "fn.o_proj.bias")]
        out[h + "mlp.c_fc.weight"] = state[layer(i, 1, "fn.fc1.weight")].t().contiguous()
        out[h + "mlp.c_fc.bias"] = state[layer(i, 1, "fn.fc1.bias")]
        out[h + "mlp.c_proj.weight"] = state[layer(i, 1, "fn.fc2.weight")].t().contiguous()
        out[h + "mlp.c_proj.bias"] = state[layer(i, 1, "fn.fc2.bias")]
        for sub, ln in ((0, "ln_1"), (1, "ln_2")):
            out[h + f"{ln}.weight"] = state[layer(i, sub, "norm_in.weight")]
            out[h + f"{ln}.bias"] = state[layer(i, sub, "norm_in.bias")]
    if not is_base_model(config) and not tied(config):  # tied: HF ties lm_head to wte itself
        out["lm_head.weight"] = state["head.fc.weight"]
    return out
