"""Performer: FAVOR+ attention with positive orthogonal random features."""
from __future__ import annotations

import math

import torch

from anyformer.errors import ConfigError
from anyformer.nn.mixers.base import AttentionMixer
from anyformer.nn.mixers.linear import causal_linear_attention_chunked, linear_attention
from anyformer.registry import register

MAX_FEATURE_BYTES = 16 * 2**20

# Added to every feature so that none is exactly zero (the reference's numerical stabiliser).
FEATURE_FLOOR = 1e-6


def orthogonal_gaussian_projection(features: int, head_dim: int,
                                   generator: torch.Generator | None = None) -> torch.Tensor:
    """[features, head_dim] rows w_r ~ N(0, I) made exactly orthogonal within each block of
    head_dim rows (QR of a Gaussian matrix), each row rescaled to the norm of an independent
    Gaussian vector so its marginal stays N(0, I) (Choromanski et al. 2021, section 2.4)."""
    blocks = []
    for _ in range(-(-features // head_dim)):
        gaussian = torch.randn(head_dim, head_dim, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        # Sign fix makes Q Haar-distributed (QR alone is not unique up to signs).
        q = q * torch.sign(torch.diagonal(r))[None, :]
        blocks.append(q.T)
    rows = torch.cat(blocks, dim=0)[:features]
    norms = torch.randn(features, head_dim, generator=generator, dtype=torch.float64).norm(dim=1)
    return (rows * norms[:, None]).float()


def feature_logits(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """w_r^T x - |x|^2 / 2 for every random feature r. x: [B, H, L, Dh] -> [B, H, L, m]."""
    wx = torch.einsum("bhld,md->bhlm", x, projection)
    return wx - x.square().sum(-1, keepdim=True) / 2


def positive_random_features(logits: torch.Tensor, shift: torch.Tensor,
                             floor_shifted: bool = False) -> torch.Tensor:
    """phi(x) = (exp(w^T x - |x|^2 / 2) + floor) / sqrt(m), computed as exp(logits - shift):
    positive random features whose inner products estimate exp(q^T k) without bias.
    `floor_shifted` scales the floor with the shift too, so the result is exactly
    exp(-shift) times the unshifted features; otherwise the floor is added after shifting
    (the reference's form for queries, where a per-query factor cancels anyway)."""
    floor = FEATURE_FLOOR * torch.exp(-shift) if floor_shifted else FEATURE_FLOOR
    return (torch.exp(logits - shift) + floor) / math.sqrt(logits.shape[-1])


@register("mixer", "performer")
class PerformerAttention(AttentionMixer):
    """Performer FAVOR+ (Choromanski et al. 2021, Rethinking Attention with Performers). x: [B, L, D] -> [B, L, D].

    softmax(q k^T / sqrt(d)) v is estimated by linear attention on positive orthogonal
    random features of q' = q d^(-1/4), k' = k d^(-1/4):
    phi(x) = exp(w^T x - |x|^2/2) / sqrt(m), E[phi(q')^T phi(k')] = exp(q^T k / sqrt(d)).
    `features` = m random features per head; `redraw` draws a new projection every N
    training forward passes (0: never). Causal: prefix sums, chunked as in `linear`.
    Masked keys are removed from the sums.

    Stabiliser (keeps exp in range): each query's features are divided by their own largest
    value (as the reference; a per-query factor cancels). Keys share one factor exp(-s),
    with the floor and eps scaled by it too, so the output does not depend on s at all:
    non-causal, s = the largest logit over the real keys (as the reference); causal, the
    data-independent bound s = max_r |w_r|^2 / 2 >= w_r^T k - |k|^2 / 2, because a maximum
    over the sequence would let future keys change earlier outputs."""

    complexity = "L"
    subquadratic = True
    paper = "Rethinking Attention with Performers (Choromanski et al. 2021)"
    supported_positions = frozenset({"rotary"})
    example_options = {"features": 16}
    stochastic_in_training = True

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, bias: bool = True,
                 features: int | None = None, redraw: int = 1000, eps: float = 1e-6,
                 chunk: int = 64) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias)
        if features is None:
            # The paper's m = Theta(d log d) per head (d = head dim), as its reference code
            # defaults to; a fixed 256 made short sequences several times dearer than softmax.
            features = max(8, round(self.head_dim * math.log(max(self.head_dim, 2))))
        if features < 1:
            raise ConfigError(f"mixer 'performer': features must be >= 1, got {features}")
        if redraw < 0:
            raise ConfigError(f"mixer 'performer': redraw must be >= 0 (0 = never), got {redraw}")
        if chunk < 1:
            raise ConfigError(f"mixer 'performer': chunk must be >= 1, got {chunk}")
        self.features, self.redraw, self.eps, self.chunk = features, redraw, eps, chunk
        # A buffer, not a parameter: the projection is sampled, never trained, but saved with
        # the model so a reloaded model computes the same function.
        self.register_buffer("projection", orthogonal_gaussian_projection(features, self.head_dim))
        self.calls_since_redraw = 0

    @torch.no_grad()
    def redraw_projection(self) -> None:
        """Draw a fresh random projection (from torch's global generator)."""
        fresh = orthogonal_gaussian_projection(self.features, self.head_dim)
        self.projection.copy_(fresh.to(self.projection))
        self.calls_since_redraw = 0

    def feature_maps(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """phi(q'), phi(k') [B, H, L, m] with the stabilisers described in the class doc, and
        the key factor exp(-s) (broadcastable to [B, H, 1, 1]) that eps must be scaled by."""
        scale = self.head_dim ** -0.25
        q, k = q * scale, k * scale
        w = self.projection.to(q.dtype)
        wq, wk = feature_logits(q, w), feature_logits(k, w)
        q_shift = wq.amax(-1, keepdim=True).detach()
        if self.causal:
            k_shift = (w.square().sum(-1).amax() / 2).reshape(1, 1, 1, 1)
        else:
            real = wk if mask is None else wk.masked_fill(~mask[:, None, :, None], float("-inf"))
            k_shift = real.amax(dim=(-1, -2), keepdim=True).detach()
        phi_q = positive_random_features(wq, q_shift)
        phi_k = positive_random_features(wk, k_shift, floor_shifted=True)
        return phi_q, phi_k, torch.exp(-k_shift)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        if self.training and self.redraw:
            if self.calls_since_redraw >= self.redraw:
                self.redraw_projection()
            self.calls_since_redraw += 1
        q, k, v = self.qkv(x)
        # Every quantity here is per head (the stabilisers too), so heads can run in groups.
        # Groups keep each [B, h, L, m] feature tensor under MAX_FEATURE_BYTES: glibc hands
        # allocations above its 32 MiB mmap ceiling fresh, page-faulted memory on every call,
        # which made long sequences cost more than linearly.
        per_head = q.shape[0] * q.shape[2] * self.features * q.element_size()
        group = max(1, MAX_FEATURE_BYTES // max(per_head, 1))
        if group >= self.heads:
            out = self.attend(q, k, v, mask)
        else:
            out = torch.cat([self.attend(q[:, h:h + group], k[:, h:h + group], v[:, h:h + group], mask)
                             for h in range(0, self.heads, group)], dim=1)
        return self.o_proj(self.merge(out))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        """FAVOR+ on head-split q, k, v [B, h, L, Dh] (any number of heads h)."""
        phi_q, phi_k, key_factor = self.feature_maps(q, k, mask)
        eps = self.eps * key_factor
        if mask is not None:
            phi_k = phi_k * mask[:, None, :, None].to(phi_k.dtype)
        if self.causal:
            return causal_linear_attention_chunked(phi_q, phi_k, v, eps.reshape(()), self.chunk)
        return linear_attention(phi_q, phi_k, v, eps)
