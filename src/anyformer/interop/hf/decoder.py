"""What the decoder-only families (gpt2, llama) share: reading config.json fields with the
transformers defaults, the anyformer state_dict names of a plain pre-norm stack, checkpoint
key prefixes, and the export checks every causal LM with a token encoder must pass."""
from __future__ import annotations

from typing import Any

import torch

from anyformer import registry
from anyformer.config import ComponentSpec, ModelConfig
from anyformer.errors import ConfigError

Tensor = torch.Tensor


def field(hf: dict, defaults: dict[str, Any], name: str) -> Any:
    """config.json's `name`, else transformers' default for it (config.json omits none of
    them when transformers writes it, but hand-written or older ones may)."""
    value = hf.get(name)
    return defaults.get(name) if value is None else value


def option(kind: str, spec: ComponentSpec, name: str) -> Any:
    """A component option as built: the spec's value, else the component's own default."""
    if name in spec.options:
        return spec.options[name]
    fields = registry.options_schema(registry.get(kind, spec.name)).model_fields
    return fields[name].default if name in fields else None


def check_architecture(hf: dict, family: str, allowed: tuple[str, ...]) -> bool:
    """True when config.json names a bare base model (no LM head of its own), False for a
    causal LM or no architectures; a ConfigError for an architecture of another task."""
    archs = hf.get("architectures") or []
    other = [a for a in archs if a not in allowed]
    if other:
        raise ConfigError(f"{family} config.json architectures {other} not supported; supported: {', '.join(allowed)}")
    return bool(archs) and all(not a.endswith(("LMHeadModel", "ForCausalLM")) for a in archs)


def layer(i: int, sub: int, rest: str) -> str:
    """The anyformer key of layer i's sublayer (0: mixer, 1: ffn) part `rest`."""
    return f"stack.blocks.{i}.sublayers.{sub}.{rest}"


def strip_prefix(hf_state: dict[str, Tensor], prefix: str, ignored: tuple[str, ...]) -> dict[str, Tensor]:
    """Checkpoint keys without the base model's prefix ('transformer.' of GPT2LMHeadModel,
    'model.' of LlamaForCausalLM; a bare base model has none), minus the non-parameter
    buffers older checkpoints carry (keys ending in one of `ignored`)."""
    has_prefix = any(k.startswith(prefix) for k in hf_state)
    out = {}
    for key, value in hf_state.items():
        if key.endswith(ignored):
            continue
        out[key[len(prefix):] if has_prefix and key.startswith(prefix) else key] = value
    return out


class StateReader:
    """Takes checkpoint tensors by key; a missing key is a one-line ConfigError (a mapping
    never invents a tensor). Tensors it does not read (a task head of another
    architecture) are the core's to report: export_state does not give them back."""

    def __init__(self, state: dict[str, Tensor], family: str) -> None:
        self.state, self.family = state, family

    def __contains__(self, key: str) -> bool:
        return key in self.state

    def __call__(self, key: str) -> Tensor:
        if key not in self.state:
            raise ConfigError(f"{self.family} checkpoint has no tensor {key!r} that its config.json implies")
        return self.state[key]


def head_config(base_model: bool, tie: bool) -> dict:
    """The anyformer head of a decoder checkpoint: a bare base model (GPT2Model, LlamaModel)
    returns its final hidden states [B, L, D] (head 'features'); a causal LM its logits."""
    return {"name": "features"} if base_model else {"name": "lm", "tie": tie}


def is_base_model(config: ModelConfig) -> bool:
    """True when the head is 'features' (the checkpoint is a bare base model)."""
    return config.head is not None and config.head.name == "features"


def plain_decoder_reason(config: ModelConfig, family: str) -> str | None:
    """Why `config` is not a plain causal decoder LM (None when it is): one stack of
    identical pre-norm sequential layers, a token encoder, final norm and an LM head."""
    if config.arch.name != "stack" or config.arch.options:
        return f"arch {config.arch.name!r} has no {family} equivalent (needs the plain 'stack')"
    enc = config.encoder
    # BERT's embedding-block options (a [CLS] token, token types, positions or a norm inside
    # the encoder) have no slot in a decoder's plain token embedding.
    extras = [o for o in ("cls_token", "type_vocab_size", "position_embeddings", "embed_norm")
              if enc is not None and enc.name == "tokens" and option("encoder", enc, o)]
    if enc is None or enc.name != "tokens" or extras:
        name = None if enc is None else enc.name
        return f"encoder {name!r} {'with ' + ', '.join(extras) + ' ' if extras else ''}has no {family} equivalent (needs plain 'tokens')"
    head = config.head
    plain_features = head is not None and head.name == "features" and option("head", head, "pool") == "none" \
        and not option("head", head, "pooler") and not option("head", head, "normalize")
    if not plain_features and (head is None or head.name != "lm" or option("head", head, "bias")):
        name = None if head is None else head.name
        return f"head {name!r} has no {family} equivalent (needs 'lm' without bias, or 'features' with pool 'none')"
    head_vocab = head.options.get("vocab_size")
    if head_vocab is not None and head_vocab != vocab_size(config):
        return f"head 'lm' vocab_size {head_vocab} differs from the encoder's; {family} shares one vocabulary"
    if not config.causal:
        return f"a bidirectional model has no {family} equivalent (needs causal: true)"
    if config.layout != "sequential" or config.norm.placement != "pre" or not config.final_norm or config.path_scale:
        return (f"layout {config.layout!r} / norm placement {config.norm.placement!r} / final_norm {config.final_norm} / "
                f"path_scale {config.path_scale} has no {family} equivalent (needs sequential, pre, true, false)")
    s = config.schedule
    if s.overrides or s.share is not None or s.repeat != 1 or s.drop or s.prune or s.transition is not None:
        return f"a layer schedule (overrides, sharing, repeat, dropped or pruned layers, transitions) has no {family} equivalent"
    return None


def vocab_size(config: ModelConfig) -> int:
    return int(option("encoder", config.encoder, "vocab_size"))


def tied(config: ModelConfig) -> bool:
    """True when the LM head shares the embedding (a base model has no head to tie)."""
    return not is_base_model(config) and bool(option("head", config.head, "tie"))
