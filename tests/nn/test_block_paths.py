"""EnsembleScale, path pruning, stochastic depth and layer dropping, checked by hand."""
import pytest
import torch

import anyformer as af
from anyformer.errors import ConfigError

IMG = dict(image_size=8, patch_size=2, channels=1, dim=32, heads=4)


def _vit(**kw):
    return af.create("vit", **IMG, **kw).eval()


def _manual(model, images, skip_layers=(), skip_paths=None):
    """Encoder -> blocks written out -> norm -> head, with chosen layers/paths left out."""
    skip_paths = skip_paths or {}
    x, mask = model.encoder(images)
    x = model.position(x)
    for layer, b in enumerate(model.stack.layer_blocks):
        if layer in skip_layers:
            continue
        block = model.stack.blocks[b]
        for name, sub in zip(block.path_names, block.sublayers):
            if name in skip_paths.get(layer, ()):
                continue
            f = (lambda t: sub.fn(t, None)) if sub.takes_mask else sub.fn
            scale = sub.path_scale if sub.path_scale is not None else 1.0
            x = x + scale * f(sub.norm_in(x))
    return model.head(model.final_norm(x), None, [])


def test_ensemble_scale_weights_each_residual_path():
    model = _vit(depth=2, path_scale=True)
    with torch.no_grad():
        for i, p in enumerate(q for n, q in model.named_parameters() if n.endswith("path_scale")):
            p.fill_(0.5 + 0.25 * i)
    images = torch.randn(2, 1, 8, 8)
    assert torch.allclose(model(images), _manual(model, images), atol=1e-5)
    model(images).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.endswith("path_scale"))


def test_pruned_paths_are_removed_and_pruning_a_whole_layer_equals_dropping_it():
    images = torch.randn(2, 1, 8, 8)
    torch.manual_seed(0)
    pruned = _vit(depth=3, schedule={"prune": ["1.mixer", "2.ffn"]})
    assert torch.allclose(pruned(images), _manual(pruned, images, skip_paths={1: {"mixer"}, 2: {"ffn"}}), atol=1e-5)
    torch.manual_seed(0)
    whole = _vit(depth=3, schedule={"prune": ["1.mixer", "1.ffn"]})
    torch.manual_seed(0)
    dropped = _vit(depth=3, schedule={"drop": [1]})
    assert torch.allclose(whole(images), dropped(images), atol=1e-6)
    assert torch.allclose(dropped(images), _manual(dropped, images, skip_layers={1}), atol=1e-5)


def test_layer_drop_can_be_set_after_training_for_compression():
    model = _vit(depth=3)
    images = torch.randn(2, 1, 8, 8)
    model.stack.drop_layers([0, 2])
    assert torch.allclose(model(images), _manual(model, images, skip_layers={0, 2}), atol=1e-5)


def test_stochastic_depth_rates_rise_linearly_and_drop_whole_samples():
    model = _vit(depth=5, drop_path=0.4)
    rates = model.stack.drop_path_rates
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    sub = model.stack.blocks[0].sublayers[1].train()
    x = torch.randn(64, 17, 32)
    full = x + sub.branch(x, None)
    out = sub(x, None, drop_path=0.5)
    kept = torch.isclose(out, x + 2 * (full - x), atol=1e-5).flatten(1).all(1)
    gone = torch.isclose(out, x).flatten(1).all(1)
    assert bool((kept ^ gone).all()) and 0 < int(kept.sum()) < 64
    sub.eval()
    assert torch.allclose(sub(x, None, drop_path=0.5), full, atol=1e-6)


def test_bad_prune_entry_names_field_and_valid_form():
    with pytest.raises(ConfigError, match=r"model.schedule.prune: '7.mixer'.*0\.\.1"):
        _vit(depth=2, schedule={"prune": ["7.mixer"]})
    with pytest.raises(ConfigError, match="mixer, ffn"):
        _vit(depth=2, schedule={"prune": ["0.attn"]})


def test_repeat_loops_each_block_in_place():
    model = _vit(depth=5, schedule={"repeat": 2})
    assert model.stack.layer_blocks == [0, 0, 1, 1, 2] and len(model.stack.blocks) == 3
    images = torch.randn(2, 1, 8, 8)
    assert torch.allclose(model(images), _manual(model, images), atol=1e-5)
    with pytest.raises(ConfigError, match="either share"):
        _vit(depth=4, schedule={"repeat": 2, "share": 2})
