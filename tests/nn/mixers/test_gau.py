"""GAU against its formula written out directly."""
import math

import pytest
import torch
import torch.nn.functional as F

import anyformer as af

from ..helpers import padding_mask

D, L = 32, 16


def _reference(m, x, scores, causal=False, mask=None):
    e = m.o_proj.in_features
    W_u, W_v = m.uv_proj.weight[:e], m.uv_proj.weight[e:]
    b_u, b_v = m.uv_proj.bias[:e], m.uv_proj.bias[e:]
    U, V = F.silu(x @ W_u.T + b_u), F.silu(x @ W_v.T + b_v)
    Z = F.silu(m.z_proj(x))
    Q, K = Z * m.gamma[0] + m.beta[0], Z * m.gamma[1] + m.beta[1]
    qk = Q @ K.transpose(-1, -2)
    allowed = torch.ones(x.shape[0], L, L, dtype=torch.bool)
    if causal:
        allowed &= torch.ones(L, L, dtype=torch.bool).tril()
    if mask is not None:
        allowed &= mask[:, None, :]
    if scores == "softmax":
        A = (qk / math.sqrt(m.qk_dim)).masked_fill(~allowed, float("-inf")).softmax(-1)
    else:
        n = mask.sum(-1)[:, None, None].double() if mask is not None else L
        A = torch.relu(qk / n) ** 2 * allowed
    return m.o_proj(U * (A @ V))


@pytest.mark.parametrize("scores", ["relu2", "softmax"])
@pytest.mark.parametrize("causal", [False, True])
def test_gau_matches_formula(scores, causal):
    m = af.build("mixer", "gau", dim=D, heads=4, max_len=L, causal=causal, scores=scores, qk_dim=16).double()
    x = torch.randn(2, L, D, dtype=torch.float64)
    assert torch.allclose(m(x), _reference(m, x, scores, causal), atol=1e-10)
    mask = padding_mask()
    got, want = m(x, mask), _reference(m, x, scores, causal, mask)
    assert torch.allclose(got[mask], want[mask], atol=1e-10)


def test_q_and_k_share_one_base():
    m = af.build("mixer", "gau", dim=D, heads=4, max_len=L, qk_dim=16)
    names = {n for n, _ in m.named_parameters()}
    assert names == {"uv_proj.weight", "uv_proj.bias", "z_proj.weight", "z_proj.bias", "gamma", "beta",
                     "o_proj.weight", "o_proj.bias"}
    assert m.gamma.shape == m.beta.shape == (2, 16)
