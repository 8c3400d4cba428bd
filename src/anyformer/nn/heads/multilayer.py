"""Classifier heads beyond one pooled vector: pooling across every layer (multilayer), and a
deeper multi-label classifier (mlp-cls). Both give logits [B, K]."""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from anyformer.errors import ConfigError, ShapeError, unknown
from anyformer.nn.ffn.mlp import Activation, get_activation
from anyformer.nn.heads.classifier import ClassifierHead, LastHead, MeanHead
from anyformer.nn.ranges import Count, Dropout
from anyformer.registry import register

TOKEN_POOLS = ("last", "first", "mean")
TokenPool = Literal[TOKEN_POOLS]


def pool_tokens(tokens: torch.Tensor, mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """[B, L, D] -> [B, D]: the last real token, the first token, or the mean of real tokens."""
    if how == "first":
        return tokens[:, 0]
    if how == "mean":
        return MeanHead.pool(None, tokens, mask)
    return LastHead.pool(None, tokens, mask)


@register("head", "multilayer")
class MultiLayerPoolingHead(ClassifierHead):
    """Multi-layers trainable pooling (Tang & Yang 2024, "Pooling And Attention: What Are
    Effective Designs For LLM-Based Embedding Models?"). hidden_states: N x [B, L, D] ->
    logits [B, K]. Each layer's output is pooled to one vector (`token`: the last real token
    as in the paper, or first / mean), a learned layer embedding is added, and a learned
    query cross-attends (multi-head) over the N layer vectors; the result feeds the classifier."""

    paper = "Pooling And Attention: What Are Effective Designs For LLM-Based Embedding Models? (Tang & Yang 2024)"

    def __init__(self, dim: int, num_classes: Count = 2, multi_label: bool = False, dropout: Dropout = 0.0,
                 heads: int = 4, token: TokenPool = "last", max_layers: Count = 64) -> None:
        super().__init__(dim, num_classes, multi_label, dropout)
        if token not in TOKEN_POOLS:
            raise unknown("token pool of head 'multilayer'", token, TOKEN_POOLS)
        if heads < 1 or dim % heads:
            raise ConfigError(f"head 'multilayer': heads {heads} must divide dim {dim}")
        self.token, self.heads, self.max_layers = token, heads, max_layers
        self.layer_embedding = nn.Parameter(torch.zeros(max_layers, dim))
        self.query = nn.Parameter(torch.randn(1, 1, dim) * dim ** -0.5)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    @property
    def accepts_token_subset(self) -> bool:
        """A token filter may drop tokens, unless the head pools the last one (then another)."""
        return self.token != "last"

    @property
    def reads_first_token(self) -> bool:
        return self.token == "first"

    def check_hidden_states(self, count: int) -> None:
        """The model gives `count` layer outputs (one per layer, model.depth): refuse at build
        what forward would refuse at the first batch."""
        if count > self.max_layers:
            raise ConfigError(
                f"model.head.max_layers {self.max_layers} is below the {count} layer outputs the model gives "
                f"(model.depth {count}); set head.max_layers to at least {count}"
            )

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                hidden_states: list[torch.Tensor] | None = None) -> torch.Tensor:
        layers = list(hidden_states) if hidden_states else [tokens]
        if len(layers) > self.max_layers:
            raise ShapeError(f"head 'multilayer' got {len(layers)} layers, more than max_layers {self.max_layers}; raise max_layers")
        if any(h.shape[:2] != tokens.shape[:2] for h in layers):
            raise ShapeError("head 'multilayer' needs every layer's output at the final length (no length-changing transitions)")
        stack = torch.stack([pool_tokens(h, mask, self.token) for h in layers], 1)  # [B, N, D]
        stack = stack + self.layer_embedding[: stack.shape[1]].to(stack.dtype)
        query = self.query.to(stack.dtype).expand(stack.shape[0], -1, -1)
        pooled, _ = self.attention(query, stack, stack, need_weights=False)
        return self.fc(self.drop(pooled[:, 0]))


@register("head", "mlp-cls")
class MLPClassifierHead(ClassifierHead):
    """k-layer MLP classifier for multi-label tasks (SwinCheX, Taslimi et al. 2022): mean of the
    real tokens -> (k - 1) x [Linear, act, dropout] -> Linear to K independent logits [B, K]
    (multi_label, trained with BCE, by default)."""

    paper = "SwinCheX: Multi-label classification on chest X-ray images with transformers (Taslimi et al. 2022)"

    def __init__(self, dim: int, num_classes: Count = 2, multi_label: bool = True, dropout: Dropout = 0.0,
                 layers: Count = 3, hidden: Count | None = None, activation: Activation = "relu") -> None:
        super().__init__(dim, num_classes, multi_label, dropout)
        act = get_activation(activation, "mlp-cls")
        width = hidden or dim
        # Appended one by one, so each layer is registered as it is built: the size guard's
        # module count (nn/footprint.py) then stops an absurd `layers` at once.
        self.mlp = nn.Sequential()
        for i in range(layers - 1):
            self.mlp.extend([nn.Linear(dim if i == 0 else width, width), _Lambda(act), nn.Dropout(dropout)])
        self.fc = nn.Linear(width if layers > 1 else dim, num_classes)

    def pool(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return MeanHead.pool(None, tokens, mask)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                hidden_states: list[torch.Tensor] | None = None) -> torch.Tensor:
        return self.fc(self.drop(self.mlp(self.pool(tokens, mask))))


class _Lambda(nn.Module):
    """A plain activation function as a module, so it can sit in nn.Sequential. x -> fn(x)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)
