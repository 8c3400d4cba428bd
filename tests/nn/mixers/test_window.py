"""Window attention against softmax attention and against explicit window masks."""
import torch

import anyformer as af

from .test_attention_math import reference_softmax

D, H, L = 32, 4, 16


def _build(**opts):
    return af.build("mixer", "window", dim=D, heads=H, max_len=L, grid=(4, 4), **opts).double().eval()


def test_whole_grid_window_equals_softmax():
    m = _build(window=4, relative_bias=False)
    x = torch.randn(2, L, D, dtype=torch.float64)
    assert torch.allclose(m(x), reference_softmax(m, x), atol=1e-10)


def _window_bias(window, shift):
    r, c = torch.arange(L) // 4, torch.arange(L) % 4
    # Shifted windows: positions after rolling by -shift; regions of the original grid.
    rs, cs = (r - shift) % 4, (c - shift) % 4
    same = ((rs // window)[:, None] == (rs // window)[None]) & ((cs // window)[:, None] == (cs // window)[None])
    if shift:
        def region(p):  # 0: untouched, 1: the band that wrapped around
            return torch.where(p < 4 - window, 0, torch.where(p < 4 - shift, 1, 2))
        same &= (region(rs)[:, None] == region(rs)[None]) & (region(cs)[:, None] == region(cs)[None])
    return torch.zeros(L, L, dtype=torch.float64).masked_fill(~same, float("-inf")), same


def test_windows_equal_masked_softmax():
    m = _build(window=2, relative_bias=False)
    x = torch.randn(2, L, D, dtype=torch.float64)
    bias, _ = _window_bias(2, 0)
    assert torch.allclose(m(x), reference_softmax(m, x, bias=bias), atol=1e-10)


def test_shifted_windows_never_attend_across_the_wrap_around():
    # Swin alternates: a layer of odd index shifts, one of even index does not.
    m = _build(window=2, shift=True, relative_bias=False, layer=1)
    x = torch.randn(2, L, D, dtype=torch.float64)
    bias, same = _window_bias(2, 1)
    assert torch.allclose(m(x), reference_softmax(m, x, bias=bias), atol=1e-10)
    plain, _ = _window_bias(2, 0)
    assert torch.allclose(m(x, layer=0), reference_softmax(m, x, bias=plain), atol=1e-10)
    assert torch.allclose(m(x, layer=3), m(x), atol=0)
    # Token (0, 0) shares a shifted window with (3, 3), (0, 3), (3, 0) after the roll,
    # but the mask keeps it alone with itself: they came from opposite edges.
    assert same[0].nonzero().flatten().tolist() == [0]
    x2 = x.clone()
    x2[:, [3, 12, 15]] += 5.0
    assert torch.allclose(m(x)[:, 0], m(x2)[:, 0], atol=1e-10)


def test_relative_bias_depends_on_offset_only():
    m = _build(window=2, relative_bias=True)
    with torch.no_grad():
        m.relative_bias.copy_(torch.randn_like(m.relative_bias))
    x = torch.randn(2, L, D, dtype=torch.float64)
    r, c = torch.arange(L) // 4, torch.arange(L) % 4
    win_bias, same = _window_bias(2, 0)
    off = ((r[:, None] - r[None] + 1) * 3 + (c[:, None] - c[None] + 1)).clamp(0, 8)
    rb = m.relative_bias[off].permute(2, 0, 1)  # [H, L, L]
    assert torch.allclose(m(x), reference_softmax(m, x, bias=rb + win_bias), atol=1e-10)
