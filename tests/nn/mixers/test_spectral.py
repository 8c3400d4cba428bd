"""FNet and GFNet against their formulas; the SpectFormer preset's layer schedule."""
import pytest
import torch

import anyformer as af
from anyformer.errors import ConfigError

from ..helpers import padding_mask

D, H, L = 32, 4, 16


def test_fnet_is_real_part_of_2d_dft():
    m = af.build("mixer", "fnet", dim=D, heads=H, max_len=L)
    x = torch.randn(2, L, D, dtype=torch.float64)
    want = torch.stack([torch.fft.fft2(x[b]).real for b in range(2)])
    assert torch.allclose(m(x), want, atol=1e-10)
    # The same via explicit DFT matrices: Re(F_L x F_D).
    FL = torch.fft.fft(torch.eye(L, dtype=torch.float64), dim=0)
    FD = torch.fft.fft(torch.eye(D, dtype=torch.float64), dim=0)
    assert torch.allclose(m(x), (FL @ x.to(FL.dtype) @ FD).real, atol=1e-9)
    assert sum(p.numel() for p in m.parameters()) == 0


def test_fnet_refuses_mask_and_causal():
    with pytest.raises(ConfigError, match="causal"):
        af.build("mixer", "fnet", dim=D, heads=H, max_len=L, causal=True)
    with pytest.raises(ConfigError, match="mask"):
        af.build("mixer", "fnet", dim=D, heads=H, max_len=L)(torch.randn(2, L, D), padding_mask())


@pytest.mark.parametrize("grid", [None, (4, 4)])
def test_gfnet_all_ones_filter_is_identity(grid):
    m = af.build("mixer", "gfnet", dim=D, heads=H, max_len=L, grid=grid).double()
    with torch.no_grad():
        m.filter.zero_()
        m.filter[..., 0] = 1.0
    x = torch.randn(2, L, D, dtype=torch.float64)
    assert torch.allclose(m(x), x, atol=1e-10)
    if grid is None:  # shorter inputs are zero-padded to max_len: still the identity
        assert torch.allclose(m(x[:, :10]), x[:, :10], atol=1e-10)


def test_gfnet_1d_is_circular_convolution_with_filter_impulse_response():
    m = af.build("mixer", "gfnet", dim=D, heads=H, max_len=L).double()
    x = torch.randn(1, L, D, dtype=torch.float64)
    K = torch.view_as_complex(m.filter.detach())  # [L//2+1, D]
    h = torch.fft.irfft(K, n=L, dim=0)  # impulse response per channel [L, D]
    idx = (torch.arange(L)[:, None] - torch.arange(L)[None, :]) % L
    want = torch.einsum("ijd,jd->id", h[idx], x[0])
    assert torch.allclose(m(x)[0], want, atol=1e-10)


def test_gfnet_2d_uses_the_grid():
    m = af.build("mixer", "gfnet", dim=D, heads=H, max_len=L, grid=(4, 4)).double()
    assert m.filter.shape == (4, 3, D, 2)
    x = torch.randn(2, L, D, dtype=torch.float64)
    K = torch.view_as_complex(m.filter.detach())
    spec = torch.fft.rfft2(x.view(2, 4, 4, D), dim=(1, 2), norm="ortho") * K
    want = torch.fft.irfft2(spec, s=(4, 4), dim=(1, 2), norm="ortho").reshape(2, L, D)
    assert torch.allclose(m(x), want, atol=1e-10)
    with pytest.raises(ConfigError, match="16 tokens"):
        af.build("mixer", "gfnet", dim=D, heads=H, max_len=L + 1, grid=(4, 4))(torch.randn(1, L + 1, D))
    with pytest.raises(ConfigError, match="cls_token"):
        af.build("mixer", "gfnet", dim=D, heads=H, max_len=L + 1, grid=(4, 4), num_tokens=L + 1)


def test_spectformer_schedule_spectral_first():
    model = af.create("spectformer", dim=32, heads=4, depth=4)
    names = [b.mixer.registry_name for b in model.stack.blocks]
    assert names == ["gfnet", "gfnet", "softmax", "softmax"]
    assert model.stack.blocks[0].mixer.grid == (8, 8)
    out = model(model.encoder.example_input(batch=2))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_gfnet_in_vit_with_cls_token_fails_at_build():
    with pytest.raises(ConfigError, match="cls_token"):
        af.create("vit", dim=32, heads=4, depth=1, mixer="gfnet")
