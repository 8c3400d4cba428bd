"""Random-feature attention: frozen random query-key matrices, trainable values."""
from __future__ import annotations

import math

import torch

from anyformer.errors import ConfigError
from anyformer.nn.mixers.minimal import MinimalAttention
from anyformer.registry import register


@register("mixer", "random-feature")
class RandomFeatureAttention(MinimalAttention):
    """Random-feature multi-head attention (Fu et al. 2023). x: [B, L, D] -> [B, L, D].

    Each head h scores tokens with a frozen query-key matrix W_h (the product W_q W_k^T,
    sampled directly as the paper does): scores_h = x_i W_h x_j^T / sqrt(D), W_h =
    qk_mean * I + qk_std * G, G standard Gaussian (a non-zero mean is the paper's biased
    sampling, better for some targets); qk_std defaults to 1/sqrt(D). W_h lives in q_proj
    (k_proj is the identity) with requires_grad False, so it follows .to() and is saved,
    but no optimizer changes it; only v_proj and o_proj (the value matrices) train."""

    paper = "What can a Single Attention Layer Learn? A Study Through the Random Features Lens (Fu et al. 2023)"

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, bias: bool = True,
                 qk_mean: float = 0.0, qk_std: float | None = None) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias, collapse_qk=True)
        std = 1.0 / math.sqrt(dim) if qk_std is None else qk_std
        if std < 0:
            raise ConfigError(f"mixer 'random-feature': qk_std must be >= 0, got {qk_std}")
        self.qk_mean, self.qk_std = qk_mean, std
        with torch.no_grad():
            W = self.q_proj.weight
            W.normal_(0.0, 1.0).mul_(std)
            W.add_(qk_mean * torch.eye(dim, dtype=W.dtype))
        W.requires_grad_(False)
