"""Multi-stage ViT: one stage is a plain stack; the reduction is conv + pooled skip."""
import pytest
import torch
import torch.nn.functional as F

import anyformer as af
from anyformer.errors import ConfigError

IMG = dict(image_size=16, patch_size=2, channels=1, dim=32, heads=4)


def test_single_stage_equals_plain_stack_on_the_same_weights():
    ms = af.create("vit", **IMG, depth=2, arch={"name": "multistage", "stages": 1}).eval()
    stack = af.create("vit", **IMG, depth=2).eval()
    stack.load_state_dict(ms.state_dict())
    images = torch.randn(2, 1, 16, 16)
    assert torch.allclose(ms(images), stack(images), atol=1e-5)


def test_residual_reduction_by_hand_and_token_counts():
    model = af.create("vit", **IMG, depth=3, arch={"name": "multistage", "stages": 3}).eval()
    _, hidden = model(torch.randn(2, 1, 16, 16), return_hidden=True)
    assert [h.shape[1] for h in hidden] == [65, 17, 5]
    red = model.transitions[0]
    x = torch.randn(2, 1 + 64, 32)
    tok = x[:, 1:]
    img = tok.transpose(1, 2).reshape(2, 32, 8, 8)
    normed = F.layer_norm(tok, (32,), red.norm.weight, red.norm.bias).transpose(1, 2).reshape(2, 32, 8, 8)
    main = F.conv2d(normed, red.reduce.weight, red.reduce.bias, stride=2)
    want_tok = (main + F.avg_pool2d(img, 2)).flatten(2).transpose(1, 2)
    want_cls = x[:, :1] + red.prefix_proj(F.layer_norm(x[:, :1], (32,), red.norm.weight, red.norm.bias))
    assert torch.allclose(red(x, (8, 8)), torch.cat([want_cls, want_tok], 1), atol=1e-5)
    # The skip connection: with the main path switched off the reduction is 2x2 average pooling.
    torch.nn.init.zeros_(red.reduce.weight)
    torch.nn.init.zeros_(red.reduce.bias)
    assert torch.allclose(red(x, (8, 8))[:, 1:], F.avg_pool2d(img, 2).flatten(2).transpose(1, 2), atol=1e-6)


def test_stages_that_do_not_divide_the_grid_are_a_config_error():
    with pytest.raises(ConfigError, match=r"stages 5 .* 8x8 divisible by 16; valid stages: 1\.\.4"):
        af.create("vit", **IMG, depth=5, arch={"name": "multistage", "stages": 5})
    with pytest.raises(ConfigError, match=r"depths \[1, 2\] must list 2 layer counts"):
        af.create("vit", **IMG, depth=4, arch={"name": "multistage", "stages": 2, "depths": [1, 2]})


def test_recursion_runs_inside_stages():
    """schedule.repeat (SReT) reuses each block in place, never across a reduction."""
    model = af.create("vit", **IMG, depth=4, arch={"name": "multistage", "stages": 2}, schedule={"repeat": 2})
    assert model.stack.layer_blocks == [0, 0, 1, 1] and len(model.stack.blocks) == 2
    _, hidden = model(torch.randn(2, 1, 16, 16), return_hidden=True)
    assert [h.shape[1] for h in hidden] == [65, 65, 17, 17]
    with pytest.raises(ConfigError, match=r"repeat 2 needs every stage's depth divisible by 2, got \[2, 1\]"):
        af.create("vit", **IMG, depth=3, arch={"name": "multistage", "stages": 2}, schedule={"repeat": 2})
    with pytest.raises(ConfigError, match="does not take model.schedule.share or transition"):
        af.create("vit", **IMG, depth=4, arch={"name": "multistage", "stages": 2}, schedule={"share": 2})


def test_a_huge_stage_count_is_refused_without_building_its_power_of_two():
    # Before: 2 ** (stages - 1) was built first (a huge stages never returned) and printed
    # in full in the message.
    with pytest.raises(ConfigError, match=r"^arch 'multistage': stages 1000000 halve the grid 999999 times, which needs the token grid 8x8 divisible by 2\^999999; valid stages: 1\.\.4$"):
        af.create("vit", **IMG, depth=2, arch={"name": "multistage", "stages": 10 ** 6})
    with pytest.raises(ConfigError, match=r"model.arch.stages must be >= 1, got 0"):
        af.create("vit", **IMG, depth=2, arch={"name": "multistage", "stages": 0})
