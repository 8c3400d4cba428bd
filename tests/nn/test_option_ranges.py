"""Every numeric option of every registered component declares its valid range on its
`__init__` parameter, and a value outside it is a one-line ConfigError at build that names
the option (by config path inside a model) and the range, never a NaN model or a raw torch
error later (reports: sinusoidal base 0, batchnorm momentum 1.5, layernorm eps 0, dropout 1.5
reaching torch, ratio NaN / capacity_factor inf reaching int())."""
from __future__ import annotations

import math

import pytest
import torch

import anyformer as af
from anyformer import registry
from anyformer.errors import ConfigError

from ..fuzz_cases import options_of

MODEL_KINDS = ("mixer", "ffn", "norm", "position", "encoder", "head", "transition", "arch")
# Numeric options with no range, each for a reason: any integer seeds a generator; the mean
# of a user's sensor readings (the task writes it) can be any finite value.
UNBOUNDED = {("mixer", "ssa", "eval_seed"), ("encoder", "sensor-readings", "mean")}


def numeric_options() -> list[tuple[str, str, str]]:
    return [(kind, name, option) for kind in MODEL_KINDS for name in registry.list_components(kind)
            for option, (d, _) in options_of(kind, name).items()
            if d.base in (int, float) or (d.base is list and d.item.base in (int, float))]


NUMERIC = numeric_options()


def test_the_checklist_covers_the_options_of_the_reports():
    assert {("position", "sinusoidal", "base"), ("norm", "batchnorm", "momentum"), ("norm", "prepbn", "momentum"),
            ("norm", "layernorm", "eps"), ("ffn", "kan", "dropout"), ("ffn", "moe", "capacity_factor"),
            ("head", "multilayer", "max_layers"), ("mixer", "softmax", "attn_dropout")} <= set(NUMERIC)


def test_every_numeric_option_declares_a_range():
    bare = [f"{kind} {name!r} option {option!r}" for kind, name, option in NUMERIC
            if (kind, name, option) not in UNBOUNDED and not _bounded(kind, name, option)]
    assert not bare, f"declare a range (anyformer.nn.ranges) on: {', '.join(bare)}"


def _bounded(kind: str, name: str, option: str) -> bool:
    d = options_of(kind, name)[option][0]
    d = d.item if d.base is list else d
    return d.lo is not None or d.hi is not None


def _outside(kind: str, name: str, option: str) -> list:
    d = options_of(kind, name)[option][0]
    if d.base is list:
        return [[d.item.lo - 1]]
    values = [math.nan, math.inf]
    if d.lo is not None:
        values.append(d.lo if d.lo_open else d.lo - 1)
    if d.hi is not None:
        values.append(d.hi if d.hi_open else d.hi + 1)
    return values


COMPONENTS = sorted({(k, n) for k, n, _ in NUMERIC})


@pytest.mark.parametrize("kind,name", COMPONENTS, ids=[f"{k}:{n}" for k, n in COMPONENTS])
def test_a_value_outside_the_range_is_a_one_line_error_naming_option_and_range(kind, name):
    declared = {o["name"]: o["range"] for o in registry.describe_options(kind, name)}
    for k, n, option in NUMERIC:
        if (k, n) != (kind, name) or (k, n, option) in UNBOUNDED:
            continue
        for value in _outside(kind, name, option):
            with pytest.raises(ConfigError) as err:
                registry.validate_options(kind, name, {option: value}, where=f"model.{kind}")
            text = str(err.value)
            assert "\n" not in text and text.startswith(f"model.{kind}.{option} must be "), text
            if isinstance(value, float) and math.isfinite(value):
                assert f"must be {declared[option]}, got {value!r}" in text, text
            elif isinstance(value, float):  # NaN / inf: a float option says finite, an int one integer
                assert "finite" in text or "integer" in text, text


