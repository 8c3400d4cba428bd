"""Linear attention with a positive feature map (Katharopoulos et al. 2020)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.errors import unknown
from anyformer.nn.mixers.base import AttentionMixer, refuse_padded_decoding
from anyformer.nn.ranges import Count, Epsilon
from anyformer.registry import register

FEATURE_MAPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "elu": lambda t: F.elu(t) + 1.0,
    "relu": F.relu,
}
FeatureMap = Literal[tuple(FEATURE_MAPS)]

def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """Non-causal: y_i = q_i^T S / (q_i^T z), S = sum_j k_j v_j^T, z = sum_j k_j.
    q, k already feature-mapped; [B, H, L, Dh] -> [B, H, L, Dv]."""
    S = torch.einsum("bhld,bhle->bhde", k, v)
    z = k.sum(dim=2)
    num = torch.einsum("bhld,bhde->bhle", q, S)
    den = torch.einsum("bhld,bhd->bhl", q, z)[..., None]
    return num / (den + eps)

def causal_linear_attention_cumsum(q, k, v, eps: float) -> torch.Tensor:
    """Causal by explicit prefix sums: S_i = sum_{j<=i} k_j v_j^T. Memory [B, H, L, Dh, Dv]:
    a reference, kept for tests and very short sequences."""
    S = torch.einsum("bhld,bhle->bhlde", k, v).cumsum(dim=2)
    z = k.cumsum(dim=2)
    num = torch.einsum("bhld,bhlde->bhle", q, S)
    den = (q * z).sum(-1, keepdim=True)
    return num / (den + eps)

def causal_linear_attention_recurrent(q, k, v, eps: float) -> torch.Tensor:
    """Causal as the RNN of the paper's section 3.4: one step per position."""
    B, H, L, Dh = q.shape
    S = q.new_zeros(B, H, Dh, v.shape[-1])
    z = q.new_zeros(B, H, Dh)
    out = []
    for i in range(L):
        S = S + k[:, :, i, :, None] * v[:, :, i, None, :]
        z = z + k[:, :, i]
        num = torch.einsum("bhd,bhde->bhe", q[:, :, i], S)
        den = (q[:, :, i] * z).sum(-1, keepdim=True)
        out.append(num / (den + eps))
    return torch.stack(out, dim=2)

def causal_linear_attention_chunked(q, k, v, eps: float, chunk: int = 64) -> torch.Tensor:
    """Causal prefix sums taken chunk by chunk: inside a chunk a masked L_c x L_c product,
    across chunks a running state (S, z). Same values as the cumsum form with memory
    O(L * Dh + Dh * Dv) per head and matmul-shaped work."""
    return causal_linear_attention_from(q, k, v, eps, chunk)[0]

def causal_linear_attention_from(q, k, v, eps: float, chunk: int = 64, state=None):
    """The chunked causal form continued from a recurrent state (S [B, H, Dh, Dv], z
    [B, H, Dh]) of earlier tokens (None: nothing before): returns (out, the state after
    these tokens), the RNN view of the paper's section 3.4 that decoding runs on."""
    B, H, L, Dh = q.shape
    if L == 1 and state is not None:  # one decoding step: the recurrence itself, four ops
        S, z = state[0] + k.transpose(2, 3) @ v, state[1] + k[:, :, 0]
        out = (q @ S) / ((q[:, :, 0] * z).sum(-1)[..., None, None] + eps)
        return out, (S, z)
    Dv = v.shape[-1]
    chunk = max(1, min(chunk, L))  # a chunk past the end would only be padding to allocate
    n = -(-L // chunk)
    pad = n * chunk - L
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    qc = q.view(B, H, n, chunk, Dh)
    kc = k.view(B, H, n, chunk, Dh)
    vc = v.view(B, H, n, chunk, Dv)
    # State entering each chunk: exclusive prefix sum over chunks.
    S_chunk = torch.einsum("bhncd,bhnce->bhnde", kc, vc)
    S_prev = S_chunk.cumsum(dim=2) - S_chunk
    z_chunk = kc.sum(dim=3)
    z_prev = z_chunk.cumsum(dim=2) - z_chunk
    if state is not None:
        S_prev, z_prev = S_prev + state[0][:, :, None], z_prev + state[1][:, :, None]
    tri = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    scores = torch.einsum("bhncd,bhnkd->bhnck", qc, kc).masked_fill(~tri, 0.0)
    num = torch.einsum("bhnck,bhnke->bhnce", scores, vc) + torch.einsum("bhncd,bhnde->bhnce", qc, S_prev)
    den = scores.sum(-1) + torch.einsum("bhncd,bhnd->bhnc", qc, z_prev)
    out = num / (den[..., None] + eps)
    after = (S_prev[:, :, -1] + S_chunk[:, :, -1], z_prev[:, :, -1] + z_chunk[:, :, -1])
    return out.reshape(B, H, n * chunk, Dv)[:, :, :L], after

@register("mixer", "linear")
class LinearAttention(AttentionMixer):
    """Linear attention, phi(x) = elu(x) + 1 (Katharopoulos et al. 2020). x: [B, L, D] -> [B, L, D].

    y_i = phi(q_i)^T S / (phi(q_i)^T z), S = sum_j phi(k_j) v_j^T, z = sum_j phi(k_j);
    causal: sums over j <= i, computed chunk-wise; masked keys are removed from S and z."""

    complexity = "L"
    subquadratic = True
    paper = "Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention (Katharopoulos et al. 2020)"
    accepts_token_subset = True  # a set operation over the tokens: a filtered subset is fine
    supports_kv_heads = True  # k/v repeated to the query heads by qkv()
    supports_decoding = True  # the recurrent state (S, z): O(1) per new token
    supported_positions = frozenset()

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, bias: bool = True,
                 feature_map: FeatureMap = "elu", eps: Epsilon = 1e-6, chunk: Count = 64,
                 kv_heads: Count | None = None) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias, kv_heads=kv_heads)
        if feature_map not in FEATURE_MAPS:
            raise unknown("feature_map of mixer 'linear'", feature_map, FEATURE_MAPS)
        self.feature_map = feature_map
        self.eps = eps
        self.chunk = chunk

    def input_linears(self) -> list[nn.Linear]:
        """q/k/v projections: forward reads x only through them, so an input affine map
        (a folded BatchNorm) moves into their weights exactly."""
        return [self.q_proj, self.k_proj, self.v_proj]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        """Linear attention on head-split, feature-mapped q, k and v [B, H, L, Dh]."""
        if mask is not None:
            k = k * mask[:, None, :, None].to(k.dtype)
        if self.causal:
            return causal_linear_attention_chunked(q, k, v, self.eps, self.chunk)
        return linear_attention(q, k, v, self.eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        q, k, v = self.qkv(x)
        phi = FEATURE_MAPS[self.feature_map]
        cache = self.decode_cache()
        if cache is not None and self.causal:
            refuse_padded_decoding(self, mask)
            out, cache["state"] = causal_linear_attention_from(phi(q), phi(k), v, self.eps, self.chunk, cache.get("state"))
        else:
            out = self.attend(phi(q), phi(k), v, mask)
        return self.o_proj(self.merge(out))
