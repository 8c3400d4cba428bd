"""The public API exactly as DESIGN.md and the foundation issue state it."""
import pytest
import torch

import anyformer as af
from anyformer.errors import ConfigError, ShapeError


def test_gpt_maps_ids_to_logits_and_is_causal():
    model = af.create("gpt", vocab_size=256, max_len=64).eval()
    ids = torch.randint(0, 256, (2, 64))
    logits = model(ids)
    assert logits.shape == (2, 64, 256)
    t = 30
    ids2 = ids.clone()
    ids2[:, t + 1:] = torch.randint(0, 256, (2, 64 - t - 1))
    logits2 = model(ids2)
    assert torch.allclose(logits[:, : t + 1], logits2[:, : t + 1], atol=1e-5)
    assert not torch.allclose(logits[:, t + 1:], logits2[:, t + 1:], atol=1e-5)
    assert model.head.fc.weight is model.encoder.embedding.weight  # tied


def test_bert_ignores_padded_tokens():
    model = af.create("bert", vocab_size=256, max_len=64, num_classes=2).eval()
    ids = torch.randint(0, 256, (2, 64))
    mask = torch.ones(2, 64, dtype=torch.bool)
    mask[0, 40:] = False
    mask[1, 10:] = False
    out = model(ids, mask)
    assert out.shape == (2, 2)
    ids2 = ids.clone()
    ids2[~mask] = torch.randint(0, 256, (int((~mask).sum()),))
    assert torch.allclose(out, model(ids2, mask), atol=1e-5)
    # Without the mask the padded tokens do matter: the mask is what protects the output.
    assert not torch.allclose(model(ids), model(ids2), atol=1e-5)


def test_vit_maps_images_to_logits():
    model = af.create("vit", image_size=8, patch_size=2, channels=1, num_classes=10)
    out = model(torch.randn(3, 1, 8, 8))
    assert out.shape == (3, 10)
    assert model.encoder.grid == (4, 4) and model.num_tokens == 17


def test_build_returns_bare_mixer():
    mixer = af.build("mixer", "linear", dim=64, heads=4, max_len=64, causal=True)
    assert type(mixer).__name__ == "LinearAttention" and mixer.causal
    assert mixer(torch.randn(2, 64, 64)).shape == (2, 64, 64)


def test_list_components():
    assert {"softmax", "local", "linear"} <= set(af.list_components("mixer"))
    assert {"mlp", "glu"} <= set(af.list_components("ffn"))
    assert {"layernorm", "rmsnorm", "batchnorm", "none"} <= set(af.list_components("norm"))
    assert {"none", "learned", "sinusoidal", "rotary", "alibi"} <= set(af.list_components("position"))
    assert {"tokens", "patches", "series", "tabular"} <= set(af.list_components("encoder"))
    assert {"cls", "mean", "last", "attention", "lm", "forecast"} <= set(af.list_components("head"))
    assert {"vit", "bert", "gpt", "macaron", "peri-ln", "single-layer", "wide"} <= set(af.list_presets())


def smallest_depth(preset: str) -> int:
    """1, or the depth a preset pins by listing its stages' depths (SReT's [2, 4, 2])."""
    arch = af.model_config(preset).arch
    return sum(arch.options.get("depths") or [1])


@pytest.mark.parametrize("preset", af.list_presets())
def test_every_preset_builds_and_runs(preset):
    model = af.create(preset, depth=smallest_depth(preset), dim=32, heads=4, max_len=16)
    inp = model.encoder.example_input(batch=2)
    out = model(inp)
    assert out.shape[0] == 2 and torch.isfinite(out).all()


def test_create_from_dict_and_yaml(tmp_path):
    spec = {"preset": "gpt", "dim": 32, "heads": 2, "depth": 1, "mixer": {"name": "local", "window": 4}}
    model = af.create(spec)
    assert model.stack.blocks[0].mixer.window == 4
    path = tmp_path / "m.yaml"
    path.write_text("model:\n  preset: gpt\n  dim: 32\n  heads: 2\n  depth: 1\n  mixer: {name: linear, feature_map: relu}\n")
    model = af.create(str(path))
    assert model.stack.blocks[0].mixer.feature_map == "relu"


def test_overrides_route_to_components():
    model = af.create("gpt", vocab_size=100, max_len=16, depth=1, dim=32, heads=2)
    assert model.encoder.vocab_size == 100 and model.head.vocab_size == 100
    model = af.create("vit", num_classes=3, image_size=8, patch_size=4, channels=1, depth=1, dim=32, heads=2)
    assert model.head.num_classes == 3
    model = af.create("vit", image_size=8, patch_size=4, channels=1, depth=1, dim=32, heads=2, **{"mixer.attn_dropout": 0.1})
    assert model.stack.blocks[0].mixer.attn_dropout == 0.1


