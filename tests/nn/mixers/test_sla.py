"""SLA against ReLU linear attention and an explicit depthwise convolution."""
import pytest
import torch

import anyformer as af
from anyformer.errors import ConfigError

from ..helpers import padding_mask

D, H, L = 32, 4, 16
Dh = D // H


def _pair(causal=False, grid=None, **opts):
    sla = af.build("mixer", "sla", dim=D, heads=H, max_len=L, causal=causal, grid=grid, **opts).double().eval()
    lin = af.build("mixer", "linear", dim=D, heads=H, max_len=L, causal=causal, feature_map="relu").double().eval()
    lin.load_state_dict(sla.state_dict(), strict=False)
    return sla, lin


@pytest.mark.parametrize("causal", [False, True])
def test_without_conv_equals_relu_linear_attention(causal):
    sla, lin = _pair(causal=causal, conv=False)
    x = torch.randn(2, L, D, dtype=torch.float64)
    assert torch.allclose(sla(x), lin(x), atol=1e-10)
    mask = padding_mask()
    assert torch.allclose(sla(x, mask)[mask], lin(x, mask)[mask], atol=1e-10)


def _values(m, x):
    return m.v_proj(x).view(x.shape[0], L, H, Dh)  # [B, L, H, Dh]


@pytest.mark.parametrize("causal", [False, True])
def test_conv_term_is_depthwise_convolution_of_values_1d(causal):
    sla, lin = _pair(causal=causal, kernel_size=3)
    x = torch.randn(2, L, D, dtype=torch.float64)
    v = _values(sla, x)
    w = sla.dwc.weight[:, 0]  # [Dh, 3]
    offsets = (-2, -1, 0) if causal else (-1, 0, 1)
    conv = sla.dwc.bias.expand(2, L, H, Dh).clone()
    for t, off in enumerate(offsets):
        for i in range(L):
            if 0 <= i + off < L:
                conv[:, i] += v[:, i + off] * w[:, t]
    extra = conv.reshape(2, L, D) @ sla.o_proj.weight.T
    assert torch.allclose(sla(x) - lin(x), extra, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_conv_term_on_grid(causal):
    grid = (4, 4)
    sla, lin = _pair(causal=causal, grid=grid, kernel_size=3)
    x = torch.randn(2, L, D, dtype=torch.float64)
    v = _values(sla, x).view(2, 4, 4, H, Dh)
    w = sla.dwc.weight[:, 0]  # [Dh, 3, 3]
    conv = sla.dwc.bias.expand(2, 4, 4, H, Dh).clone()
    for r in range(4):
        for c in range(4):
            for a in (-1, 0, 1):
                for b in (-1, 0, 1):
                    if causal and (a > 0 or (a == 0 and b > 0)):
                        continue  # a causal tap never reads a later raster position
                    if 0 <= r + a < 4 and 0 <= c + b < 4:
                        conv[:, r, c] += v[:, r + a, c + b] * w[:, a + 1, b + 1]
    extra = conv.reshape(2, L, D) @ sla.o_proj.weight.T
    assert torch.allclose(sla(x) - lin(x), extra, atol=1e-10)


def test_grid_needs_exactly_grid_tokens():
    with pytest.raises(ConfigError, match="cls_token"):
        af.build("mixer", "sla", dim=D, heads=H, max_len=L + 1, grid=(4, 4), num_tokens=L + 1)
    with pytest.raises(ConfigError, match="kernel_size"):
        af.build("mixer", "sla", dim=D, heads=H, max_len=L, kernel_size=4)
