"""MAXIM's multi-axis gated MLP: local block gMLP and global (dilated) grid gMLP in parallel."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.errors import ConfigError
from anyformer.nn.mixers.base import TokenMixer
from anyformer.nn.ranges import Count
from anyformer.registry import register


class SpatialGatingUnit(nn.Module):
    """gMLP's spatial gating unit over one token axis. z: [..., n, 2c] -> [..., n, c].

    u, v = split(z); v = LN(v); v' = W v + b along the n tokens (W: [n, n]);
    out = u * (v' + 1). The "+ 1" is MAXIM's way of starting as an identity gate (gMLP's
    unit bias): with W = 0, b = 0 the unit returns u. Tokens marked False in `real` are
    zeroed in v before the projection, so they add nothing to the others."""

    def __init__(self, channels: int, tokens: int, bias: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.weight = nn.Parameter(torch.randn(tokens, tokens) * 0.02)
        self.bias = nn.Parameter(torch.zeros(tokens)) if bias else None

    def forward(self, z: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        u, v = z.chunk(2, dim=-1)
        v = self.norm(v)
        if real is not None:
            v = v * real.to(v.dtype)
        v = torch.einsum("ij,...jc->...ic", self.weight.to(v.dtype), v)
        if self.bias is not None:
            v = v + self.bias.to(v.dtype)[:, None]
        return u * (v + 1.0)


class AxisGatedMLP(nn.Module):
    """One gMLP layer mixing the second-to-last axis: x + W_out SGU(gelu(W_in LN(x))).
    x: [..., n, c] -> [..., n, c] (MAXIM's BlockGmlpLayer / GridGmlpLayer, which differ
    only in the axis laid out as n)."""

    def __init__(self, channels: int, tokens: int, factor: int = 2, bias: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.in_proj = nn.Linear(channels, channels * factor, bias=bias)
        self.gate = SpatialGatingUnit(channels * factor // 2, tokens, bias=bias)
        self.out_proj = nn.Linear(channels * factor // 2, channels, bias=bias)

    def forward(self, x: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        y = self.gate(F.gelu(self.in_proj(self.norm(x))), real)
        return x + self.out_proj(y)


@register("mixer", "maxim")
class MultiAxisGatedMLP(TokenMixer):
    """MAXIM multi-axis gated MLP (Tu et al. 2022). x: [B, H*W, D] -> [B, H*W, D].

    z = gelu(x W_in) (width input_factor * D) is split in two halves. The global half
    goes through a grid gMLP: the H x W grid is cut into a grid_size x grid_size lattice
    of cells (cell H/g x W/g) and a spatial gating unit mixes the g*g tokens that share
    a position inside their cells (a dilated, image-wide mixing). The local half goes
    through a block gMLP: the gating unit mixes the b*b tokens of each non-overlapping
    block_size x block_size block. Each is a residual gMLP layer (LN, expand by `factor`,
    gelu, gating unit u * (W v + b + 1), project back); the halves are concatenated and
    projected to D. The block's own LayerNorm and shortcut are the Block's pre-norm and
    residual. Spatial weights are fixed-size, so the tokens must be exactly the grid (no
    [CLS]) and the grid must be divisible by both sizes. Padded tokens are zeroed before
    every spatial projection; no causal form."""

    complexity = "L*(b^2+g^2)"
    subquadratic = True
    reach_layers = None  # a window of tokens per layer: reach grows with depth
    paper = "MAXIM: Multi-Axis MLP for Image Processing (Tu et al. 2022)"
    needs_grid = True
    supports_causal = False
    example_options = {"block_size": 2, "grid_size": 2}

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, num_tokens: int | None = None,
                 block_size: Count = 4, grid_size: Count = 4, input_factor: Count = 2,
                 block_factor: Count = 2, grid_factor: Count = 2, bias: bool = True) -> None:
        super().__init__(dim, heads, max_len, causal, grid)
        H, W = self.grid
        self.check_grid_tokens(num_tokens, built=True)
        for field, size in (("block_size", block_size), ("grid_size", grid_size)):
            if size < 1 or H % size or W % size:
                divisors = [d for d in range(1, min(H, W) + 1) if H % d == 0 and W % d == 0]
                raise ConfigError(f"mixer 'maxim': {field} {size} does not divide grid {H}x{W}; allowed: {divisors}")
        for field, f in (("input_factor", input_factor), ("block_factor", block_factor), ("grid_factor", grid_factor)):
            if f < 1 or (dim * f) % 2:
                raise ConfigError(f"mixer 'maxim': {field} {f} must be >= 1 with dim * {field} even (dim {dim})")
        self.block_size, self.grid_size = block_size, grid_size
        half = dim * input_factor // 2
        self.half = half
        self.in_proj = nn.Linear(dim, 2 * half, bias=bias)
        self.grid_gmlp = AxisGatedMLP(half, grid_size * grid_size, grid_factor, bias)
        self.block_gmlp = AxisGatedMLP(dim * input_factor - half, block_size * block_size, block_factor, bias)
        self.out_proj = nn.Linear(dim * input_factor, dim, bias=bias)

    def split_cells(self, t: torch.Tensor, cell: tuple[int, int], across: bool) -> torch.Tensor:
        """[B, H, W, C] -> [B, positions, n, C]: n runs over the tokens inside each cell x cell
        block (across=False) or over the same position in every cell (across=True)."""
        B, H, W, C = t.shape
        ch, cw = cell
        t = t.view(B, H // ch, ch, W // cw, cw, C)
        order = (0, 2, 4, 1, 3, 5) if across else (0, 1, 3, 2, 4, 5)
        return t.permute(*order).reshape(B, -1, t.shape[order[3]] * t.shape[order[4]], C)

    def join_cells(self, t: torch.Tensor, cell: tuple[int, int], across: bool) -> torch.Tensor:
        """Inverse of split_cells: [B, positions, n, C] -> [B, H, W, C]."""
        (H, W), (ch, cw) = self.grid, cell
        B, C = t.shape[0], t.shape[-1]
        if across:
            t = t.view(B, ch, cw, H // ch, W // cw, C).permute(0, 3, 1, 4, 2, 5)
        else:
            t = t.view(B, H // ch, W // cw, ch, cw, C).permute(0, 1, 3, 2, 4, 5)
        return t.reshape(B, H, W, C)

    def branch(self, layer: AxisGatedMLP, t: torch.Tensor, real: torch.Tensor | None,
               cell: tuple[int, int], across: bool) -> torch.Tensor:
        part = self.split_cells(t, cell, across)
        mask = self.split_cells(real, cell, across) if real is not None else None
        return self.join_cells(layer(part, mask), cell, across)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        B, L, D = x.shape
        H, W = self.grid
        self.check_grid_tokens(L)
        z = F.gelu(self.in_proj(x)).view(B, H, W, -1)
        real = mask.view(B, H, W, 1) if mask is not None else None
        u, v = z[..., : self.half], z[..., self.half:]
        g, b = self.grid_size, self.block_size
        u = self.branch(self.grid_gmlp, u, real, (H // g, W // g), across=True)
        v = self.branch(self.block_gmlp, v, real, (b, b), across=False)
        return self.out_proj(torch.cat([u, v], dim=-1).reshape(B, L, -1))
