"""BERT (Devlin et al. 2019) <-> anyformer: transformers' BertModel and
BertForSequenceClassification; MiniLM and sentence-transformers' BERTs are BertModels.

The mapping. BertEmbeddings (word + absolute position + token-type embeddings, then a
LayerNorm) is encoder 'tokens' with `position_embeddings`, `type_vocab_size` and
`embed_norm` (model position 'none'); each BertLayer is a post-norm Block (softmax
attention with biases, mlp, LayerNorm after each residual sum); there is no final norm.
The head: a BertModel becomes head 'features' (the last hidden states [B, L, D], as
BertModel's last_hidden_state; BERT's pooler kept as its `pooler` weights, readable with
pool 'pooler'); a BertForSequenceClassification becomes head 'cls' with `pooler`
(dense + tanh on [CLS], then the classifier), logits equal.

Export writes a BertModel (BertForSequenceClassification for a 'cls' head with pooler).
A learned [CLS] vector (encoder cls_token, as in the `bert` preset) is written as one
more vocabulary row, id `cls_token_id` = vocab_size, which the caller prepends to the ids;
a model without token types or positions gets zero tables (adding zeros is exact)."""
from __future__ import annotations

from typing import Any

import torch

from anyformer.config import ModelConfig
from anyformer.errors import ConfigError
from anyformer.interop.hf import blocks
from anyformer.interop.hf.blocks import option

MODEL_TYPES = ("bert",)
FAMILY = "BertModel"
CLASSIFIER = "BertForSequenceClassification"

HF_LAYER = {"q": "encoder.layer.{i}.attention.self.query", "k": "encoder.layer.{i}.attention.self.key",
            "v": "encoder.layer.{i}.attention.self.value", "o": "encoder.layer.{i}.attention.output.dense",
            "norm1": "encoder.layer.{i}.attention.output.LayerNorm", "fc1": "encoder.layer.{i}.intermediate.dense",
            "fc2": "encoder.layer.{i}.output.dense", "norm2": "encoder.layer.{i}.output.LayerNorm"}
EMBEDDINGS = [("embeddings.word_embeddings.weight", "encoder.embedding.weight"),
              ("embeddings.position_embeddings.weight", "encoder.positions.weight"),
              ("embeddings.token_type_embeddings.weight", "encoder.token_types.weight"),
              ("embeddings.LayerNorm.weight", "encoder.norm.weight"),
              ("embeddings.LayerNorm.bias", "encoder.norm.bias")]


def _is_classifier(hf: dict[str, Any]) -> bool:
    return CLASSIFIER in (hf.get("architectures") or [])


# ---------------------------------------------------------------- import

def model_config(hf: dict[str, Any]) -> dict[str, Any]:
    """BertConfig (config.json) -> an anyformer model config dict."""
    blocks.refuse(hf, "position_embedding_type", ("absolute",), "absolute")
    blocks.refuse(hf, "is_decoder", (False,), False)
    blocks.refuse(hf, "add_cross_attention", (False,), False)
    model = blocks.import_layer(hf, "post")
    types = int(hf.get("type_vocab_size", 2))
    encoder = {"name": "tokens", "vocab_size": int(hf["vocab_size"]), "cls_token": False, "position_embeddings": True,
               "type_vocab_size": types, "embed_norm": True, "norm_eps": model["norm"]["eps"]}
    pad = hf.get("pad_token_id")
    if pad is not None and 0 <= int(pad) < encoder["vocab_size"]:
        encoder["pad_id"] = int(pad)  # ids equal to it are padding when no mask is given
    keys = set(hf.get("_state_keys") or ())
    has_pooler = any(k.endswith("pooler.dense.weight") for k in keys)
    if _is_classifier(hf):
        if hf.get("problem_type") not in (None, "single_label_classification", "multi_label_classification"):
            raise ConfigError(f"config.json problem_type {hf['problem_type']!r} is not supported (classification only)")
        head = {"name": "cls", "num_classes": blocks.num_labels(hf), "pooler": True,
                "multi_label": hf.get("problem_type") == "multi_label_classification",
                "dropout": float(hf.get("classifier_dropout") or hf.get("hidden_dropout_prob", 0.0))}
    else:
        head = {"name": "features", "pool": "none", "pooler": has_pooler}
    return {**model, "max_len": int(hf["max_position_embeddings"]), "position": "none", "final_norm": False,
            "encoder": encoder, "head": head}


def _pairs(depth: int, classifier: bool, pooler: bool) -> list[tuple[str, str]]:
    return blocks.encoder_pairs(EMBEDDINGS, depth, HF_LAYER, "norm_out", classifier, pooler)


