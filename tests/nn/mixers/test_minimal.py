"""Minimal attention: collapsed/symmetric scores against softmax attention, exact
parameter counts, and the MLP-free preset."""
import math

import pytest
import torch

import anyformer as af

from .test_attention_math import reference_softmax

D, H, L = 32, 4, 16
Dh = D // H


def _build(**opts):
    return af.build("mixer", "minimal", dim=D, heads=H, max_len=L, **opts).double().eval()


def _params(m):
    return sum(p.numel() for p in m.parameters())


def test_defaults_equal_softmax_attention():
    m = _build()
    x = torch.randn(2, L, D, dtype=torch.float64)
    assert torch.allclose(m(x), reference_softmax(m, x), atol=1e-10)


def test_collapsed_qk_equals_softmax_with_product_matrix():
    soft = af.build("mixer", "softmax", dim=D, heads=H, max_len=L, bias=False).double().eval()
    m = _build(collapse_qk=True, bias=False)
    Wq = soft.q_proj.weight.T.view(D, H, Dh)
    Wk = soft.k_proj.weight.T.view(D, H, Dh)
    with torch.no_grad():
        # scores x W_q W_k^T x^T / sqrt(Dh) == x W_qk x^T / sqrt(D)
        m.q_proj.weight.copy_(torch.einsum("dhe,fhe->hdf", Wq, Wk) * math.sqrt(D / Dh))
        m.v_proj.weight.copy_(soft.v_proj.weight)
        m.o_proj.weight.copy_(soft.o_proj.weight)
    x = torch.randn(2, L, D, dtype=torch.float64)
    assert torch.allclose(m(x), soft(x), atol=1e-10)


@pytest.mark.parametrize("collapse", [False, True])
def test_symmetric_scores_are_symmetric(collapse):
    m = _build(symmetric=True, collapse_qk=collapse)
    x = torch.randn(2, L, D, dtype=torch.float64)
    s = m.scores(x)
    assert torch.allclose(s, s.transpose(-1, -2), atol=1e-12)
    asym = _build(collapse_qk=collapse).scores(x)
    assert not torch.allclose(asym, asym.transpose(-1, -2), atol=1e-3)


def test_no_value_no_out_is_convex_combination_of_inputs():
    m = _build(no_value=True, no_out=True)
    x = torch.randn(2, L, D, dtype=torch.float64)
    attn = m.scores(x).softmax(-1)  # [B, H, L, L]
    xh = x.view(2, L, H, Dh).transpose(1, 2)
    want = (attn @ xh).transpose(1, 2).reshape(2, L, D)
    assert torch.allclose(m(x), want, atol=1e-10)


def test_parameter_counts_fall_as_the_paper_says():
    full = 4 * (D * D + D)  # W_q, W_k, W_v, W_o with biases
    assert _params(_build()) == full
    # Q = K: one of the two query/key matrices is gone.
    assert _params(_build(symmetric=True)) == 3 * (D * D + D)
    # Collapsed: one D x D matrix per head replaces W_q and W_k (and their biases).
    assert _params(_build(collapse_qk=True)) == H * D * D + 2 * (D * D + D)
    # Collapsed and symmetric: the upper triangle only.
    assert _params(_build(collapse_qk=True, symmetric=True)) == H * D * (D + 1) // 2 + 2 * (D * D + D)
    assert _params(_build(no_value=True)) == 3 * (D * D + D)
    assert _params(_build(no_value=True, no_out=True)) == 2 * (D * D + D)
    # One head, everything reduced: D(D+1)/2 parameters in total, under 13% of the full layer.
    one = af.build("mixer", "minimal", dim=D, heads=1, max_len=L, collapse_qk=True, symmetric=True,
                   no_value=True, no_out=True)
    assert _params(one) == D * (D + 1) // 2


def test_minimal_preset_has_no_mlp():
    model = af.create("minimal", dim=32, heads=4, depth=2)
    mlp = af.create("minimal", dim=32, heads=4, depth=2, ffn="mlp")
    block = model.stack.blocks[0]
    assert block.ffn.registry_name == "none" and block.sublayers[1].norm_in is None
    assert sum(p.numel() for p in block.ffn.parameters()) == 0
    per_block_mlp = 2 * 32 * 128 + 128 + 32 + 2 * 32  # fc1, fc2 and the ffn's pre-norm
    assert sum(p.numel() for p in mlp.parameters()) - sum(p.numel() for p in model.parameters()) == 2 * per_block_mlp
    x = model.encoder.example_input(batch=2)
    tokens, _ = model.encoder(x)
    tokens = model.position(tokens)
    # The layer is the attention residual alone: x + mixer(norm(x)).
    sub = block.sublayers[0]
    assert torch.allclose(block(tokens), tokens + block.mixer(sub.norm_in(tokens)), atol=1e-6)
