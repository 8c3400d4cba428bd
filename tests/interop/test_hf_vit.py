"""ViT checkpoints <-> anyformer (interop/hf/vit.py), on checkpoints transformers writes
itself from a tiny ViTConfig: hidden states and logits both ways, an exact round trip, the
`vit` preset exported, and one-line errors for what anyformer or ViT cannot hold."""
import json

import pytest
import torch

import anyformer as af
from anyformer.errors import ConfigError
from anyformer.interop.hf.convert import export_hf, export_notes

from safetensors.torch import load_file
from transformers import (AutoModel, AutoModelForImageClassification, ViTConfig,
                          ViTForImageClassification, ViTModel)


def hf_vit(cls=ViTModel, **fields):
    """A random tiny ViT (8x8 grey images, 2x2 patches) with every parameter moved off its
    init (LayerNorms start at 1 and 0, the [CLS] token at 0)."""
    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, image_size=8,
                    patch_size=2, num_channels=1, num_labels=10, **fields)
    model = cls(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def images(n=3, channels=1, size=8):
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("cls", [ViTModel, ViTForImageClassification])
def test_vit_outputs_equal_transformers_and_round_trip_is_exact(tmp_path, cls):
    hf = hf_vit(cls)
    hf.save_pretrained(tmp_path / "hf")
    model, config = af.from_hf(tmp_path / "hf")
    head = config["model"]["head"]
    assert head["name"] == ("features" if cls is ViTModel else "cls")
    x = images()
    with torch.no_grad():
        r = hf(pixel_values=x)
        ref = r.last_hidden_state if cls is ViTModel else r.logits
        out = model(x)
    diff = (out - ref).abs().max().item()
    print(f"tiny {cls.__name__} HF->anyformer {'hidden states' if cls is ViTModel else 'logits'} max abs diff {diff:.2e}")
    assert out.shape == ref.shape and diff <= 1e-5
    export_hf(model, tmp_path / "back")
    a, b = load_file(tmp_path / "hf" / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "back" / "config.json").read_text())["architectures"] == [cls.__name__]


def test_vit_pooler_is_kept_and_readable(tmp_path):
    hf = hf_vit()
    hf.save_pretrained(tmp_path)
    model, config = af.from_hf(tmp_path)
    assert config["model"]["head"]["pooler"] is True
    pooled = af.create({**config["model"], "head": {**config["model"]["head"], "pool": "pooler"}}).eval()
    pooled.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (pooled(images()) - hf(pixel_values=images()).pooler_output).abs().max() <= 1e-5


def test_vit_preset_exports_with_equal_logits(tmp_path):
    torch.manual_seed(0)
    model = af.create("vit", dim=32, depth=2, heads=4, image_size=8, patch_size=2, channels=3, num_classes=5).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    export_hf(model, tmp_path)
    assert export_notes(model) == []
    x = images(channels=3)
    hf = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    base = AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        logits = model(x)
        _, hidden = model(x, return_hidden=True)
        diff = (hf(pixel_values=x).logits - logits).abs().max().item()
        hidden_diff = (base(pixel_values=x).last_hidden_state - model.final_norm(hidden[-1])).abs().max().item()
    print(f"vit preset anyformer->HF logits max abs diff {diff:.2e}, hidden states {hidden_diff:.2e}")
    assert isinstance(base, ViTModel) and diff <= 1e-5 and hidden_diff <= 1e-5


def test_qkv_bias_false_imports_as_zero_biases(tmp_path):
    hf = hf_vit(qkv_bias=False)
    hf.save_pretrained(tmp_path)
    model, _ = af.from_hf(tmp_path)
    x = images()
    with torch.no_grad():
        assert (model(x) - hf(pixel_values=x).last_hidden_state).abs().max() <= 1e-5


@pytest.mark.parametrize("field, value", [("hidden_act", "quick_gelu"), ("pooler_act", "relu")])
def test_an_unsupported_field_is_one_line_naming_it(tmp_path, field, value):
    hf_vit().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[field] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError) as err:
        af.from_hf(tmp_path)
    assert field in str(err.value) and repr(value) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, named", [
    ({"encoder": {"name": "patches", "image_size": 8, "patch_size": 2, "conv_stem": True}}, "conv_stem"),
    ({"mixer": "performer"}, "mixer 'performer'"),
    ({"final_norm": False}, "final_norm"),
])
def test_export_refuses_what_vit_cannot_hold_naming_the_component(overrides, named):
    model = af.create("vit", **{"dim": 16, "depth": 1, "heads": 2, "image_size": 8, "patch_size": 2, **overrides})
    with pytest.raises(ConfigError) as err:
        export_hf(model, "/nonexistent/never-written")
    message = str(err.value)
    assert "vit:" in message and "bert:" in message and named in message and "\n" not in message