@pytest.mark.parametrize("spec,message", [
    ({"position": {"name": "sinusoidal", "base": 0}}, "model.position.base must be > 1, got 0"),
    ({"position": {"name": "rotary", "base": -2.0}}, "model.position.base must be > 1, got -2.0"),
    ({"norm": {"name": "batchnorm", "momentum": 1.5}}, r"model.norm.momentum must be in \[0, 1\], got 1.5"),
    ({"norm": {"name": "prepbn", "momentum": 2}}, r"model.norm.momentum must be in \[0, 1\], got 2"),
    ({"norm": {"name": "layernorm", "eps": 0}}, "model.norm.eps must be >= 1e-12, got 0"),
    ({"norm": {"name": "rmsnorm", "eps": -1e-6}}, "model.norm.eps must be >= 1e-12, got -1e-06"),
    ({"ffn": {"name": "mlp", "dropout": 1.5}}, r"model.ffn.dropout must be in \[0, 1\), got 1.5 \(ffn 'mlp'\)"),
    ({"ffn": {"name": "kan", "dropout": -0.1}}, r"model.ffn.dropout must be in \[0, 1\), got -0.1"),
    ({"ffn": {"name": "moe", "dropout": 1.0}}, r"model.ffn.dropout must be in \[0, 1\), got 1.0"),
    ({"head": {"name": "cls", "dropout": 2.0}}, r"model.head.dropout must be in \[0, 1\), got 2.0"),
    ({"mixer": {"name": "softmax", "attn_dropout": 1.5}}, r"model.mixer.attn_dropout must be in \[0, 1\), got 1.5"),
    ({"ffn": {"name": "mlp", "ratio": math.nan}}, "model.ffn.ratio must be a finite number > 0, got nan"),
    ({"ffn": {"name": "moe", "capacity_factor": math.inf}}, "model.ffn.capacity_factor must be a finite number > 0 or null, got inf"),
    ({"ffn": {"name": "moe", "experts": 0}}, "model.ffn.experts must be >= 1, got 0"),
    ({"mixer": {"name": "local", "window": 0}}, "model.mixer.window must be >= 1, got 0"),
    ({"encoder": {"name": "tokens", "vocab_size": 256, "init_std": -1}}, r"model.encoder.init_std must be in \[0, 10\], got -1"),
])
def test_reported_values_are_refused_at_build_with_the_config_path(spec, message):
    with pytest.raises(ConfigError, match=message) as err:
        af.create("gpt", dim=16, heads=2, depth=1, max_len=8, **spec)
    assert "\n" not in str(err.value)


def test_a_value_of_the_wrong_type_names_the_type_and_range():
    with pytest.raises(ConfigError, match=r"model.ffn.hidden must be an integer >= 1 or null, got 'wide' \(ffn 'mlp'\)"):
        af.model_config("gpt", ffn={"name": "mlp", "hidden": "wide"})
    with pytest.raises(ConfigError, match=r"model.encoder.categories must be a list of integers >= 1 or null, got \[2, 0\] \(item 1"):
        af.model_config("gpt", encoder={"name": "tabular", "categories": [2, 0]})


def test_a_component_built_alone_names_itself():
    with pytest.raises(ConfigError, match=r"^norm 'batchnorm': momentum must be in \[0, 1\], got 1.5$"):
        af.build("norm", "batchnorm", dim=8, momentum=1.5)


def test_declared_ranges_are_shown_with_the_options():
    rows = {o["name"]: o for o in registry.describe_options("norm", "batchnorm")}
    assert rows["momentum"]["type"] == "float in [0, 1]" and rows["momentum"]["range"] == "in [0, 1]"
    rows = {o["name"]: o for o in registry.describe_options("ffn", "mlp")}
    assert rows["hidden"]["type"] == "int >= 1 | None" and rows["dropout"]["type"] == "float in [0, 1)"
    rows = {o["name"]: o for o in registry.describe_options("encoder", "patches")}
    assert rows["image_size"]["type"] == "int >= 1 | tuple[int >= 1, int >= 1]"


def test_the_edges_of_each_reported_range_build_and_stay_finite():
    # Inside the ranges nothing turns into NaN: the extreme momentum and a tiny eps train.
    torch.manual_seed(0)
    for norm in ({"name": "batchnorm", "momentum": 1.0, "eps": 1e-12}, {"name": "prepbn", "momentum": 0.0},
                 {"name": "layernorm", "eps": 1e-12}):
        model = af.create("vit", dim=16, heads=2, depth=1, norm=norm, image_size=8, patch_size=4)
        images = torch.randn(2, 3, 8, 8)
        model.train()
        model(images).sum().backward()
        assert torch.isfinite(model.eval()(images)).all()
    position = af.build("position", "sinusoidal", dim=8, num_tokens=16, base=1.0001)
    assert torch.isfinite(position.table).all()


@pytest.mark.parametrize("spec,message", [
    ({"ffn": {"name": "mlp", "ratio": 1e30}}, r"^ffn 'mlp': ratio x dim = 1.6e\+31 is wider than any tensor can be; lower ratio$"),
    ({"ffn": {"name": "glu", "ratio": 1e-9}}, r"^ffn 'glu': ratio x dim must be >= 1 \(got 1e-09 x 16\); raise ratio$"),
    ({"mixer": {"name": "gau", "expansion": 1e25}}, r"^mixer 'gau': expansion x dim = 1.6e\+26 is wider than any tensor can be"),
])
def test_a_width_scaled_past_any_tensor_is_a_config_error(spec, message):
    # Before: nn.Linear raised a raw TypeError ("Overflow when unpacking long long") of many lines.
    with pytest.raises(ConfigError, match=message):
        af.create("gpt", dim=16, heads=2, depth=1, max_len=8, **spec)
