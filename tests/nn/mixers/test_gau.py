"""GAU against its formula written out directly, per-query relu2 normalisation (causal
prefix independence, padding), and the reference's gamma init."""
import math

import pytest
import torch
import torch.nn.functional as F

import anyformer as af

from ..helpers import padding_mask

D, L = 32, 16


def _gau(causal=False, scores="relu2", max_len=L, qk_dim=16):
    """A float64 GAU whose scores are O(1): at the reference init (gamma ~ N(0, 0.02)) they
    are ~1e-6, too small for a comparison at any tolerance to tell normalisations apart."""
    torch.manual_seed(0)
    m = af.build("mixer", "gau", dim=D, heads=4, max_len=max_len, causal=causal, scores=scores,
                 qk_dim=qk_dim).double()
    with torch.no_grad():
        m.gamma.normal_(0.0, 1.0)
        m.beta.normal_(0.0, 0.5)
    return m


def _allowed(x, causal, mask):
    allowed = torch.ones(x.shape[0], x.shape[1], x.shape[1], dtype=torch.bool)
    if causal:
        allowed &= torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
    if mask is not None:
        allowed &= mask[:, None, :]
    return allowed


def _qk(m, x):
    Z = F.silu(m.z_proj(x))
    Q, K = Z * m.gamma[0] + m.beta[0], Z * m.gamma[1] + m.beta[1]
    return Q @ K.transpose(-1, -2)


def _reference(m, x, scores, causal=False, mask=None):
    e = m.o_proj.in_features
    W_u, W_v = m.uv_proj.weight[:e], m.uv_proj.weight[e:]
    b_u, b_v = m.uv_proj.bias[:e], m.uv_proj.bias[e:]
    U, V = F.silu(x @ W_u.T + b_u), F.silu(x @ W_v.T + b_v)
    qk = _qk(m, x)
    allowed = _allowed(x, causal, mask)
    if scores == "softmax":
        A = (qk / math.sqrt(m.qk_dim)).masked_fill(~allowed, float("-inf")).softmax(-1)
    else:
        n = allowed.sum(-1, keepdim=True).double()  # keys each query may see
        A = torch.relu(qk / n) ** 2 * allowed
    return m.o_proj(U * (A @ V))


@pytest.mark.parametrize("scores", ["relu2", "softmax"])
@pytest.mark.parametrize("causal", [False, True])
def test_gau_matches_formula(scores, causal):
    m = _gau(causal, scores)
    x = torch.randn(2, L, D, dtype=torch.float64)
    assert torch.allclose(m(x), _reference(m, x, scores, causal), atol=1e-10)
    mask = padding_mask()
    got, want = m(x, mask), _reference(m, x, scores, causal, mask)
    assert torch.allclose(got[mask], want[mask], atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_relu2_scores_divided_by_each_querys_allowed_key_count(causal):
    # Loop over queries: a_ij = relu(q_i . k_j / n_i)^2 with n_i = |{j allowed for i}|.
    m = _gau(causal)
    x = torch.randn(2, L, D, dtype=torch.float64)
    mask = padding_mask()
    qk = _qk(m, x)
    want = torch.zeros(2, L, L, dtype=torch.float64)
    for b in range(2):
        real = [j for j in range(L) if mask[b, j]]
        for i in real:
            keys = [j for j in real if not causal or j <= i]
            for j in keys:
                want[b, i, j] = torch.relu(qk[b, i, j] / len(keys)) ** 2
    got = m.attention(x, mask) * mask[..., None]
    assert torch.allclose(got, want, atol=1e-12)
    # Dividing by the full length instead would differ by a factor (n / n_i)^2, far above tolerance.
    assert want.abs().max() > 1e-2


@pytest.mark.parametrize("scores", ["relu2", "softmax"])
def test_causal_output_does_not_depend_on_how_many_tokens_follow(scores):
    m = _gau(causal=True, scores=scores, max_len=64)
    x = torch.randn(2, 64, D, dtype=torch.float64)
    with torch.no_grad():
        y64, y8, y1 = m(x), m(x[:, :8]), m(x[:, :1])
    assert (y64 - m.o_proj.bias).abs().max() > 1e-2  # the attention path is not negligible
    assert torch.allclose(y8, y64[:, :8], rtol=0, atol=1e-12)
    assert torch.allclose(y1, y64[:, :1], rtol=0, atol=1e-12)
    # A 1-token input attends only to itself: A = relu(q . k / 1)^2 (or 1 for softmax).
    qk = _qk(m, x[:, :1])
    a = torch.relu(qk) ** 2 if scores == "relu2" else torch.ones_like(qk)
    u, v = F.silu(m.uv_proj(x[:, :1])).chunk(2, dim=-1)
    assert torch.allclose(y1, m.o_proj(u * (a @ v)), atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_padded_rows_equal_the_unpadded_sequence(causal):
    # Only real keys count: a padded row gives the outputs of its real prefix alone,
    # whatever the padded tokens hold.
    m = _gau(causal)
    mask = padding_mask()
    x = torch.randn(2, L, D, dtype=torch.float64)
    x2 = x.clone()
    x2[~mask] = torch.randn(int((~mask).sum()), D, dtype=torch.float64) * 5
    y, y2 = m(x, mask), m(x2, mask)
    assert torch.allclose(y[mask], y2[mask], atol=1e-12)
    for b in range(2):
        n = int(mask[b].sum())
        assert torch.allclose(y[b, :n], m(x[b:b + 1, :n])[0], atol=1e-12)


def test_gamma_starts_at_small_normal_not_one():
    # MEGA / FLASH-pytorch: gamma ~ N(0, 0.02), beta = 0 (previously 1 + N(0, 0.02)).
    torch.manual_seed(0)
    m = af.build("mixer", "gau", dim=D, heads=4, max_len=L, qk_dim=2048)
    assert m.gamma.mean().abs() < 0.005
    assert 0.018 < m.gamma.std() < 0.022
    assert torch.equal(m.beta, torch.zeros_like(m.beta))


def test_q_and_k_share_one_base():
    m = af.build("mixer", "gau", dim=D, heads=4, max_len=L, qk_dim=16)
    names = {n for n, _ in m.named_parameters()}
    assert names == {"uv_proj.weight", "uv_proj.bias", "z_proj.weight", "z_proj.bias", "gamma", "beta",
                     "o_proj.weight", "o_proj.bias"}
    assert m.gamma.shape == m.beta.shape == (2, 16)
