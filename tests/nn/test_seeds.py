"""stack_seeds: K plain ViTs folded into one module compute each seed's own forward and
gradients (float64), and anything but the plain ViT is refused by name."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import anyformer as af
from anyformer.nn.seeds import StackedLayerNorm, StackedLinear, stack_seeds

ENCODER = {"name": "patches", "image_size": 8, "patch_size": 2, "channels": 1, "cls_token": True}
HEAD = {"name": "cls", "num_classes": 10}


def vit(seed: int, **overrides):
    torch.manual_seed(seed)
    dim, head = overrides.pop("dim", 64), overrides.pop("head", HEAD)
    return af.create("vit", dim=dim, encoder=ENCODER, head=head, **overrides).double()


def seed_models(k: int = 3, **overrides):
    return [vit(100 + i, **overrides) for i in range(k)]


def test_stacked_forward_and_gradients_match_each_seed():
    models = seed_models(3)
    stacked = stack_seeds(models)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 1, 8, 8, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (3, 5), generator=gen)

    out = stacked(x)
    assert out.shape == (3, 5, 10)
    for k, m in enumerate(models):
        assert (out[k] - m(x[k])).abs().max() < 1e-10

    sum(F.cross_entropy(out[k], y[k]) for k in range(3)).backward()
    for m, xk, yk in zip(models, x, y):
        F.cross_entropy(m(xk), yk).backward()
    for k, m in enumerate(models):
        grads = {
            "patch": (stacked.patch.weight.grad[k], m.encoder.proj.weight.grad.flatten(1)),
            "patch bias": (stacked.patch.bias.grad[k], m.encoder.proj.bias.grad),
            "cls": (stacked.cls.grad[k], m.encoder.cls.grad),
            "pos": (stacked.pos.grad[k, 0], m.position.weight.grad),
            "head": (stacked.head.weight.grad[k], m.head.fc.weight.grad),
            "final norm": (stacked.final_norm.weight.grad[k], m.final_norm.weight.grad),
        }
        for i, (sb, b) in enumerate(zip(stacked.blocks, m.stack.blocks)):
            mixer, ffn = b.part("mixer"), b.part("ffn")
            grads.update({
                f"{i} q": (sb.q.weight.grad[k], mixer.q_proj.weight.grad),
                f"{i} k bias": (sb.k.bias.grad[k], mixer.k_proj.bias.grad),
                f"{i} v": (sb.v.weight.grad[k], mixer.v_proj.weight.grad),
                f"{i} o": (sb.o.weight.grad[k], mixer.o_proj.weight.grad),
                f"{i} fc1": (sb.fc1.weight.grad[k], ffn.fc1.weight.grad),
                f"{i} fc2 bias": (sb.fc2.bias.grad[k], ffn.fc2.bias.grad),
                f"{i} norm1 w": (sb.norm1.weight.grad[k], b.path("mixer").norm_in.weight.grad),
                f"{i} norm2 b": (sb.norm2.bias.grad[k], b.path("ffn").norm_in.bias.grad),
            })
        for name, (a, b) in grads.items():
            assert (a - b).abs().max() < 1e-10, (k, name)
    n_model = sum(p.numel() for p in models[0].parameters())
    assert sum(p.numel() for p in stacked.parameters()) == 3 * n_model


def test_stacked_adamw_step_matches_and_unstacks():
    models = seed_models(2, dim=32, heads=2)
    stacked = stack_seeds(models)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64)  # [K, B, H, W]: one channel
    y = torch.randint(0, 10, (2, 4), generator=gen)
    opt = torch.optim.AdamW(stacked.parameters(), lr=1e-2)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in models]
    for _ in range(3):
        opt.zero_grad()
        out = stacked(x)
        sum(F.cross_entropy(out[k], y[k]) for k in range(2)).backward()
        opt.step()
        for m, o, xk, yk in zip(models, opts, x, y):
            o.zero_grad()
            F.cross_entropy(m(xk), yk).backward()
            o.step()
    out = stacked(x)
    for k, m in enumerate(models):
        assert (out[k] - m(x[k])).abs().max() < 1e-9
    fresh = seed_models(2, dim=32, heads=2)
    stacked.unstack_into(fresh)
    for a, b in zip(fresh, models):
        for (n, p), q in zip(a.named_parameters(), b.parameters()):
            # Adam divides by sqrt(v): the k-projection biases, whose gradients are ~0 (softmax
            # ignores a shift shared by every key), amplify rounding to ~1e-11.
            assert (p - q).abs().max() < 1e-9, n


def test_single_seed_and_causal_free_shapes():
    models = seed_models(1)
    stacked = stack_seeds(models)
    x = torch.randn(1, 3, 1, 8, 8, dtype=torch.float64)
    assert (stacked(x)[0] - models[0](x[0])).abs().max() < 1e-10
    with pytest.raises(ValueError, match="expects images"):
        stacked(torch.randn(2, 3, 1, 8, 8, dtype=torch.float64))


@pytest.mark.parametrize("overrides, name", [
    ({"mixer": "linear"}, "LinearAttention"),
    ({"ffn": {"name": "moe", "experts": 2}}, "MixtureOfExperts"),
    ({"norm": {"name": "rmsnorm", "placement": "pre"}}, "RMSNorm"),
    ({"head": {"name": "mean", "num_classes": 10}}, "MeanHead"),
])
def test_refuses_other_components_by_type(overrides, name):
    models = seed_models(2, **overrides)
    with pytest.raises(ValueError, match=name):
        stack_seeds(models)


def test_refuses_mismatched_models():
    with pytest.raises(ValueError, match="identically configured"):
        stack_seeds([vit(0), vit(1, dim=32, heads=2)])


def test_building_blocks():
    lins = [torch.nn.Linear(4, 3).double() for _ in range(2)]
    sl = StackedLinear.from_linears(lins)
    x = torch.randn(2, 5, 6, 4, dtype=torch.float64)
    out = sl(x)
    for k in range(2):
        assert (out[k] - lins[k](x[k])).abs().max() < 1e-12
    from anyformer.nn.norms.layernorm import LayerNorm

    norms = [LayerNorm(4).double() for _ in range(2)]
    for n in norms:
        torch.nn.init.normal_(n.weight)
        torch.nn.init.normal_(n.bias)
    sn = StackedLayerNorm.from_norms(norms)
    out = sn(x)
    for k in range(2):
        assert (out[k] - norms[k](x[k])).abs().max() < 1e-12
    with pytest.raises(ValueError, match="Conv1d"):
        StackedLinear.from_linears([torch.nn.Conv1d(1, 1, 1)])