def test_schedule_overrides_sharing_and_dropping():
    model = af.create("gpt", dim=32, heads=2, depth=4, max_len=16, schedule={
        "overrides": [{"layers": "0:2", "mixer": {"name": "linear"}}],
    })
    names = [type(b.mixer).__name__ for b in model.stack.blocks]
    assert names == ["LinearAttention", "LinearAttention", "SoftmaxAttention", "SoftmaxAttention"]
    shared = af.create("gpt", dim=32, heads=2, depth=6, max_len=16, schedule={"share": 2})
    assert len(shared.stack.blocks) == 2 and shared.stack.layer_blocks == [0, 1, 0, 1, 0, 1]
    ids = torch.randint(0, 256, (1, 16))
    out, hidden = shared(ids, return_hidden=True)
    assert len(hidden) == 6 and out.shape == (1, 16, 256)
    dropped = af.create("gpt", dim=32, heads=2, depth=4, max_len=16, schedule={"drop": [1, 3]})
    out_d, hidden_d = dropped(ids, return_hidden=True)
    assert torch.equal(hidden_d[0], hidden_d[1]) and torch.equal(hidden_d[2], hidden_d[3])
    full = af.create("gpt", dim=32, heads=2, depth=4, max_len=16)
    assert sum(p.numel() for p in shared.parameters()) < sum(p.numel() for p in full.parameters())


def test_positions_inside_mixers():
    model = af.create("gpt", dim=32, heads=2, depth=1, max_len=16, position="rotary")
    assert model.stack.blocks[0].mixer.position is model.position
    model(torch.randint(0, 256, (1, 16)))
    with pytest.raises(ConfigError, match="cannot apply 'alibi'"):
        af.create("gpt", dim=32, heads=2, depth=1, max_len=16, position="alibi", mixer="linear")


@pytest.mark.parametrize("kwargs,match", [
    ({"mixer": "softmaxx"}, "did you mean 'softmax'"),
    ({"dim": 30, "heads": 4}, "not divisible"),
    ({"mixer": {"name": "local", "windw": 3}}, "did you mean 'window'"),
    ({"mixer": {"name": "local", "window": "wide"}}, "window"),
    ({"layout": "zigzag"}, "layout"),
    ({"norm": {"name": "rmsnorm", "placement": "middle"}}, "placement"),
    ({"depthh": 3}, "did you mean 'depth'"),
    ({"schedule": {"drop": [9]}}, "drop"),
    ({"schedule": {"overrides": [{"layers": "0:x", "mixer": "linear"}]}}, "slice"),
])
def test_config_errors_name_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        af.create("gpt", **kwargs)


def test_unknown_preset_suggests():
    with pytest.raises(ConfigError, match="did you mean 'vit'"):
        af.create("vitt")


def test_bad_inputs():
    gpt = af.create("gpt", dim=32, heads=2, depth=1, max_len=16)
    with pytest.raises(ConfigError, match="max_len"):
        gpt(torch.randint(0, 256, (1, 17)))
    with pytest.raises(ShapeError, match="integer ids"):
        gpt(torch.randn(1, 16))
    with pytest.raises(ShapeError, match="rank"):
        gpt(torch.randint(0, 256, (16,)))
    with pytest.raises(ShapeError, match="vocabulary"):
        gpt(torch.full((1, 4), 300))
    vit = af.create("vit", image_size=8, patch_size=2, channels=1, num_classes=10, depth=1, dim=32, heads=2)
    with pytest.raises(ShapeError, match="expects images"):
        vit(torch.randn(2, 3, 8, 8))


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  dim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        af.create(str(bad))
    unknown_key = tmp_path / "k.yaml"
    unknown_key.write_text("model:\n  preset: gpt\n  dimm: 3\n")
    with pytest.raises(ConfigError, match="did you mean 'dim'"):
        af.create(str(unknown_key))
    with pytest.raises(ConfigError, match="does not exist"):
        af.create(str(tmp_path / "missing.yaml"))


def test_mask_request_to_maskless_mixer_at_build():
    # A padding encoder and a mixer that cannot mask: refused when built, not answered wrongly.
    from anyformer import registry

    maskless = [n for n in af.list_components("mixer") if not registry.get("mixer", n).supports_mask]
    for name in maskless:
        with pytest.raises(ConfigError, match="padding mask"):
            af.create("bert", mixer=name, pad_id=0, dim=32, heads=2, depth=1, max_len=16)


def test_a_cls_head_needs_a_mixer_that_mixes_tokens():
    with pytest.raises(ConfigError, match="never sees the input"):
        af.create("vit", mixer="activator", dim=32, heads=4, image_size=8, patch_size=2, channels=1)
    # Pooling the mean of the tokens works, and so does one token-mixing layer in the stack.
    af.create("vit-gap", mixer="activator", dim=32, heads=4, image_size=8, patch_size=2, channels=1)
    af.create("vit", mixer="activator", dim=32, heads=4, image_size=8, patch_size=2, channels=1,
              schedule={"overrides": [{"layers": [3], "mixer": "softmax"}]})
