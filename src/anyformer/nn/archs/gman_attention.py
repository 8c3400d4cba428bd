"""GMAN's parts: the spatio-temporal embedding, spatial / temporal / transform attention and
the gated fusion (Zheng et al. 2020, sec. 4). Hidden states are [B, T, N, D]: batch, time
steps, sensors, width."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.nn.archs.gman_inputs import DAYS_PER_WEEK


def two_layer_fc(d_in: int, dim: int) -> nn.Sequential:
    """GMAN's FC(units=[D, D], activations=[ReLU, None]); the paper's batch norm is left out."""
    return nn.Sequential(nn.Linear(d_in, dim), nn.ReLU(), nn.Linear(dim, dim))


class SpatioTemporalEmbedding(nn.Module):
    """STE = FC(SE) + FC(TE) (GMAN eq. 1): SE the sensors' spatial features [B, N, K]
    (Laplacian eigenvectors; None when the model has no spatial embedding: SE = 0), TE the
    one-hot slot of the day and day of the week of each step [B, T] -> [B, T, N, D]."""

    def __init__(self, dim: int, spatial_size: int | None, steps_per_day: int) -> None:
        super().__init__()
        self.steps_per_day = steps_per_day
        self.spatial_fc = two_layer_fc(spatial_size, dim) if spatial_size is not None else None
        self.temporal_fc = two_layer_fc(steps_per_day + DAYS_PER_WEEK, dim)

    def forward(self, slot: torch.Tensor, day: torch.Tensor, spatial: torch.Tensor | None, sensors: int) -> torch.Tensor:
        dtype = self.temporal_fc[0].weight.dtype
        onehot = torch.cat([F.one_hot(slot, self.steps_per_day), F.one_hot(day, DAYS_PER_WEEK)], -1).to(dtype)
        te = self.temporal_fc(onehot)[:, :, None]  # [B, T, 1, D]
        if self.spatial_fc is None:
            return te.expand(-1, -1, sensors, -1)
        return te + self.spatial_fc(spatial)[:, None]  # SE [B, 1, N, D]


class GmanAttention(nn.Module):
    """Multi-head attention with GMAN's ReLU-FC projections (sec. 4.2): q, k, v =
    ReLU(FC(.)) of [.., L, d_q] / [.., S, d_k] / [.., S, d_v] inputs, softmax(q k^T / sqrt(d)) v
    per head, then a 2-layer FC -> [.., L, D]. Leading dims are batch dims."""

    def __init__(self, dim: int, heads: int, d_query: int, d_key: int, d_value: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, dim) for d in (d_query, d_key, d_value))
        self.o_proj = two_layer_fc(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        lead, length = x.shape[:-2], x.shape[-2]
        return x.reshape(-1, length, self.heads, x.shape[-1] // self.heads).transpose(1, 2), lead

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, causal: bool = False) -> torch.Tensor:
        q, lead = self._split(F.relu(self.q_proj(query)))
        k, _ = self._split(F.relu(self.k_proj(key)))
        v, _ = self._split(F.relu(self.v_proj(value)))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        out = out.transpose(1, 2).reshape(*lead, query.shape[-2], -1)
        return self.o_proj(out)


class SpatialAttention(nn.Module):
    """GMAN spatial attention (eq. 2-4): at each step, every sensor attends over all sensors
    with queries, keys and values from [H, STE]. h, ste [B, T, N, D] -> [B, T, N, D]."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = GmanAttention(dim, heads, 2 * dim, 2 * dim, 2 * dim)

    def forward(self, h: torch.Tensor, ste: torch.Tensor) -> torch.Tensor:
        x = torch.cat([h, ste], -1)
        return self.attn(x, x, x)


class TemporalAttention(nn.Module):
    """GMAN temporal attention (eq. 5-7): each sensor's steps attend over its own steps,
    queries, keys and values from [H, STE]; causal as in the reference code's encoder
    (a step sees itself and earlier steps). h, ste [B, T, N, D] -> [B, T, N, D]."""

    def __init__(self, dim: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        self.attn = GmanAttention(dim, heads, 2 * dim, 2 * dim, 2 * dim)

    def forward(self, h: torch.Tensor, ste: torch.Tensor) -> torch.Tensor:
        x = torch.cat([h, ste], -1).transpose(1, 2)  # [B, N, T, 2D]
        return self.attn(x, x, x, causal=self.causal).transpose(1, 2)


class GatedFusion(nn.Module):
    """GMAN gated fusion (eq. 8-9): z = sigmoid(HS Wz1 + HT Wz2 + b), H = z HS + (1 - z) HT,
    then a 2-layer FC. hs, ht [B, T, N, D] -> [B, T, N, D]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.spatial_gate = nn.Linear(dim, dim, bias=False)
        self.temporal_gate = nn.Linear(dim, dim)
        self.out = two_layer_fc(dim, dim)

    def forward(self, hs: torch.Tensor, ht: torch.Tensor) -> torch.Tensor:
        z = torch.sigmoid(self.spatial_gate(hs) + self.temporal_gate(ht))
        return self.out(z * hs + (1 - z) * ht)


class STAttentionBlock(nn.Module):
    """One residual ST-Attention block (GMAN fig. 2b): H + fuse(spatial(H, STE),
    temporal(H, STE)). Without spatial attention (a model blind to the other sensors) the
    block is H + FC(temporal(H, STE)). h, ste [B, T, N, D] -> [B, T, N, D]."""

    def __init__(self, dim: int, heads: int, spatial_attention: bool, causal: bool) -> None:
        super().__init__()
        self.spatial = SpatialAttention(dim, heads) if spatial_attention else None
        self.temporal = TemporalAttention(dim, heads, causal)
        self.fusion = GatedFusion(dim) if spatial_attention else two_layer_fc(dim, dim)

    def forward(self, h: torch.Tensor, ste: torch.Tensor) -> torch.Tensor:
        ht = self.temporal(h, ste)
        if self.spatial is None:
            return h + self.fusion(ht)
        return h + self.fusion(self.spatial(h, ste), ht)


class TransformAttention(nn.Module):
    """GMAN transform attention (eq. 10-11): for each sensor, the Q future steps attend
    over the P past steps, queries from the future STE [B, Q, N, D], keys from the past STE
    [B, P, N, D], values the encoder's output h [B, P, N, D] -> [B, Q, N, D]."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = GmanAttention(dim, heads, dim, dim, dim)

    def forward(self, h: torch.Tensor, ste_past: torch.Tensor, ste_future: torch.Tensor) -> torch.Tensor:
        out = self.attn(ste_future.transpose(1, 2), ste_past.transpose(1, 2), h.transpose(1, 2))
        return out.transpose(1, 2)
