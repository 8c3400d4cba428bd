"""FIT: reads and writes stay inside a group, global layers connect groups, padding is ignored."""
import pytest
import torch

import anyformer as af
from anyformer.errors import ConfigError

ENC = {"name": "patches", "image_size": 8, "patch_size": 2, "channels": 1, "cls_token": False}


def _fit(**arch):
    return af.create("vit", dim=32, heads=4, depth=1, encoder=ENC, head={"name": "mean", "num_classes": 10},
                     arch={"name": "fit", "group_size": 4, "latents": 2, **arch}).eval()


def test_cross_attention_stays_inside_each_group():
    model = _fit()
    G = model.num_groups
    data = torch.randn(G, 4, 32)
    z = torch.randn(G, 2, 32)
    read = model.reads[0](z, data)
    data2 = data.clone()
    data2[1] += torch.randn(4, 32)
    read2 = model.reads[0](z, data2)
    changed = (read2 - read).abs().amax((1, 2)) > 1e-6
    assert changed.tolist() == [g == 1 for g in range(G)]
    # Reference for one group: pre-norm residual multi-head cross-attention.
    ca = model.reads[0]
    q = ca.q_proj(ca.norm_q(z[0])).view(2, 4, 8).transpose(0, 1)
    h = ca.norm_kv(data[0])
    k, v = ca.k_proj(h).view(4, 4, 8).transpose(0, 1), ca.v_proj(h).view(4, 4, 8).transpose(0, 1)
    att = (q @ k.transpose(-1, -2) / 8 ** 0.5).softmax(-1) @ v
    assert torch.allclose(read[0], z[0] + ca.o_proj(att.transpose(0, 1).reshape(2, 32)), atol=1e-5)


def test_without_global_layers_groups_stay_independent_and_with_them_they_talk():
    images = torch.randn(1, 1, 8, 8)
    images2 = images.clone()
    images2[..., 0, :2] += 1.0  # the first patch: token 0, group 0

    def moved(model):
        _, h = model(images, return_hidden=True)
        _, h2 = model(images2, return_hidden=True)
        return ((h2[-1] - h[-1]).abs().amax(-1)[0] > 1e-6).view(-1, 4).any(1)

    assert moved(_fit(global_layers=0)).tolist() == [True] + [False] * 3
    assert moved(_fit(global_layers=1)).all()


def test_padding_does_not_reach_real_tokens():
    model = af.create("bert", vocab_size=50, max_len=15, dim=32, depth=2, arch={"name": "fit", "group_size": 4, "latents": 2}).eval()
    ids = torch.randint(0, 50, (2, 15))
    mask = torch.ones(2, 15, dtype=torch.bool)
    mask[0, 6:] = False
    ids2 = ids.clone()
    ids2[~mask] = torch.randint(0, 50, (int((~mask).sum()),))
    assert torch.allclose(model(ids, mask), model(ids2, mask), atol=1e-5)


def test_group_size_must_divide_the_tokens():
    with pytest.raises(ConfigError, match=r"group_size 5 must divide the 16 tokens .* valid: \[1, 2, 4, 8, 16\]"):
        _fit(group_size=5)
    with pytest.raises(ConfigError, match="cannot be causal"):
        af.create("gpt", dim=32, depth=1, max_len=16, arch={"name": "fit", "group_size": 4})
