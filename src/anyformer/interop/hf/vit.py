"""ViT (Dosovitskiy et al. 2021) <-> anyformer: transformers' ViTModel and
ViTForImageClassification.

The mapping. ViTPatchEmbeddings' Conv2d (kernel = stride = patch) is encoder 'patches'
`proj` (the same Conv2d, weights copied as they are); the [CLS] token is the encoder's
`cls`; the position embeddings [1, N+1, D] (the [CLS] position first) are model position
'learned' [N+1, D], added to all N+1 tokens after the encoder as ViT does; each ViTLayer is
a pre-norm Block (layernorm_before -> softmax attention -> residual, layernorm_after ->
mlp -> residual); ViT's final layernorm is the model's final norm. The head: a ViTModel
becomes head 'features' (last hidden states; ViT's pooler kept as `pooler`), a
ViTForImageClassification head 'cls' (the classifier on the [CLS] token after the final
norm), logits equal. `qkv_bias: false` is imported as zero q/k/v biases (exact)."""
from __future__ import annotations

from typing import Any

import torch

from anyformer.config import ModelConfig
from anyformer.interop.hf import blocks
from anyformer.interop.hf.blocks import option
from anyformer.nn.encoders.patches import pair

MODEL_TYPES = ("vit",)
FAMILY = "ViTModel"
CLASSIFIER = "ViTForImageClassification"

HF_LAYER = {"q": "encoder.layer.{i}.attention.attention.query", "k": "encoder.layer.{i}.attention.attention.key",
            "v": "encoder.layer.{i}.attention.attention.value", "o": "encoder.layer.{i}.attention.output.dense",
            "norm1": "encoder.layer.{i}.layernorm_before", "fc1": "encoder.layer.{i}.intermediate.dense",
            "fc2": "encoder.layer.{i}.output.dense", "norm2": "encoder.layer.{i}.layernorm_after"}
EMBEDDINGS = [("embeddings.cls_token", "encoder.cls"),
              ("embeddings.patch_embeddings.projection.weight", "encoder.proj.weight"),
              ("embeddings.patch_embeddings.projection.bias", "encoder.proj.bias"),
              ("layernorm.weight", "final_norm.weight"), ("layernorm.bias", "final_norm.bias")]
POSITIONS = ("embeddings.position_embeddings", "position.weight")


def _is_classifier(hf: dict[str, Any]) -> bool:
    return CLASSIFIER in (hf.get("architectures") or [])


def _size(value: Any) -> int | list[int]:
    """An int or [height, width] (ViTConfig takes either)."""
    return int(value) if isinstance(value, int) else [int(v) for v in value]


# ---------------------------------------------------------------- import

def model_config(hf: dict[str, Any]) -> dict[str, Any]:
    """ViTConfig (config.json) -> an anyformer model config dict."""
    blocks.refuse(hf, "pooler_act", ("tanh",), "tanh")
    blocks.refuse(hf, "pooler_output_size", (None, hf["hidden_size"]), None)
    model = blocks.import_layer(hf, "pre")
    encoder = {"name": "patches", "image_size": _size(hf.get("image_size", 224)), "patch_size": _size(hf.get("patch_size", 16)),
               "channels": int(hf.get("num_channels", 3)), "cls_token": True}
    keys = set(hf.get("_state_keys") or ())
    if _is_classifier(hf):
        head = {"name": "cls", "num_classes": blocks.num_labels(hf),
                "multi_label": hf.get("problem_type") == "multi_label_classification"}
    else:
        head = {"name": "features", "pool": "none", "pooler": any(k.endswith("pooler.dense.weight") for k in keys)}
    return {**model, "position": "learned", "final_norm": True, "encoder": encoder, "head": head}


def _pairs(depth: int, classifier: bool, pooler: bool) -> list[tuple[str, str]]:
    return blocks.encoder_pairs(EMBEDDINGS, depth, HF_LAYER, "norm_in", classifier, pooler)


