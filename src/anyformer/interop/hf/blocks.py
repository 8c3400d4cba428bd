"""What the BERT-style families (bert, vit) share: one encoder layer's key map between a
transformers checkpoint and anyformer's Block, the activations with an exact equivalent,
and the checks run before writing a model as a transformers architecture.

anyformer's Block keeps the mixer in `sublayers.0` (q/k/v/o_proj, its norm) and the ffn in
`sublayers.1` (fc1, fc2, its norm); the norm is `norm_in` before the branch (pre-norm, ViT)
or `norm_out` after the residual sum (post-norm, BERT)."""
from __future__ import annotations

from typing import Any

import torch

from anyformer import registry
from anyformer.config import ComponentSpec, ModelConfig
from anyformer.errors import ConfigError, DataError
from anyformer.nn.ffn.mlp import ACTIVATIONS as MLP_ACTIVATIONS
from anyformer.nn.ffn.mlp import hidden_size

# transformers `hidden_act` -> ffn 'mlp' activation, where the two are the same function
# ("gelu" is the exact erf form in both; "gelu_new" / "gelu_pytorch_tanh" are the tanh
# approximation, mlp's "gelu_tanh" where this version of the mlp has it).
HF_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu"}
# The other way: anyformer's mlp activation -> `hidden_act` (relu2 has no transformers name).
ANYFORMER_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "silu": "silu"}
if "gelu_tanh" in MLP_ACTIVATIONS:
    HF_ACTIVATIONS.update(gelu_new="gelu_tanh", gelu_pytorch_tanh="gelu_tanh")
    ANYFORMER_ACTIVATIONS["gelu_tanh"] = "gelu_pytorch_tanh"

# Role -> the Block's parameter prefix; 'norm1' / 'norm2' are the mixer's / ffn's norm.
BLOCK_PARTS = {"q": "sublayers.0.fn.q_proj", "k": "sublayers.0.fn.k_proj", "v": "sublayers.0.fn.v_proj",
               "o": "sublayers.0.fn.o_proj", "fc1": "sublayers.1.fn.fc1", "fc2": "sublayers.1.fn.fc2",
               "norm1": "sublayers.0.{slot}", "norm2": "sublayers.1.{slot}"}


def activation(hf: dict[str, Any], field: str = "hidden_act") -> str:
    """The mlp activation of config.json's `field`, or a ConfigError naming it."""
    value = hf.get(field, "gelu")
    if value not in HF_ACTIVATIONS:
        raise ConfigError(f"config.json {field} {value!r} has no exact anyformer equivalent; "
                          f"supported: {', '.join(HF_ACTIVATIONS)}")
    return HF_ACTIVATIONS[value]


def refuse(hf: dict[str, Any], field: str, allowed: tuple[Any, ...], default: Any) -> None:
    """A ConfigError naming config.json's `field` when its value is not among `allowed`."""
    value = hf.get(field, default)
    if value not in allowed:
        raise ConfigError(f"config.json {field} {value!r} is not supported by anyformer's import "
                          f"(supported: {', '.join(repr(a) for a in allowed)})")


def without_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A task model's tensors ('bert.encoder...') under the base model's names ('encoder...')."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def layer_pairs(depth: int, hf_layer: dict[str, str], slot: str) -> list[tuple[str, str]]:
    """(checkpoint key, anyformer key) for weight and bias of every role of every layer;
    `hf_layer` maps role -> checkpoint prefix with '{i}' for the layer, `slot` is
    'norm_in' (pre-norm) or 'norm_out' (post-norm)."""
    pairs = []
    for i in range(depth):
        for role, hf_name in hf_layer.items():
            ours = f"stack.blocks.{i}." + BLOCK_PARTS[role].format(slot=slot)
            pairs += [(f"{hf_name.format(i=i)}.{p}", f"{ours}.{p}") for p in ("weight", "bias")]
    return pairs


# The pooler and the classifier of BertFor.../ViTFor... task models, under the same names.
POOLER_KEYS = [("pooler.dense.weight", "head.pooler.weight"), ("pooler.dense.bias", "head.pooler.bias")]
CLASSIFIER_KEYS = [("classifier.weight", "head.fc.weight"), ("classifier.bias", "head.fc.bias")]


def encoder_pairs(embeddings: list[tuple[str, str]], depth: int, hf_layer: dict[str, str], slot: str,
                  classifier: bool, pooler: bool) -> list[tuple[str, str]]:
    """Every (checkpoint key, anyformer key) of an encoder family (BERT, ViT): its embedding
    tensors, the layers (see layer_pairs), then the pooler and the classifier when present."""
    pairs = embeddings + layer_pairs(depth, hf_layer, slot)
    return pairs + (POOLER_KEYS if pooler else []) + (CLASSIFIER_KEYS if classifier else [])


def num_labels(hf: dict[str, Any]) -> int:
    """A task model's class count: num_labels, else its id2label's size, else 2 (transformers' default)."""
    return int(hf.get("num_labels") or len(hf.get("id2label") or {}) or 2)


def label_maps(classes: int) -> dict[str, dict]:
    """config.json's id2label / label2id for `classes` unnamed labels."""
    return {"id2label": {str(i): f"LABEL_{i}" for i in range(classes)}, "label2id": {f"LABEL_{i}": i for i in range(classes)}}


