"""MAXIM's multi-axis gated MLP: the gating unit's identity start, both branches against a
global gMLP written out directly, the block/grid token layouts, and build-time errors."""
import pytest
import torch
import torch.nn.functional as F

import anyformer as af
from anyformer.errors import ConfigError
from anyformer.nn.mixers.maxim import SpatialGatingUnit

D, H, W = 32, 4, 4


def _maxim(**opts):
    return af.build("mixer", "maxim", dim=D, heads=4, max_len=H * W, grid=(H, W), **opts).double()


def _gmlp_reference(layer, x):
    """A gMLP layer over all tokens of x [B, n, c] (n = every token of the grid)."""
    y = F.gelu(layer.in_proj(F.layer_norm(x, x.shape[-1:], layer.norm.weight, layer.norm.bias)))
    u, v = y.chunk(2, dim=-1)
    sgu = layer.gate
    v = F.layer_norm(v, v.shape[-1:], sgu.norm.weight, sgu.norm.bias)
    v = sgu.weight @ v + sgu.bias[:, None]
    return x + layer.out_proj(u * (v + 1))


def test_zero_spatial_projection_gates_nothing():
    sgu = SpatialGatingUnit(8, 6).double()
    with torch.no_grad():
        sgu.weight.zero_()
        sgu.bias.zero_()
    z = torch.randn(3, 6, 16, dtype=torch.float64)
    assert torch.equal(sgu(z), z[..., :8])  # u * (0 + 1): the identity on the u half


def test_whole_grid_block_and_grid_equal_a_global_gmlp():
    m = _maxim(block_size=4, grid_size=4)
    x = torch.randn(2, H * W, D, dtype=torch.float64)
    z = F.gelu(m.in_proj(x))
    u, v = z[..., : m.half], z[..., m.half:]
    # One block = the whole grid, and a 4 x 4 lattice of 1 x 1 cells: both mix every token.
    want = m.out_proj(torch.cat([_gmlp_reference(m.grid_gmlp, u), _gmlp_reference(m.block_gmlp, v)], -1))
    assert torch.allclose(m(x), want, atol=1e-10)


def _jacobian_links(m, which):
    """Which tokens reach which through one branch: [L, L] bool."""
    x = torch.randn(1, H * W, D, dtype=torch.float64)
    other = m.block_gmlp if which == "grid" else m.grid_gmlp
    with torch.no_grad():  # silence the other branch's mixing, keep this one's
        other.gate.weight.zero_()
        other.gate.bias.zero_()
    jac = torch.autograd.functional.jacobian(lambda t: m(t), x)[0, :, :, 0]
    return jac.abs().sum(dim=(1, 3)) > 0


def test_block_branch_mixes_within_blocks_and_grid_branch_across_cells():
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    r, c = rows.flatten(), cols.flatten()
    same_block = ((r[:, None] // 2) == (r[None] // 2)) & ((c[:, None] // 2) == (c[None] // 2))
    same_offset = ((r[:, None] % 2) == (r[None] % 2)) & ((c[:, None] % 2) == (c[None] % 2))
    assert torch.equal(_jacobian_links(_maxim(block_size=2, grid_size=2), "block"), same_block)
    # Grid 2: 2 x 2 cells of 2 x 2 tokens; tokens at the same place in their cells meet.
    assert torch.equal(_jacobian_links(_maxim(block_size=2, grid_size=2), "grid"), same_offset)


def test_layout_round_trip():
    m = _maxim(block_size=2, grid_size=2)
    t = torch.randn(2, H, W, 3, dtype=torch.float64)
    for across in (False, True):
        assert torch.equal(m.join_cells(m.split_cells(t, (2, 2), across), (2, 2), across), t)


def test_build_errors():
    with pytest.raises(ConfigError, match="block_size 3 does not divide grid 4x4"):
        _maxim(block_size=3, grid_size=2)
    with pytest.raises(ConfigError, match="grid_size 3"):
        _maxim(block_size=2, grid_size=3)
    with pytest.raises(ConfigError, match="cls_token"):
        af.build("mixer", "maxim", dim=D, heads=4, max_len=17, grid=(H, W), num_tokens=17, block_size=2, grid_size=2)
    with pytest.raises(ConfigError, match="2-D token grid"):
        af.build("mixer", "maxim", dim=D, heads=4, max_len=16)