def import_state(hf_state: dict[str, torch.Tensor], hf: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Checkpoint tensors -> the anyformer state_dict (exact copies; positions lose the batch axis)."""
    state = blocks.without_prefix(hf_state, "vit.")
    depth, dim = int(hf["num_hidden_layers"]), int(hf["hidden_size"])
    if not hf.get("qkv_bias", True):  # no q/k/v bias is a zero bias
        for i in range(depth):
            for role in ("query", "key", "value"):
                state[f"encoder.layer.{i}.attention.attention.{role}.bias"] = torch.zeros(dim)
    out = blocks.copy_pairs(state, _pairs(depth, _is_classifier(hf), "pooler.dense.weight" in state), "the checkpoint")
    out[POSITIONS[1]] = blocks.take(state, POSITIONS[0], "the checkpoint")[0]
    return out


# ---------------------------------------------------------------- export

def exports(config: ModelConfig) -> str | None:
    """None when `config` maps onto ViTModel, else the component that does not."""
    reason = blocks.stack_reason(config, FAMILY) or blocks.layer_reason(config, FAMILY, "pre")
    if reason:
        return reason
    enc = config.encoder
    if enc is None or enc.name != "patches":
        return f"encoder {getattr(enc, 'name', None)!r} has no {FAMILY} equivalent (it embeds image patches)"
    if option("encoder", enc, "conv_stem"):
        return f"encoder 'patches' conv_stem=true has no {FAMILY} equivalent (its patch embedding is one Conv2d)"
    if not option("encoder", enc, "cls_token"):
        return f"encoder 'patches' cls_token=false has no {FAMILY} equivalent (it always prepends [CLS])"
    if config.position.name not in ("learned", "none"):
        return f"position {config.position.name!r} has no {FAMILY} equivalent (learned absolute positions)"
    if not config.final_norm:
        return f"final_norm=false has no {FAMILY} equivalent (it ends in a LayerNorm)"
    return None


def _head(config: ModelConfig) -> tuple[str, bool]:
    """(architecture written, whether ViT's pooler is written)."""
    head = config.head
    if head is not None and head.name == "cls" and not option("head", head, "pooler"):
        return CLASSIFIER, False
    return FAMILY, bool(head is not None and head.name == "features" and option("head", head, "pooler"))


def export_notes(config: ModelConfig) -> list[str]:
    """What the checkpoint leaves out: a head with no ViT equivalent."""
    head = config.head
    if _head(config)[0] == FAMILY and head is not None and head.name != "features":
        return [f"head {head.name!r} has no {FAMILY} equivalent and is not written ({CLASSIFIER} is head 'cls')"]
    return []


def export_config(config: ModelConfig) -> dict[str, Any]:
    """The anyformer config -> ViTConfig's config.json."""
    enc = config.encoder
    arch, _ = _head(config)
    out = {"architectures": [arch], "model_type": "vit", **blocks.layer_config(config),
           "image_size": _size(option("encoder", enc, "image_size")), "patch_size": _size(option("encoder", enc, "patch_size")),
           "num_channels": option("encoder", enc, "channels"), "qkv_bias": True,
           "pooler_act": "tanh", "pooler_output_size": config.dim}
    if arch == CLASSIFIER:
        k = option("head", config.head, "num_classes")
        out.update(blocks.label_maps(k))
        if option("head", config.head, "multi_label"):
            out["problem_type"] = "multi_label_classification"
    return out


def export_state(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """The anyformer state_dict -> ViTModel (or ViTForImageClassification) tensors."""
    state = dict(state)
    if "position.weight" not in state:  # position 'none': zero position embeddings are exact
        (h, w), (ph, pw) = (pair(option("encoder", config.encoder, k)) for k in ("image_size", "patch_size"))
        state["position.weight"] = state["encoder.proj.weight"].new_zeros((h // ph) * (w // pw) + 1, config.dim)
    arch, pooler = _head(config)
    out = blocks.copy_pairs(state, _pairs(config.depth, False, pooler), "the model", reverse=True)
    out[POSITIONS[0]] = state[POSITIONS[1]][None]
    if arch == CLASSIFIER:
        out = {f"vit.{k}": v for k, v in out.items()}
        out.update(blocks.copy_pairs(state, blocks.CLASSIFIER_KEYS, "the model", reverse=True))
    return out