def import_state(hf_state: dict[str, torch.Tensor], hf: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Checkpoint tensors -> the anyformer state_dict (exact copies)."""
    state = blocks.without_prefix(hf_state, "bert.")
    classifier = _is_classifier(hf)
    pooler = "pooler.dense.weight" in state
    if classifier and not pooler:
        raise ConfigError("a BertForSequenceClassification checkpoint without pooler weights cannot be imported (its logits read the pooler)")
    return blocks.copy_pairs(state, _pairs(int(hf["num_hidden_layers"]), classifier, pooler), "the checkpoint")


# ---------------------------------------------------------------- export

def exports(config: ModelConfig) -> str | None:
    """None when `config` maps onto BertModel, else the component that does not."""
    reason = blocks.stack_reason(config, FAMILY) or blocks.layer_reason(config, FAMILY, "post")
    if reason:
        return reason
    enc = config.encoder
    if enc is None or enc.name != "tokens":
        return f"encoder {getattr(enc, 'name', None)!r} has no {FAMILY} equivalent (it reads token ids)"
    if not option("encoder", enc, "embed_norm"):
        return f"encoder 'tokens' without embed_norm has no {FAMILY} equivalent (BertEmbeddings ends in a LayerNorm): set encoder.embed_norm=true"
    if config.position.name != "none":
        return (f"position {config.position.name!r} acts after the encoder's embed_norm; {FAMILY} adds positions before it: "
                "use encoder.position_embeddings=true with position=none")
    if config.final_norm:
        return f"final_norm=true has no {FAMILY} equivalent (post-norm BERT has no final norm)"
    if option("encoder", enc, "norm_eps") != option("norm", config.norm, "eps"):
        return f"encoder.norm_eps differs from norm.eps; {FAMILY} has one layer_norm_eps"
    return None


def _head(config: ModelConfig) -> tuple[str, bool]:
    """(architecture written, whether BERT's pooler is written)."""
    head = config.head
    if head is not None and head.name == "cls" and option("head", head, "pooler"):
        return CLASSIFIER, True
    return FAMILY, bool(head is not None and head.name == "features" and option("head", head, "pooler"))


def export_notes(config: ModelConfig) -> list[str]:
    """What the checkpoint leaves out: a head with no BERT equivalent, the [CLS] id to prepend."""
    notes = []
    head = config.head
    if _head(config)[0] == FAMILY and head is not None and head.name != "features":
        notes.append(f"head {head.name!r} has no {FAMILY} equivalent and is not written ({CLASSIFIER} needs head 'cls' with pooler=true)")
    if option("encoder", config.encoder, "cls_token"):
        notes.append(f"the learned [CLS] token is vocabulary id {option('encoder', config.encoder, 'vocab_size')} (config.json cls_token_id): "
                     "prepend it to the input ids in transformers")
    return notes


def export_config(config: ModelConfig) -> dict[str, Any]:
    """The anyformer config -> BertConfig's config.json."""
    enc = config.encoder
    arch, _ = _head(config)
    vocab, cls = option("encoder", enc, "vocab_size"), bool(option("encoder", enc, "cls_token"))
    out = {"architectures": [arch], "model_type": "bert", **blocks.layer_config(config),
           "vocab_size": vocab + cls, "max_position_embeddings": config.max_len + cls,
           "type_vocab_size": max(1, option("encoder", enc, "type_vocab_size")), "position_embedding_type": "absolute"}
    pad = option("encoder", enc, "pad_id")
    if pad is not None:
        out["pad_token_id"] = pad
    if cls:
        out["cls_token_id"] = vocab
    if arch == CLASSIFIER:
        head = config.head
        k = option("head", head, "num_classes")
        out.update(**blocks.label_maps(k),
                   classifier_dropout=option("head", head, "dropout"),
                   problem_type="multi_label_classification" if option("head", head, "multi_label") else "single_label_classification")
    return out


def export_state(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """The anyformer state_dict -> BertModel (or BertForSequenceClassification) tensors."""
    state = dict(state)
    hf_config = export_config(config)
    dim, length = config.dim, hf_config["max_position_embeddings"]
    emb = state["encoder.embedding.weight"]
    if "encoder.cls" in state:  # the learned [CLS] vector becomes the last vocabulary row
        state["encoder.embedding.weight"] = torch.cat([emb, state["encoder.cls"].reshape(1, dim)])
    # Tables the model does not have add nothing: zeros are their exact equivalent.
    state.setdefault("encoder.positions.weight", emb.new_zeros(length, dim))
    state.setdefault("encoder.token_types.weight", emb.new_zeros(1, dim))
    arch, pooler = _head(config)
    out = blocks.copy_pairs(state, _pairs(config.depth, False, pooler), "the model", reverse=True)
    if arch == CLASSIFIER:
        out = {f"bert.{k}": v for k, v in out.items()}
        out.update(blocks.copy_pairs(state, blocks.CLASSIFIER_KEYS, "the model", reverse=True))
    return out
