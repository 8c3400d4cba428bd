"""Activator's GLU unit against its formula; it mixes channels of each token, never tokens;
the preset and its MLP-free variant."""
import pytest
import torch
import torch.nn.functional as F

import anyformer as af
from anyformer.errors import ConfigError

D, L = 32, 16


def _layer_norm(t, weight, bias, eps=1e-5):
    mu = t.mean(-1, keepdim=True)
    var = (t - mu).square().mean(-1, keepdim=True)
    return (t - mu) / torch.sqrt(var + eps) * weight + bias


@pytest.mark.parametrize("activation,fn", [("gelu", F.gelu), ("silu", F.silu), ("relu", F.relu)])
def test_activator_matches_formula(activation, fn):
    m = af.build("mixer", "activator", dim=D, heads=4, max_len=L, activation=activation).double()
    with torch.no_grad():  # non-trivial norm parameters, so sharing them is visible
        m.norm.weight.normal_()
        m.norm.bias.normal_()
    x = torch.randn(2, L, D, dtype=torch.float64)
    w, b = m.norm.weight, m.norm.bias
    u = _layer_norm(fn(x @ m.u_proj.weight.T + m.u_proj.bias), w, b)
    v = _layer_norm(x @ m.v_proj.weight.T + m.v_proj.bias, w, b)
    want = (u * v) @ m.o_proj.weight.T + m.o_proj.bias
    assert torch.allclose(m(x), want, atol=1e-10)


def test_activator_mixes_no_tokens():
    m = af.build("mixer", "activator", dim=D, heads=4, max_len=L).double()
    x = torch.randn(1, L, D, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: m(t), x)[0, :, :, 0]  # [L, D, L, D]
    across = jac.abs().sum(dim=(1, 3))  # influence of token j on token i
    assert torch.count_nonzero(across - torch.diag(torch.diagonal(across))) == 0
    assert (torch.diagonal(across) > 0).all()
    perm = torch.randperm(L)
    assert torch.allclose(m(x[:, perm]), m(x)[:, perm], atol=1e-12)


def test_activator_width_and_errors():
    m = af.build("mixer", "activator", dim=D, heads=4, max_len=L, expansion=3)
    assert m.u_proj.out_features == m.v_proj.out_features == m.o_proj.in_features == 3 * D
    assert sum(p.numel() for p in m.norm.parameters()) == 2 * 3 * D  # one norm, shared
    with pytest.raises(ConfigError, match="did you mean 'gelu'"):
        af.build("mixer", "activator", dim=D, heads=4, max_len=L, activation="geluu")
    with pytest.raises(ConfigError, match="expansion"):
        af.build("mixer", "activator", dim=D, heads=4, max_len=L, expansion=0.0)


def test_activator_presets():
    full = af.create("activator", dim=32, heads=4, depth=2)
    lite = af.create("activator-lite", dim=32, heads=4, depth=2)
    assert full.stack.blocks[0].mixer.registry_name == lite.stack.blocks[0].mixer.registry_name == "activator"
    assert full.stack.blocks[0].ffn.registry_name == "mlp" and lite.stack.blocks[0].ffn.registry_name == "none"
    per_block_mlp = 2 * 32 * 64 + 64 + 32 + 2 * 32  # fc1, fc2 (ratio 2) and the ffn's pre-norm
    assert sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in lite.parameters()) == 2 * per_block_mlp
    x = lite.encoder.example_input(batch=2)
    tokens, _ = lite.encoder(x)
    assert lite.position.applies_to == "none"  # no position embedding, as in the reference
    block, sub = lite.stack.blocks[0], lite.stack.blocks[0].sublayers[0]
    # Without the second MLP a layer is the gating unit's residual branch alone.
    assert torch.allclose(block(tokens), tokens + block.mixer(sub.norm_in(tokens)), atol=1e-6)
    assert lite(x).shape == (2, 10)
