"""Random-feature self-attention: frozen query-key matrices on unit tokens, trainable values."""
import math

import pytest
import torch
import torch.nn.functional as F

import anyformer as af
from anyformer.errors import ConfigError

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
    assert af.build("mixer", "random-feature", dim=64, heads=8, max_len=L).qk_std == 0.5
    with pytest.raises(ConfigError, match=r"qk_std must be in \[0, 8\], got -1.0"):
        af.build("mixer", "random-feature", dim=D, heads=H, max_len=L, qk_std=-1.0)


def test_identity_mean_without_noise_scores_by_cosine():
    m = af.build("mixer", "random-feature", dim=D, heads=H, max_len=L, qk_mean=1.0, qk_std=0.0).double()
    x = torch.randn(2, L, D, dtype=torch.float64) * 7  # the token norm must not matter
    u = F.normalize(x, dim=-1)
    want = (u @ u.transpose(-1, -2))[:, None].expand(2, H, L, L)
    assert torch.allclose(m.scores(x), want, atol=1e-10)
    v = m.v_proj(x).view(2, L, H, D // H).transpose(1, 2)
    out = (want.softmax(-1) @ v).transpose(1, 2).reshape(2, L, D)
    assert torch.allclose(m(x), m.o_proj(out), atol=1e-10)


def test_scores_are_the_bilinear_form_of_unit_tokens():
    torch.manual_seed(1)
    m = af.build("mixer", "random-feature", dim=8, heads=2, max_len=5, qk_mean=0.3).double()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    W = m.q_proj.weight
    s = m.scores(x)
    for h in range(2):
        for i in range(5):
            for j in range(5):
                ui, uj = x[0, i] / x[0, i].norm(), x[0, j] / x[0, j].norm()
                assert math.isclose(s[0, h, i, j].item(), (ui @ W[h] @ uj).item(), abs_tol=1e-12)


def mean_self_weight(m, x: torch.Tensor) -> float:
    with torch.no_grad():
        return m.scores(x).softmax(-1).diagonal(dim1=-2, dim2=-1).mean().item()


@pytest.mark.parametrize("dim", [32, 128, 256])
def test_biased_sampling_does_not_collapse_to_identity(dim):
    # The identity mean used to add ~sqrt(D) to each token's own score (self-weight 0.9992 at
    # D = 128, L = 16); on unit tokens it adds 1, whatever D.
    torch.manual_seed(0)
    m = af.build("mixer", "random-feature", dim=dim, heads=H, max_len=L, qk_mean=1.0)
    x = F.layer_norm(torch.randn(32, L, dim), (dim,))
    w = mean_self_weight(m, x)
    assert w < 0.5, f"D={dim}: mean self-weight {w:.3f}"
    # Still biased toward itself: above the zero-mean sampling's, which is near uniform (1/L).
    torch.manual_seed(0)
    w0 = mean_self_weight(af.build("mixer", "random-feature", dim=dim, heads=H, max_len=L), x)
    assert w0 < 2.0 / L < w
