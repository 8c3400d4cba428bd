"""DIN: a click-through-rate model pooling a user's behaviours by their relevance to the
candidate item."""
from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from anyformer import registry
from anyformer.config import ModelConfig
from anyformer.errors import ConfigError
from anyformer.nn.archs.din_parts import Dice, LocalActivationUnit
from anyformer.nn.model import build_encoder, refuse_mixer, require_parts
from anyformer.nn.ranges import Count
from anyformer.nn.stack import parameter_counter


@registry.register("arch", "din")
class DIN(nn.Module):
    """Deep Interest Network (Zhou et al. 2018): the `behaviour-fields` encoder's user
    fields, behaviours and candidate -> click logits [B, 2] (no click, click).

    The behaviours [B, L, D] are pooled into the user's interest [B, D]: weighted by the
    local activation unit (`pooling: attention`, DIN) or summed (`pooling: sum`, the paper's
    base model, which cannot tell which behaviours matter for this candidate). Then the
    Embedding & MLP part: [user fields, candidate, interest, interest * candidate] (the
    authors' code joins the product too) -> BatchNorm -> `hidden` fully connected layers with
    Dice (or PReLU) -> 2 logits. model.depth, mixer, ffn, norm and position do not apply.
    Hidden states: the embedded fields [B, 1 + U + L, D] and the behaviours as the pooling
    weighs them [B, L, D]."""

    paper = "Deep Interest Network for Click-Through Rate Prediction (Zhou et al. 2018)"
    supports_token_filter = False
    builds_own_mixer = True  # model.mixer does not apply; refuse_mixer says so
    example_config = {"dim": 32, "heads": 4, "depth": 2, "dropout": 0.0, "position": "none", "max_len": 4,
                      "arch": {"name": "din", "hidden": [16, 8], "attention_hidden": [8]},
                      "encoder": {"name": "behaviour-fields", "user_vocab": [5, 3], "items": 9, "categories": 3},
                      "head": {"name": "cls", "num_classes": 2}}

    def __init__(self, config: ModelConfig, pooling: Literal["attention", "sum"] = "attention",
                 hidden: list[Count] | None = None, attention_hidden: list[Count] | None = None,
                 activation: Literal["dice", "prelu"] = "dice", normalize: bool = False) -> None:
        super().__init__()
        self.config = c = config
        require_parts(c)
        refuse_mixer(c, "din")
        hidden = [200, 80] if hidden is None else list(hidden)
        attention_hidden = [80, 40] if attention_hidden is None else list(attention_hidden)
        self.encoder = build_encoder(c)
        if getattr(self.encoder, "modality", None) != "ctr":
            raise ConfigError(f"arch 'din' reads a user's behaviours and a candidate: use encoder 'behaviour-fields', not {c.encoder.name!r}")
        if c.head.options.get("num_classes", 2) != 2:
            raise ConfigError("arch 'din' predicts click or not: model.head.num_classes must be 2")
        self.pooling = pooling
        self.activation_unit = LocalActivationUnit(c.dim, attention_hidden, normalize) if pooling == "attention" else None
        width = (len(self.encoder.user_vocab) + 3) * c.dim
        layers: list[nn.Module] = [nn.BatchNorm1d(width)]
        for h in hidden:
            layers += [nn.Linear(width, h), Dice(h) if activation == "dice" else nn.PReLU(h), nn.Dropout(c.dropout)]
            width = h
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(width, 2)

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    @property
    def reaches_every_token(self) -> bool:
        """False: no token is mixed with another; only the click logits read them all."""
        return False

    def behaviour_weights(self, history: torch.Tensor, candidate: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each behaviour's weight in the interest [B, L]: the activation unit's, or 1 (sum pooling)."""
        if self.activation_unit is None:
            return mask.to(history.dtype)
        return self.activation_unit.weights(history, candidate, mask)

    def forward(self, x: Any, mask: torch.Tensor | None = None, return_hidden: bool = False):
        # Through the encoder's forward, so the trainer sees its regularisation (aux_loss).
        candidate, users, history, real = self.encoder.split(*self.encoder(x, mask))
        weighted = self.behaviour_weights(history, candidate, real)[..., None] * history
        interest = weighted.sum(1)
        features = torch.cat([users.flatten(1), candidate, interest, interest * candidate], -1)
        out = self.head(self.mlp(features))
        if not return_hidden:
            return out
        return out, [torch.cat([candidate[:, None], users, history], 1), weighted]

    def parameter_report(self) -> dict[str, int]:
        """Parameters per part: embeddings, activation unit, MLP, output layer."""
        count = parameter_counter()
        report = {"embeddings": count(self.encoder), "activation unit": count(self.activation_unit),
                  "mlp": count(self.mlp), "head": count(self.head)}
        report["total"] = sum(p.numel() for p in self.parameters())
        return report
