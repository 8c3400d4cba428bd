"""Random-feature attention head: one attention layer whose query x_0 reads the keys x_1..x_N
through M frozen random query-key matrices; only the value vectors train (Fu et al. 2023)."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.errors import unknown
from anyformer.nn.ranges import Count, Dropout, QKMean, QKStd
from anyformer.registry import register

NORMALIZATIONS = ("length", "softmax")
SCALES = ("mean", "sum")
Normalization, Scale = Literal[NORMALIZATIONS], Literal[SCALES]
DEFAULT_HEADS = 1024
# The default M is capped so the frozen W buffer [M, D, D] holds at most 2^24 entries
# (64 MiB in float32): 1024 heads up to D = 128, 256 at D = 256, 64 at D = 512.
MAX_W_ENTRIES = 2 ** 24


def default_num_heads(dim: int) -> int:
    """M when none is given: DEFAULT_HEADS, fewer where the D x D matrices would not fit MAX_W_ENTRIES."""
    return max(1, min(DEFAULT_HEADS, MAX_W_ENTRIES // (dim * dim)))


@register("head", "random-feature")
class RandomFeatureAttentionHead(nn.Module):
    """Random-feature attention layer (Fu et al. 2023) as a classifier head. tokens [B, L, D] -> logits [B, K].

    The paper's model (its section 2), in its notation: a query x_0 and keys x_1..x_N on the
    unit sphere, M heads with frozen random query-key matrices W_m (the product of a head's
    query and key matrices, sampled directly) and trainable values; output k is

        f_k(x_{0:N}) = c * sum_{m=1}^{M} (1/N) sum_{i=1}^{N} exp(<W_m, x_0 x_i^T>) <v_{m,k}, [x_i; 1]>,

    <W_m, x_0 x_i^T> = x_0^T W_m x_i; the appended 1 gives each value a bias, without which
    the output could not hold terms of equal degree in x_0 and x_i (such as F(<x_0, x_i>)).
    Here x_0 is the first token (a [CLS] token, or the sequence's first token: the first
    position must be real), the keys are the remaining real tokens (N counts them per sample;
    padded keys are dropped), and every token is divided by its norm first, since the paper's
    inputs lie on the unit sphere.

    W_m = qk_mean * I + qk_std * G_m, G_m standard Gaussian, drawn from the torch RNG when the
    head is built (so torch.manual_seed makes it reproducible) and frozen: buffer `W` [M, D, D],
    saved in the state dict and moved by .to(), never a parameter. qk_mean = 0 is the paper's
    zero-mean sampling, qk_mean > 0 its biased variant (a non-zero mean, which the paper finds
    learns some natural targets with fewer samples); on unit inputs it adds qk_mean <x_0, x_i>.
    Only `V` [M, D + 1, K] (v_{m,k}) trains, so the output is linear in what is learned.
    `normalization`: "length" is the paper's exp(.)/N; "softmax" divides by sum_i exp(.)
    instead (standard attention). `scale`: c = 1/M ("mean") or 1 ("sum", the paper's plain
    sum, whose value norms are then of order 1/M); V starts so both give the same function.
    `num_heads` (M) defaults to 1024, fewer for wide D (see MAX_W_ENTRIES). `dropout` acts on
    the per-head attended keys [B, M, D + 1]. `multi_label` marks the logits as independent sigmoids.

    Sources: the separate query, the many frozen heads, the directly sampled query-key
    products, the trainable values and the non-zero-mean biased sampling are the abstract's
    (arXiv 2307.11353); the exp/N normalisation, unit-sphere inputs, entries N(0, 1/4)
    (qk_std 0.5), the biased mean I and the appended 1 are our reading of its section 2,
    whose full text was not at hand when this was written: check them against it."""

    paper = "What can a Single Attention Layer Learn? A Study Through the Random Features Lens (Fu et al. 2023)"
    problem: ClassVar[str] = "classification"
    # A token filter may drop keys; the query x_0 must be a prefix token ([CLS]), always kept.
    accepts_token_subset: ClassVar[bool] = True
    reads_first_token: ClassVar[bool] = True
    # Small enough for the generic head suite; a real run wants the default M.
    example_options: ClassVar[dict] = {"num_heads": 64}

    def __init__(self, dim: int, num_classes: Count = 2, multi_label: bool = False, dropout: Dropout = 0.0,
                 num_heads: Count | None = None, qk_mean: QKMean = 0.0, qk_std: QKStd = 0.5,
                 normalization: Normalization = "length", scale: Scale = "mean") -> None:
        super().__init__()
        M = default_num_heads(dim) if num_heads is None else num_heads
        if normalization not in NORMALIZATIONS:
            raise unknown("normalization of head 'random-feature'", normalization, NORMALIZATIONS)
        if scale not in SCALES:
            raise unknown("scale of head 'random-feature'", scale, SCALES)
        self.num_classes, self.multi_label, self.num_heads = num_classes, multi_label, M
        self.qk_mean, self.qk_std = qk_mean, qk_std
        self.normalization, self.scale = normalization, scale
        self.c = 1.0 / M if scale == "mean" else 1.0
        W = qk_std * torch.randn(M, dim, dim) + qk_mean * torch.eye(dim)
        self.register_buffer("W", W)
        # N(0, 1) values under c = 1/M; the same function under c = 1 takes values / M.
        self.V = nn.Parameter(torch.randn(M, dim + 1, num_classes) * (1.0 if scale == "mean" else 1.0 / M))
        self.drop = nn.Dropout(dropout)

    def attention(self, scores: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        """Weights [B, M, N] of the keys from scores <W_m, x_0 x_i^T> [B, M, N]; padded keys get 0."""
        if self.normalization == "softmax":
            if real is None:
                return scores.softmax(-1)
            # finfo.min, not -inf, so a sample without real keys gets zeros, not NaN.
            masked = scores.masked_fill(~real[:, None], torch.finfo(scores.dtype).min)
            return masked.softmax(-1) * real[:, None]
        weights = scores.exp()
        if real is None:
            return weights / max(scores.shape[-1], 1)
        count = real.sum(-1).clamp_min(1).to(scores.dtype)  # N per sample
        # masked_fill, not a product: a padded key's exp may be inf, and inf * 0 is NaN.
        return weights.masked_fill(~real[:, None], 0.0) / count[:, None, None]

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                hidden_states: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = F.normalize(tokens, dim=-1)  # the paper's inputs lie on the unit sphere
        x0, keys = x[:, 0], x[:, 1:]  # [B, D], [B, N, D]
        real = None if mask is None else mask[:, 1:]
        u = torch.einsum("bd,mde->bme", x0, self.W)  # W_m^T x_0 [B, M, D]
        scores = torch.einsum("bme,bne->bmn", u, keys)  # x_0^T W_m x_i [B, M, N]
        a = self.attention(scores, real)
        # sum_i a_mi [x_i; 1]: the attended keys and the total weight [B, M, D + 1].
        attended = torch.cat([torch.einsum("bmn,bne->bme", a, keys), a.sum(-1, keepdim=True)], -1)
        # sum_m <v_{m,k}, attended_m> is the paper's sum over heads and keys, reordered.
        return self.c * torch.einsum("bme,mek->bk", self.drop(attended), self.V)
