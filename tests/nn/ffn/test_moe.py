"""MoE routing, capacity and auxiliary losses against hand-computed references."""
import pytest
import torch

from anyformer import registry
from anyformer.errors import ConfigError
from anyformer.nn.ffn.moe import load_balancing_loss

D = 16


def test_one_expert_equals_mlp_on_same_weights():
    moe = registry.build("ffn", "moe", dim=D, experts=1, top_k=1, ratio=2.0, capacity_factor=1.0)
    mlp = registry.build("ffn", "mlp", dim=D, ratio=2.0)
    mlp.load_state_dict(moe.experts[0].state_dict())
    x = torch.randn(2, 8, D)
    assert torch.allclose(moe(x), mlp(x), atol=1e-6)
    assert torch.allclose(moe.expert_usage, torch.ones(1))


def test_balancing_loss_is_one_for_uniform_router_and_larger_when_skewed():
    N, E = 64, 4
    uniform = torch.full((N, E), 1.0 / E)
    balanced = torch.arange(N)[:, None] % E
    assert torch.allclose(load_balancing_loss(uniform, balanced), torch.tensor(1.0))
    # A zero router gives uniform probabilities: the module's own loss hits the minimum too.
    moe = registry.build("ffn", "moe", dim=D, experts=E, top_k=1, balance_weight=1.0, z_weight=0.0)
    torch.nn.init.zeros_(moe.router.weight)
    moe(torch.randn(2, 8, D))
    assert torch.allclose(moe.aux_loss, torch.tensor(1.0))
    # Router concentrated on the expert that takes every token: loss approaches E.
    skewed = torch.zeros(N, E)
    skewed[:, 0] = 1.0
    assert torch.allclose(load_balancing_loss(skewed, torch.zeros(N, 1, dtype=torch.long)), torch.tensor(float(E)))


def test_z_loss_is_mean_squared_logsumexp():
    moe = registry.build("ffn", "moe", dim=D, experts=4, top_k=2, balance_weight=0.0, z_weight=1.0)
    x = torch.randn(3, 5, D)
    moe(x)
    want = torch.logsumexp(moe.router(x.reshape(-1, D)), -1).square().mean()
    assert torch.allclose(moe.aux_loss, want, atol=1e-6)


def test_overflow_drops_exactly_the_tokens_beyond_capacity():
    E, N = 4, 16
    # capacity = ceil(0.5 * 16 * 1 / 4) = 2 tokens per expert.
    moe = registry.build("ffn", "moe", dim=D, experts=E, top_k=1, capacity_factor=0.5)
    x = torch.randn(1, N, D)
    x[..., 0] = x[..., 0].abs() + 1.0
    with torch.no_grad():  # every token prefers expert 0
        moe.router.weight.zero_()
        moe.router.weight[0, 0] = 3.0
    y = moe(x)[0]
    gate = moe.router(x[0]).softmax(-1)[:, :1]
    want_kept = gate[:2] * moe.experts[0](x[0, :2])
    assert torch.allclose(y[:2], want_kept, atol=1e-6)
    assert torch.equal(y[2:], torch.zeros(N - 2, D))
    assert torch.allclose(moe.expert_usage, torch.tensor([1.0, 0, 0, 0]))


def test_top2_combines_both_experts_with_router_weights():
    moe = registry.build("ffn", "moe", dim=D, experts=3, top_k=2, renormalize=True)
    x = torch.randn(1, 6, D)
    y = moe(x)[0]
    probs = moe.router(x[0]).softmax(-1)
    g, idx = probs.topk(2, -1)
    g = g / g.sum(-1, keepdim=True)
    want = torch.stack([
        sum(g[t, j] * moe.experts[int(idx[t, j])](x[0, t]) for j in range(2)) for t in range(6)
    ])
    assert torch.allclose(y, want, atol=1e-6)
    assert torch.isclose(moe.expert_usage.sum(), torch.tensor(1.0))


def test_second_choices_yield_to_first_choices_under_capacity():
    moe = registry.build("ffn", "moe", dim=D, experts=3, top_k=2, capacity_factor=0.75)
    # capacity = ceil(0.75 * 4 * 2 / 3) = 2. Every token ranks expert 1 first, expert 0 second.
    x = torch.randn(1, 4, D)
    x[..., 0] = x[..., 0].abs() + 1.0
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[1, 0] = 3.0
        moe.router.weight[0, 0] = 1.5
    y = moe(x)[0]
    p = moe.router(x[0]).softmax(-1)
    want = p[:2, 1:2] * moe.experts[1](x[0, :2]) + p[:2, 0:1] * moe.experts[0](x[0, :2])
    assert torch.allclose(y[:2], want, atol=1e-6)
    assert torch.equal(y[2:], torch.zeros(2, D))


def test_bad_top_k_names_field_and_range():
    with pytest.raises(ConfigError, match=r"top_k 5 outside the valid range 1\.\.4"):
        registry.build("ffn", "moe", dim=D, experts=4, top_k=5)


def test_reachable_from_yaml_config():
    import anyformer as af

    model = af.create("vit", image_size=8, patch_size=2, channels=1, dim=32, depth=1,
                      ffn={"name": "moe", "experts": 4, "top_k": 2, "capacity_factor": 1.25})
    out = model(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)
    assert model.stack.blocks[0].ffn.expert_usage.shape == (4,)
