"""DAFF against a hand-written reference, the class-token rule, and SOPE's shape."""
import pytest
import torch
import torch.nn.functional as F

import anyformer as af
from anyformer import registry
from anyformer.errors import ConfigError

D, H, W = 16, 3, 4


def _reference(ffn, x):
    """DAFF written out op by op from the paper's description (eval-mode BN)."""
    cls, tok = x[:, :1], x[:, 1:]
    B = x.shape[0]
    g = tok.transpose(1, 2).reshape(B, D, H, W)

    def bn(m, t):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    h = F.gelu(bn(ffn.bn1, F.conv2d(g, ffn.expand.weight, ffn.expand.bias)))
    d = F.conv2d(h, ffn.depthwise.weight, ffn.depthwise.bias, padding=1, groups=h.shape[1])
    h = h + F.gelu(bn(ffn.bn2, d))
    o = bn(ffn.bn3, F.conv2d(h, ffn.project.weight, ffn.project.bias))
    pooled = o.mean((2, 3))
    se = ffn.excite(F.gelu(ffn.compress(pooled)))
    return torch.cat([cls * se[:, None], o.flatten(2).transpose(1, 2)], 1)


def test_daff_matches_reference_and_cls_only_rescaled():
    ffn = registry.build("ffn", "conv", dim=D, grid=(H, W), ratio=2.0)
    for bn in (ffn.bn1, ffn.bn2, ffn.bn3):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    ffn.eval()
    x = torch.randn(2, 1 + H * W, D)
    assert torch.allclose(ffn(x), _reference(ffn, x), atol=1e-5)
    # Changing only the class token changes only the class token's output, linearly.
    x2 = x.clone()
    x2[:, 0] *= 2
    y, y2 = ffn(x), ffn(x2)
    assert torch.allclose(y[:, 1:], y2[:, 1:]) and torch.allclose(y2[:, 0], 2 * y[:, 0], atol=1e-6)


def test_depthwise_conv_mixes_only_grid_neighbours():
    ffn = registry.build("ffn", "conv", dim=D, grid=(H, W), ratio=1.0).eval()
    x = torch.randn(1, H * W, D)
    x2 = x.clone()
    x2[0, 0] += 1.0  # token at grid (0, 0)
    # Without a class token the SE rescales every token; switch it off (weights constant 1)
    # so only the convolutions' receptive field shows.
    torch.nn.init.zeros_(ffn.excite.weight)
    torch.nn.init.ones_(ffn.excite.bias)
    changed = (ffn(x2) - ffn(x)).abs().amax(-1)[0].view(H, W) > 1e-7
    want = torch.zeros(H, W, dtype=torch.bool)
    want[:2, :2] = True
    assert torch.equal(changed, want)


def test_conv_ffn_on_a_sequence_task_is_a_config_error():
    with pytest.raises(ConfigError, match="needs a 2-D token grid"):
        af.create("bert", dim=32, depth=1, max_len=16, ffn="conv")


def test_dhvt_patches_stem_and_model_from_config():
    enc = registry.build("encoder", "dhvt-patches", dim=32, image_size=16, patch_size=4, channels=3)
    convs = [m for m in enc.proj if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32] and all(c.stride == (2, 2) and c.kernel_size == (3, 3) for c in convs)
    tokens, _ = enc(torch.randn(2, 3, 16, 16))
    assert tokens.shape == (2, 17, 32) and enc.grid == (4, 4)
    model = af.create({"preset": "vit", "encoder": {"name": "dhvt-patches", "image_size": 8, "patch_size": 2, "channels": 1},
                       "ffn": "conv", "position": "none", "dim": 32, "depth": 1})
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ConfigError, match="power of two"):
        registry.build("encoder", "dhvt-patches", dim=32, patch_size=3, image_size=9)
