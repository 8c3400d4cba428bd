"""Random-feature attention: frozen query-key matrices, trainable values."""
import math

import torch

import anyformer as af

D, H, L = 32, 4, 16


def test_frozen_qk_never_change_while_values_train():
    m = af.build("mixer", "random-feature", dim=D, heads=H, max_len=L)
    frozen = m.q_proj.weight.detach().clone()
    v0, o0 = m.v_proj.weight.detach().clone(), m.o_proj.weight.detach().clone()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        m(torch.randn(2, L, D)).square().mean().backward()
        assert m.q_proj.weight.grad is None
        opt.step()
    assert torch.equal(m.q_proj.weight, frozen)
    assert not torch.allclose(m.v_proj.weight, v0) and not torch.allclose(m.o_proj.weight, o0)
    # Frozen weights are still state: saved, and moved by .to().
    assert "q_proj.weight" in m.state_dict()
    assert m.double().q_proj.weight.dtype == torch.float64
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {
        "v_proj.weight", "v_proj.bias", "o_proj.weight", "o_proj.bias"}


def test_sampling_mean_and_std():
    torch.manual_seed(0)
    m = af.build("mixer", "random-feature", dim=64, heads=8, max_len=L, qk_mean=0.5, qk_std=0.1)
    W = m.q_proj.weight
    off = W - 0.5 * torch.eye(64)
    assert abs(off.mean().item()) < 0.01 and abs(off.std().item() - 0.1) < 0.01
    assert abs(W.diagonal(dim1=-2, dim2=-1).mean().item() - 0.5) < 0.02


def test_identity_mean_without_noise_scores_by_dot_product():
    m = af.build("mixer", "random-feature", dim=D, heads=H, max_len=L, qk_mean=1.0, qk_std=0.0).double()
    x = torch.randn(2, L, D, dtype=torch.float64)
    want = (x @ x.transpose(-1, -2) / math.sqrt(D))[:, None].expand(2, H, L, L)
    assert torch.allclose(m.scores(x), want, atol=1e-10)
    v = m.v_proj(x).view(2, L, H, D // H).transpose(1, 2)
    out = (want.softmax(-1) @ v).transpose(1, 2).reshape(2, L, D)
    assert torch.allclose(m(x), m.o_proj(out), atol=1e-10)
