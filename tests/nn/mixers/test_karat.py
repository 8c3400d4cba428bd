"""Fourier-KArAt: with coefficients chosen to reproduce cos, attention equals cos(scores)."""
import math

import torch

import anyformer as af

from ..helpers import padding_mask

D, H, L = 32, 4, 16
Dh = D // H


def _heads(m, x):
    split = lambda t: t.view(x.shape[0], L, H, Dh).transpose(1, 2)  # noqa: E731
    return split(m.q_proj(x)), split(m.k_proj(x)), split(m.v_proj(x))


def _cos_operator(causal=False):
    """rank = N, one frequency, a[p, j] = delta_pj, b = 0, W = I: A_ij = cos(s_ij)."""
    m = af.build("mixer", "karat", dim=D, heads=H, max_len=L, causal=causal, rank=L, grid_size=1).double()
    with torch.no_grad():
        m.cos_coef.zero_()
        m.cos_coef[:, :, :, 0] = torch.eye(L)
        m.sin_coef.zero_()
        m.lift.copy_(torch.eye(L))
    return m


def test_coefficients_reproducing_cos_give_cos_of_scores():
    m = _cos_operator()
    x = torch.randn(2, L, D, dtype=torch.float64)
    q, k, v = _heads(m, x)
    attn = torch.cos(q @ k.transpose(-1, -2) / math.sqrt(Dh))
    want = m.o_proj((attn @ v).transpose(1, 2).reshape(2, L, D))
    assert torch.allclose(m(x), want, atol=1e-10)
    # Causal: the same function on the lower triangle, zero above it.
    mc = _cos_operator(causal=True)
    mc.load_state_dict(m.state_dict())
    want_c = mc.o_proj(((attn * torch.ones(L, L).tril()) @ v).transpose(1, 2).reshape(2, L, D))
    assert torch.allclose(mc(x), want_c, atol=1e-10)


def test_operator_is_low_rank_kan_of_each_score_row():
    m = af.build("mixer", "karat", dim=D, heads=H, max_len=L, rank=3, grid_size=2).double()
    s = torch.randn(1, H, L, L, dtype=torch.float64)
    A = m.operator(s, None)
    h, i = 1, 5
    row = s[0, h, i]
    phi = torch.zeros(3, dtype=torch.float64)
    for p in range(3):
        for j in range(L):
            for g in range(2):
                phi[p] += m.cos_coef[h, p, j, g] * torch.cos((g + 1) * row[j]) + m.sin_coef[h, p, j, g] * torch.sin((g + 1) * row[j])
    assert torch.allclose(A[0, h, i], m.lift[h] @ phi, atol=1e-10)
    assert torch.linalg.matrix_rank(A[0, h]) <= 3


def test_padded_keys_get_zero_weight():
    m = _cos_operator()
    x = torch.randn(2, L, D, dtype=torch.float64)
    mask = padding_mask()
    q, k, v = _heads(m, x)
    attn = torch.cos(q @ k.transpose(-1, -2) / math.sqrt(Dh)) * mask[:, None, None, :]
    want = m.o_proj((attn @ v).transpose(1, 2).reshape(2, L, D))
    assert torch.allclose(m(x, mask)[mask], want[mask], atol=1e-10)


def test_init_follows_the_papers_basis_table():
    """Fourier coefficients a, b ~ N(0, 1) (the paper's basis table); W, not in the table,
    keeps U(-1/sqrt(r), 1/sqrt(r)). The old init scaled a, b by 1/sqrt(N G)."""
    torch.manual_seed(0)
    r, N, G = 12, 64, 3
    m = af.build("mixer", "karat", dim=D, heads=H, max_len=N, rank=r, grid_size=G)
    for coef in (m.cos_coef, m.sin_coef):
        c = coef.detach().flatten()  # H * r * N * G = 9216 draws
        assert coef.shape == (H, r, N, G)
        assert abs(c.mean()) < 0.05 and abs(c.std() - 1) < 0.05
        # Gaussian, not merely unit variance: ~68.3% within one sigma (uniform: 57.7%).
        assert abs((c.abs() < 1).float().mean() - 0.6827) < 0.02
    assert not torch.equal(m.cos_coef, m.sin_coef)
    w = m.lift.detach()
    assert w.abs().max() <= 1 / math.sqrt(r)
    assert abs(w.std() - 1 / math.sqrt(3 * r)) < 0.01
