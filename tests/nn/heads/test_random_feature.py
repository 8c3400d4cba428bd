"""The random-feature attention head against a loop over the paper's formula (Fu et al. 2023)."""
import math

import pytest
import torch

import anyformer as af
from anyformer import registry
from anyformer.errors import ConfigError
from anyformer.nn.heads.random_feature import default_num_heads

D, K, L = 8, 3, 6


def build(**options) -> torch.nn.Module:
    return registry.build("head", "random-feature", dim=D, num_classes=K, **options)


def naive(head, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """f_k = c sum_m (1/N) sum_i exp(<W_m, x_0 x_i^T>) <v_{m,k}, [x_i; 1]>, x on the unit sphere, one
    key at a time (softmax: exp(.) / sum_j exp(.) in place of exp(.) / N)."""
    out = torch.zeros(tokens.shape[0], head.num_classes, dtype=tokens.dtype)
    for b in range(tokens.shape[0]):
        x = [t / t.norm() for t in tokens[b]]
        keys = [i for i in range(1, len(x)) if mask is None or mask[b, i]]
        for m in range(head.num_heads):
            score = {i: (head.W[m] * torch.outer(x[0], x[i])).sum() for i in keys}  # <W_m, x_0 x_i^T>
            denom = sum(math.exp(s) for s in score.values()) if head.normalization == "softmax" else len(keys)
            for i in keys:
                for k in range(head.num_classes):
                    out[b, k] += head.c * math.exp(score[i]) / denom * (head.V[m, :D, k] @ x[i] + head.V[m, D, k])
    return out


def test_output_shape_and_default_heads():
    head = build()
    assert head(torch.randn(4, L, D)).shape == (4, K)
    assert head.num_heads == 1024 == default_num_heads(128)
    # Wide models get fewer heads so the frozen W stays <= 2^24 entries.
    assert default_num_heads(256) == 256 and default_num_heads(512) == 64
    assert registry.build("head", "random-feature", dim=16, num_heads=5).W.shape == (5, 16, 16)


@pytest.mark.parametrize("options", [
    {}, {"qk_mean": 1.0}, {"normalization": "softmax"}, {"scale": "sum", "qk_mean": 0.5},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_matches_a_loop_over_the_formula(options):
    torch.manual_seed(0)
    head = build(num_heads=5, **options).double()
    tokens = torch.randn(2, L, D, dtype=torch.float64) * 3
    mask = torch.ones(2, L, dtype=torch.bool)
    mask[1, 4:] = False
    for m in (None, mask):
        assert torch.allclose(head(tokens, m), naive(head, tokens, m), atol=1e-10)


def test_scale_sum_is_the_same_function_at_init():
    torch.manual_seed(0)
    mean = build(num_heads=7)
    torch.manual_seed(0)
    summed = build(num_heads=7, scale="sum")
    assert summed.c == 1.0 and mean.c == 1 / 7
    x = torch.randn(2, L, D)
    assert torch.allclose(mean(x), summed(x), atol=1e-6)


def test_only_the_values_train():
    head = build(num_heads=16)
    assert [n for n, p in head.named_parameters() if p.requires_grad] == ["V"]
    assert not head.W.requires_grad and "W" in head.state_dict()
    W0, V0 = head.W.clone(), head.V.detach().clone()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        head(torch.randn(4, L, D)).square().mean().backward()
        assert head.V.grad is not None and head.W.grad is None
        opt.step()
    assert torch.equal(head.W, W0) and not torch.allclose(head.V, V0)
    # The frozen W follows the module: .double() and state dicts.
    head.double()
    assert head.W.dtype == torch.float64
    copy = build(num_heads=16).double()
    copy.load_state_dict(head.state_dict())
    assert torch.equal(copy.W, head.W)


def test_seeded_sampling_and_the_biased_variant():
    torch.manual_seed(3)
    a = build(num_heads=4)
    torch.manual_seed(3)
    b = build(num_heads=4)
    assert torch.equal(a.W, b.W) and not torch.equal(a.W, build(num_heads=4).W)
    torch.manual_seed(0)
    W = registry.build("head", "random-feature", dim=64, num_heads=32, qk_mean=1.0, qk_std=0.25).W
    off = W - torch.eye(64)
    assert abs(off.mean().item()) < 0.01 and abs(off.std().item() - 0.25) < 0.01
    assert abs(W.diagonal(dim1=-2, dim2=-1).mean().item() - 1.0) < 0.02


@pytest.mark.parametrize("normalization", ["length", "softmax"])
def test_padded_keys_change_nothing(normalization):
    torch.manual_seed(0)
    head = build(num_heads=32, normalization=normalization)
    tokens = torch.randn(2, L, D)
    mask = torch.ones(2, L, dtype=torch.bool)
    mask[0, 3:] = False
    out = head(tokens, mask)
    tokens2 = tokens.clone()
    tokens2[~mask] = torch.randn(int((~mask).sum()), D) * 50 + 10
    assert torch.allclose(head(tokens2, mask), out, atol=1e-6)
    # A padded sample gives what its real tokens alone give; N counts only real keys.
    assert torch.allclose(head(tokens[:1, :3]), out[:1], atol=1e-6)
    # A sample whose only real token is the query has no keys: zero logits, not NaN.
    lone = torch.zeros(1, L, dtype=torch.bool)
    lone[0, 0] = True
    assert torch.equal(head(tokens[:1], lone), torch.zeros(1, K))


def test_query_is_the_first_token_and_keys_are_a_set():
    torch.manual_seed(0)
    head = build(num_heads=32)
    x = torch.randn(2, L, D)
    out = head(x)
    # Permutation invariant in the keys, not in the query.
    assert torch.allclose(head(x[:, [0, 3, 1, 5, 2, 4]]), out, atol=1e-5)
    assert not torch.allclose(head(x[:, [1, 0, 2, 3, 4, 5]]), out, atol=1e-4)
    # Only directions count: the paper's inputs are unit vectors.
    assert torch.allclose(head(x * torch.rand(2, L, 1) * 10), out, atol=1e-5)


@pytest.mark.parametrize("options,message", [
    ({"num_heads": 0}, "num_heads must be >= 1"),
    ({"qk_std": -0.1}, r"qk_std must be in \[0, 8\], got -0.1"),
    ({"qk_mean": 9.0}, r"qk_mean must be in \[-8, 8\], got 9.0"),
    ({"normalization": "sofmax"}, r"normalization must be one of 'length', 'softmax', got 'sofmax' \(did you mean 'softmax'\?\)"),
    ({"scale": "avg"}, "scale must be one of 'mean', 'sum', got 'avg'"),
    ({"num_classes": 0}, "num_classes must be >= 1"),
])
def test_bad_options_are_one_line_config_errors(options, message):
    with pytest.raises(ConfigError, match=message) as err:
        registry.build("head", "random-feature", dim=D, **options)
    assert "\n" not in str(err.value)


def test_learns_a_target_of_the_keys():
    # A target from the paper's class, f* = (1/N) sum_i <beta, x_i>: only V trains, and a
    # few Adam steps cut the error by more than half.
    torch.manual_seed(0)
    head = build(num_heads=256)
    x = torch.nn.functional.normalize(torch.randn(256, L, D), dim=-1)
    beta = torch.randn(D, K)
    y = x[:, 1:].mean(1) @ beta
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_reachable_from_a_model_config():
    model = af.create("vit", image_size=8, patch_size=2, channels=1, dim=32, depth=1,
                      head={"name": "random-feature", "num_classes": 10, "num_heads": 64, "qk_mean": 1.0})
    assert model.head.num_heads == 64 and model.head.qk_mean == 1.0
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