def take(state: dict[str, torch.Tensor], key: str, where: str) -> torch.Tensor:
    """state[key], or a DataError saying the checkpoint (or model) lacks it."""
    if key not in state:
        raise DataError(f"{where} has no tensor {key!r}; do config.json and the weights come from the same model?")
    return state[key]


def copy_pairs(state: dict[str, torch.Tensor], pairs: list[tuple[str, str]], where: str,
               reverse: bool = False) -> dict[str, torch.Tensor]:
    """Copy every pair's tensor from its first key to its second (`reverse`: back)."""
    if reverse:
        pairs = [(b, a) for a, b in pairs]
    return {dst: take(state, src, where) for src, dst in pairs}


# ---------------------------------------------------------------- export checks

def option(kind: str, spec: ComponentSpec, name: str) -> Any:
    """A component option's value: as set in the spec, else the component's default."""
    if name in spec.options:
        return spec.options[name]
    field = registry.options_schema(registry.get(kind, spec.name)).model_fields.get(name)
    return None if field is None else field.default


def stack_reason(config: ModelConfig, family: str) -> str | None:
    """Why the layer stack of `config` is no plain stack of identical encoder layers, or None."""
    s = config.schedule
    checks = [
        (config.arch.name != "stack", f"arch {config.arch.name!r}"),
        (config.causal, "causal=true (a bidirectional encoder)"),
        (config.layout != "sequential", f"layout {config.layout!r}"),
        (config.path_scale, "path_scale"),
        (s.transition is not None, "schedule.transition"),
        (bool(s.overrides), "schedule.overrides (layers differ)"),
        (s.share is not None or s.repeat > 1, "schedule.share / repeat (weights shared across depth)"),
        (bool(s.drop) or bool(s.prune), "schedule.drop / prune"),
    ]
    bad = next((what for failed, what in checks if failed), None)
    return None if bad is None else f"{bad} has no {family} equivalent"


def layer_reason(config: ModelConfig, family: str, placement: str) -> str | None:
    """Why one layer of `config` is not softmax attention + mlp + layernorm at `placement`."""
    mixer, ffn, norm = config.mixer, config.ffn, config.norm
    if mixer.name != "softmax":
        return f"mixer {mixer.name!r} has no {family} equivalent (its attention is softmax attention)"
    if not option("mixer", mixer, "bias"):
        return f"mixer 'softmax' bias=false has no {family} equivalent"
    kv = option("mixer", mixer, "kv_heads")
    if kv not in (None, config.heads):
        return f"mixer 'softmax' kv_heads={kv} (grouped-query attention) has no {family} equivalent"
    if ffn.name != "mlp":
        return f"ffn {ffn.name!r} has no {family} equivalent (its feed-forward is a two-layer mlp)"
    act = option("ffn", ffn, "activation")
    if act not in ANYFORMER_ACTIVATIONS:
        return f"ffn 'mlp' activation {act!r} has no {family} hidden_act"
    if not option("ffn", ffn, "bias"):
        return f"ffn 'mlp' bias=false has no {family} equivalent"
    if norm.name != "layernorm" or not option("norm", norm, "bias"):
        return f"norm {norm.name!r}{'' if norm.name != 'layernorm' else ' bias=false'} has no {family} equivalent (it uses LayerNorm)"
    if norm.placement != placement:
        return f"norm placement {norm.placement!r} has no {family} equivalent ({family} is {placement}-norm)"
    return None


def intermediate_size(config: ModelConfig) -> int:
    """The mlp's hidden width, as the model built it."""
    ffn = config.ffn
    return hidden_size(config.dim, option("ffn", ffn, "ratio"), option("ffn", ffn, "hidden"), "mlp")


def layer_config(config: ModelConfig) -> dict[str, Any]:
    """The config.json fields of one encoder layer (BertConfig and ViTConfig name them alike)."""
    return {
        "hidden_size": config.dim, "num_hidden_layers": config.depth, "num_attention_heads": config.heads,
        "intermediate_size": intermediate_size(config),
        "hidden_act": ANYFORMER_ACTIVATIONS[option("ffn", config.ffn, "activation")],
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": option("mixer", config.mixer, "attn_dropout") or 0.0,
        "layer_norm_eps": option("norm", config.norm, "eps"), "dtype": "float32",
    }


def import_layer(hf: dict[str, Any], placement: str) -> dict[str, Any]:
    """The anyformer model fields of one BERT/ViT-style encoder layer read from config.json."""
    dim, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    if dim % heads:
        raise ConfigError(f"config.json hidden_size {dim} is not divisible by num_attention_heads {heads}")
    return {
        "dim": dim, "depth": int(hf["num_hidden_layers"]), "heads": heads,
        "mixer": {"name": "softmax", "attn_dropout": float(hf.get("attention_probs_dropout_prob", 0.0))},
        "ffn": {"name": "mlp", "hidden": int(hf["intermediate_size"]), "activation": activation(hf)},
        "norm": {"name": "layernorm", "eps": float(hf.get("layer_norm_eps", 1e-12)), "placement": placement},
        "dropout": float(hf.get("hidden_dropout_prob", 0.0)), "layout": "sequential",
    }
