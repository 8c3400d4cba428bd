"""Linformer against softmax attention and its low-rank formula."""
import math

import pytest
import torch

import anyformer as af
from anyformer.errors import ConfigError

from ..helpers import padding_mask

D, H, L = 32, 4, 16


def _with_softmax_weights(**opts):
    soft = af.build("mixer", "softmax", dim=D, heads=H, max_len=L).eval()
    lin = af.build("mixer", "linformer", dim=D, heads=H, max_len=L, **opts).eval()
    missing, unexpected = lin.load_state_dict(soft.state_dict(), strict=False)
    assert unexpected == [] and set(missing) <= {"proj_k", "proj_v"}
    return soft, lin


@pytest.mark.parametrize("sharing", ["none", "headwise", "kv"])
def test_identity_projections_equal_softmax(sharing):
    soft, lin = _with_softmax_weights(k=L, sharing=sharing)
    with torch.no_grad():
        for p in (lin.proj_k, lin.proj_v):
            if p is not None:
                p.copy_(torch.eye(L).expand_as(p))
    x = torch.randn(2, L, D)
    assert torch.allclose(lin(x), soft(x), atol=1e-5)


def test_low_rank_formula_per_head():
    lin = af.build("mixer", "linformer", dim=D, heads=H, max_len=L, k=5, sharing="none").eval()
    x = torch.randn(2, 12, D)  # shorter than max_len: the first 12 columns of E and F
    B, n = 2, 12
    split = lambda t: t.view(B, n, H, -1).transpose(1, 2)  # noqa: E731
    q, k, v = split(lin.q_proj(x)), split(lin.k_proj(x)), split(lin.v_proj(x))
    outs = []
    for h in range(H):
        E, Fm = lin.proj_k[h, :, :n], lin.proj_v[h, :, :n]
        s = q[:, h] @ (E @ k[:, h]).transpose(-1, -2) / math.sqrt(D // H)
        outs.append(s.softmax(-1) @ (Fm @ v[:, h]))
    want = lin.o_proj(torch.stack(outs, 1).transpose(1, 2).reshape(B, n, D))
    assert torch.allclose(lin(x), want, atol=1e-5)


def test_sharing_sets_parameter_count():
    n = {s: sum(p.numel() for p in af.build("mixer", "linformer", dim=D, heads=H, max_len=L, k=4, sharing=s).parameters())
         for s in ("none", "headwise", "kv")}
    base = 4 * (D * D + D)
    assert n["none"] - base == 2 * H * 4 * L
    assert n["headwise"] - base == 2 * 4 * L
    assert n["kv"] - base == 4 * L


def test_padding_zeroes_keys_and_values_before_projection():
    lin = af.build("mixer", "linformer", dim=D, heads=H, max_len=L, k=6).eval()
    x = torch.randn(2, L, D)
    mask = padding_mask()
    B = 2
    split = lambda t: t.view(B, L, H, -1).transpose(1, 2)  # noqa: E731
    keep = mask[:, None, :, None].float()
    q, k, v = split(lin.q_proj(x)), split(lin.k_proj(x)) * keep, split(lin.v_proj(x)) * keep
    E, Fm = lin.proj_k[0], lin.proj_v[0]
    s = q @ (E @ k).transpose(-1, -2) / math.sqrt(D // H)
    want = lin.o_proj((s.softmax(-1) @ (Fm @ v)).transpose(1, 2).reshape(B, L, D))
    assert torch.allclose(lin(x, mask), want, atol=1e-5)


def test_bad_options():
    with pytest.raises(ConfigError, match="layerwise"):
        af.build("mixer", "linformer", dim=D, heads=H, max_len=L, sharing="layerwise")
    with pytest.raises(ConfigError, match="causal"):
        af.build("mixer", "linformer", dim=D, heads=H, max_len=L, causal=True)
    assert af.build("mixer", "linformer", dim=D, heads=H, max_len=L, k=999).k == L
