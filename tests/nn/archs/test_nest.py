"""NesT: one level is a plain stack; attention stays inside blocks; aggregation by hand."""
import pytest
import torch
import torch.nn.functional as F

import anyformer as af
from anyformer.errors import ConfigError
from anyformer.nn.archs.hierarchy import blockify, unblockify

ENC = {"name": "patches", "image_size": 16, "patch_size": 2, "channels": 1, "cls_token": False}
BASE = dict(dim=32, heads=4, encoder=ENC, head={"name": "mean", "num_classes": 10})


def test_blockify_roundtrip_and_layout():
    x = torch.arange(2 * 16 * 1.0).view(2, 16, 1)  # a 4x4 grid per sample
    b = blockify(x, (4, 4), 2)
    assert b.shape == (8, 4, 1) and b[0, :, 0].tolist() == [0, 1, 4, 5] and b[1, :, 0].tolist() == [2, 3, 6, 7]
    assert torch.equal(unblockify(b, (4, 4), 2), x)


def test_single_level_equals_the_plain_stack_on_the_same_weights():
    nest = af.create("vit", **BASE, depth=2, arch={"name": "nest", "levels": 1, "block_size": 8}).eval()
    stack = af.create("vit", **BASE, depth=2).eval()
    state = {k.replace("positions.0.", "position."): v for k, v in nest.state_dict().items()}
    stack.load_state_dict(state)
    images = torch.randn(2, 1, 16, 16)
    assert torch.allclose(nest(images), stack(images), atol=1e-5)


def test_level_zero_attention_stays_inside_each_block():
    model = af.create("vit", **BASE, depth=3, arch={"name": "nest", "levels": 2, "block_size": 4}).eval()
    images = torch.randn(1, 1, 16, 16)
    _, hidden = model(images, return_hidden=True)
    images2 = images.clone()
    images2[..., :8, :8] += 1.0  # the pixels of block 0 (tokens rows 0-3, cols 0-3)
    _, hidden2 = model(images2, return_hidden=True)
    level0 = model.level_depths[0] - 1
    changed = (hidden[level0] - hidden2[level0]).abs().amax(-1)[0].view(8, 8) > 1e-6
    want = torch.zeros(8, 8, dtype=torch.bool)
    want[:4, :4] = True
    assert torch.equal(changed, want)
    # After aggregation every token can be affected.
    assert (hidden[-1] - hidden2[-1]).abs().amax(-1).gt(1e-6).all()


def test_block_aggregation_is_conv_norm_maxpool():
    model = af.create("vit", **BASE, depth=2, arch={"name": "nest", "levels": 2, "block_size": 4})
    agg = model.transitions[0]
    x = torch.randn(2, 64, 32)
    img = x.transpose(1, 2).reshape(2, 32, 8, 8)
    h = F.conv2d(img, agg.conv.weight, agg.conv.bias, padding=1)
    h = F.layer_norm(h.permute(0, 2, 3, 1), (32,), agg.norm.weight, agg.norm.bias).permute(0, 3, 1, 2)
    want = F.max_pool2d(h, 3, 2, 1).flatten(2).transpose(1, 2)
    assert torch.allclose(agg(x, (8, 8)), want, atol=1e-6)


def test_block_size_that_does_not_divide_the_grid_is_a_config_error():
    with pytest.raises(ConfigError, match=r"block_size 3 .* must divide the token grid 8x8; valid block_size for 2 levels: \[1, 2, 4\]"):
        af.create("vit", **BASE, depth=2, arch={"name": "nest", "levels": 2, "block_size": 3})
    with pytest.raises(ConfigError, match="cls_token: false"):
        af.create("vit", dim=32, depth=2, image_size=16, arch={"name": "nest", "levels": 2, "block_size": 2})
    with pytest.raises(ConfigError, match="2-D token grid"):
        af.create("bert", dim=32, depth=2, arch={"name": "nest"})


def test_a_huge_level_count_is_refused_without_building_its_power_of_two():
    with pytest.raises(ConfigError, match=r"^arch 'nest': levels 1000000 halve the token grid 8x8 999999 times; at most 4 levels fit it$"):
        af.create("vit", **BASE, depth=2, arch={"name": "nest", "levels": 10 ** 6, "block_size": 2})
    with pytest.raises(ConfigError, match=r"model.arch.block_size must be >= 1, got 0 \(arch 'nest'\)"):
        af.create("vit", **BASE, depth=2, arch={"name": "nest", "levels": 2, "block_size": 0})
