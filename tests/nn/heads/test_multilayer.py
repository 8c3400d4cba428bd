"""multilayer pooling and the k-layer MLP head, against references built in the test."""
import pytest
import torch
import torch.nn.functional as F

import anyformer as af
from anyformer import registry
from anyformer.errors import ConfigError

D = 16


def test_multilayer_is_cross_attention_over_pooled_layers():
    head = registry.build("head", "multilayer", dim=D, num_classes=3, heads=2, token="last").eval()
    with torch.no_grad():
        head.layer_embedding.normal_()
    hidden = [torch.randn(2, 5, D) for _ in range(4)]
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    last = torch.stack([torch.stack([h[0, 4], h[1, 2]]) for h in hidden], 1) + head.layer_embedding[:4]
    att = head.attention
    wq, wk, wv = att.in_proj_weight.chunk(3)
    bq, bk, bv = att.in_proj_bias.chunk(3)
    q = (head.query[0] @ wq.T + bq).view(1, 2, D // 2).transpose(0, 1)  # [heads, 1, dh]
    k = (last @ wk.T + bk).view(2, 4, 2, D // 2).transpose(1, 2)  # [B, heads, N, dh]
    v = (last @ wv.T + bv).view(2, 4, 2, D // 2).transpose(1, 2)
    w = (q[None] @ k.transpose(-1, -2) / (D // 2) ** 0.5).softmax(-1)
    o = (w @ v).transpose(1, 2).reshape(2, D) @ att.out_proj.weight.T + att.out_proj.bias
    want = head.fc(o)
    assert torch.allclose(head(hidden[-1], mask, hidden), want, atol=1e-5)
    # Every layer matters: changing the first layer's output changes the logits.
    hidden2 = [hidden[0] + 1.0] + hidden[1:]
    assert not torch.allclose(head(hidden[-1], mask, hidden2), want, atol=1e-4)


def test_mlp_cls_is_a_k_layer_mlp_on_the_mean():
    head = registry.build("head", "mlp-cls", dim=D, num_classes=5, layers=3, hidden=8).eval()
    assert head.multi_label
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)] + [head.fc]
    assert [(m.in_features, m.out_features) for m in linears] == [(D, 8), (8, 8), (8, 5)]
    x = torch.randn(2, 6, D)
    h = x.mean(1)
    for m in linears[:-1]:
        h = F.relu(m(h))
    assert torch.allclose(head(x), linears[-1](h), atol=1e-6)
    with pytest.raises(ConfigError, match="layers must be >= 1"):
        registry.build("head", "mlp-cls", dim=D, layers=0)


def test_heads_reachable_from_config():
    for head in ({"name": "multilayer", "token": "first"}, {"name": "mlp-cls", "layers": 2}):
        model = af.create("vit", image_size=8, patch_size=2, channels=1, dim=32, depth=2, head={**head, "num_classes": 10})
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_max_layers_below_depth_is_refused_at_build_with_the_config_path():
    # Before: the model built and its first forward raised a ShapeError.
    spec = dict(dim=D, heads=2, depth=3, max_len=8, head={"name": "multilayer", "num_classes": 2, "max_layers": 2})
    with pytest.raises(ConfigError, match=r"^model.head.max_layers 2 is below the 3 layer outputs the model gives \(model.depth 3\); set head.max_layers to at least 3$"):
        af.create("bert", **spec)
    # FIT gives one output per FIT block, model.depth of them too.
    fit = dict(spec, depth=2, arch={"name": "fit", "group_size": 4, "latents": 1}, max_len=8,
               encoder={"name": "patches", "image_size": 8, "patch_size": 2, "channels": 1, "cls_token": False})
    with pytest.raises(ConfigError, match=r"max_layers 2 is below the 3 layer outputs"):
        af.create("vit", **dict(fit, depth=3))
    model = af.create("vit", **fit)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 2)
    model = af.create("bert", **dict(spec, head=dict(spec["head"], max_layers=3)))
    assert model(torch.randint(0, 256, (2, 8))).shape == (2, 2)
