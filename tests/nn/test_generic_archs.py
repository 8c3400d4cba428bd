"""Every registered arch against the model contract (DESIGN.md, Component contracts: Model):
output shape, dtype and finite values, gradients reaching every parameter, determinism in
eval mode, one hidden state per layer, a state dict that round-trips into a fresh model, and
a parameter report whose total is the unique parameter count.

An arch is exercised on its own small example: a class attribute `example_config` (a model
config dict; its input comes from the built model's encoder) where the arch declares one, else
an entry of EXAMPLES below. `test_every_arch_has_an_example` fails for a new arch with neither."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import anyformer as af
from anyformer import registry

ARCHS = registry.list_components("arch")
B, DIM, HEADS, DEPTH = 2, 32, 4, 2
VOCAB, SEQ = 50, 12


@dataclass
class Example:
    config: dict[str, Any]
    # generator -> (positional inputs, keyword inputs) of forward; None: the encoder's example_input
    inputs: Callable[[torch.Generator], tuple[tuple, dict]] | None = None
    out_shape: tuple[int, ...] | None = None  # None: only the batch size is checked
    hidden: int = DEPTH  # hidden states returned with return_hidden=True: one per layer


BASE = dict(dim=DIM, heads=HEADS, depth=DEPTH, dropout=0.0, ffn={"name": "mlp", "ratio": 2})


def _ids_with_padding(g):
    ids = torch.randint(0, VOCAB, (B, SEQ), generator=g)
    mask = torch.ones(B, SEQ, dtype=torch.bool)
    mask[0, SEQ - 4:] = False
    return (ids,), {"mask": mask}


def _ids_with_modalities(g):
    (ids,), kw = _ids_with_padding(g)
    modality = torch.zeros(B, SEQ, dtype=torch.long)
    modality[:, SEQ // 2:] = 1  # both modalities present, so both experts' weights are used
    return (ids,), {**kw, "modality_ids": modality}


def _images(size):
    return lambda g: ((torch.randn(B, 1, size, size, generator=g),), {})


def _series(length, channels):
    return lambda g: ((torch.randn(B, length, channels, generator=g),), {})


def _patches(size, cls_token):
    return {"name": "patches", "image_size": size, "patch_size": 2, "channels": 1, "cls_token": cls_token}


EXAMPLES: dict[str, Example] = {
    "stack": Example(
        {**BASE, "max_len": SEQ, "mixer": "softmax", "position": "learned",
         "encoder": {"name": "tokens", "vocab_size": VOCAB}, "head": {"name": "mean", "num_classes": 3}},
        _ids_with_padding, (B, 3)),
    "mot": Example(
        {**BASE, "max_len": SEQ, "mixer": "softmax", "position": "learned", "arch": {"name": "mot", "modalities": 2},
         "encoder": {"name": "tokens", "vocab_size": VOCAB, "cls_token": True}, "head": {"name": "cls", "num_classes": 3}},
        _ids_with_modalities, (B, 3)),
    "fit": Example(
        {**BASE, "mixer": "softmax", "position": "learned", "arch": {"name": "fit", "group_size": 4, "latents": 2},
         "encoder": _patches(8, False), "head": {"name": "mean", "num_classes": 3}},
        _images(8), (B, 3)),
    "nest": Example(
        {**BASE, "mixer": "softmax", "position": "learned", "arch": {"name": "nest", "levels": 2, "block_size": 4},
         "encoder": _patches(16, False), "head": {"name": "mean", "num_classes": 3}},
        _images(16), (B, 3)),
    "multistage": Example(
        {**BASE, "mixer": "softmax", "position": "learned", "arch": {"name": "multistage", "stages": 2},
         "encoder": _patches(16, True), "head": {"name": "cls", "num_classes": 3}},
        _images(16), (B, 3)),
    "informer": Example(
        {**BASE, "max_len": 16, "mixer": {"name": "probsparse", "factor": 5}, "position": "sinusoidal",
         "norm": {"name": "layernorm", "placement": "post"}, "schedule": {"transition": {"name": "distill"}},
         "arch": {"name": "informer", "label_len": 4},
         "encoder": {"name": "series", "channels": 2, "mode": "step"}, "head": {"name": "forecast", "horizon": 4}},
        _series(16, 2), (B, 4, 2)),
    "fedformer": Example(
        {**BASE, "max_len": 16, "mixer": {"name": "fedformer", "modes": 4}, "position": "none",
         "arch": {"name": "fedformer", "label_len": 8, "moving_avg": 5},
         "encoder": {"name": "series", "channels": 2, "mode": "step"}, "head": {"name": "forecast", "horizon": 4}},
        _series(16, 2), (B, 4, 2)),
}


def example(name: str) -> Example:
    declared = getattr(registry.get("arch", name), "example_config", None)
    if declared is not None:
        return Example(dict(declared))
    return EXAMPLES[name]


def build(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = example(name).config
    model = af.create(config)
    assert af.model_config(config).arch.name == name, f"example for {name!r} builds arch {af.model_config(config).arch.name!r}"
    return model


def inputs(name: str, model: torch.nn.Module, seed: int = 0) -> tuple[tuple, dict]:
    ex = example(name)
    if ex.inputs is None:
        torch.manual_seed(seed)
        return (model.encoder.example_input(batch=B),), {}
    return ex.inputs(torch.Generator().manual_seed(seed))


def _double(value):
    return value.double() if torch.is_tensor(value) and value.is_floating_point() else value


def test_every_arch_has_an_example():
    missing = [n for n in ARCHS if n not in EXAMPLES and getattr(registry.get("arch", n), "example_config", None) is None]
    assert not missing, f"archs without an example: {missing}; declare `example_config` on the class or add them to EXAMPLES"
    stale = sorted(set(EXAMPLES) - set(ARCHS))
    assert not stale, f"EXAMPLES names archs that are not registered: {stale}"


@pytest.mark.parametrize("name", ARCHS)
def test_declares_paper_and_doc(name):
    cls = registry.get("arch", name)
    assert getattr(cls, "paper", ""), f"arch {name} needs a `paper` attribute"
    assert cls.__doc__ and len(cls.__doc__.strip()) > 20, f"arch {name} needs a docstring"


@pytest.mark.parametrize("name", ARCHS)
def test_output_shape_dtype_and_finite(name):
    model = build(name).eval()
    args, kwargs = inputs(name, model)
    with torch.no_grad():
        out = model(*args, **kwargs)
    want = example(name).out_shape
    assert torch.is_tensor(out) and out.dtype == torch.float32
    assert out.shape[0] == B if want is None else tuple(out.shape) == want, f"{name}: output {tuple(out.shape)}, want {want}"
    assert torch.isfinite(out).all(), f"{name}: non-finite outputs"
    # The same weights in float64 give a float64 output equal up to float32 rounding.
    model64 = model.double()
    with torch.no_grad():
        out64 = model64(*[_double(a) for a in args], **{k: _double(v) for k, v in kwargs.items()})
    assert out64.dtype == torch.float64 and out64.shape == out.shape
    assert torch.allclose(out64.float(), out, atol=1e-4, rtol=1e-4), \
        f"{name}: float64 differs from float32 by {(out64.float() - out).abs().max():.2e}"


@pytest.mark.parametrize("name", ARCHS)
def test_gradients_reach_every_parameter(name):
    model = build(name).train()
    args, kwargs = inputs(name, model)
    out = model(*args, **kwargs)
    out.square().mean().backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params, f"{name}: no trainable parameters"
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"{name}: no gradient reaches {missing}"
    bad = [n for n, p in params if not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradients in {bad}"


@pytest.mark.parametrize("name", ARCHS)
def test_deterministic_in_eval(name):
    model = build(name).eval()
    args, kwargs = inputs(name, model)
    with torch.no_grad():
        first, second = model(*args, **kwargs), model(*args, **kwargs)
    assert torch.equal(first, second), f"{name}: two eval passes differ by {(first - second).abs().max():.2e}"


@pytest.mark.parametrize("name", ARCHS)
def test_return_hidden_gives_one_state_per_layer(name):
    model = build(name).eval()
    args, kwargs = inputs(name, model)
    ex = example(name)
    with torch.no_grad():
        out = model(*args, **kwargs)
        result = model(*args, **kwargs, return_hidden=True)
    assert isinstance(result, tuple) and len(result) == 2
    out2, hidden = result
    assert torch.equal(out2, out), f"{name}: return_hidden changes the output"
    assert len(hidden) == ex.hidden, f"{name}: {len(hidden)} hidden states for {ex.hidden} layers"
    for i, h in enumerate(hidden):
        assert torch.is_tensor(h) and h.dim() == 3 and h.shape[0] == B and h.shape[-1] == DIM, \
            f"{name}: hidden state {i} has shape {tuple(h.shape)}, want [{B}, L, {DIM}]"
        assert torch.isfinite(h).all()


@pytest.mark.parametrize("name", ARCHS)
def test_state_dict_round_trips_into_a_fresh_model(name):
    source = build(name, seed=0).eval()
    fresh = build(name, seed=1).eval()
    args, kwargs = inputs(name, source)
    with torch.no_grad():
        want = source(*args, **kwargs)
        assert not torch.allclose(fresh(*args, **kwargs), want), f"{name}: seeds 0 and 1 build the same model"
        result = fresh.load_state_dict(source.state_dict())
        assert not result.missing_keys and not result.unexpected_keys
        got = fresh(*args, **kwargs)
    assert torch.equal(got, want), f"{name}: the loaded model differs from its source by {(got - want).abs().max():.2e}"


@pytest.mark.parametrize("name", ARCHS)
def test_parameter_report_total_is_the_unique_parameter_count(name):
    model = build(name)
    unique = {id(p): p.numel() for _, p in model.named_parameters(remove_duplicate=False)}
    report = model.parameter_report()
    assert report["total"] == sum(unique.values()), f"{name}: report total {report['total']}, unique parameters {sum(unique.values())}"
    parts = {k: v for k, v in report.items() if k != "total"}
    assert all(isinstance(v, int) and v >= 0 for v in parts.values()), f"{name}: {parts}"
    # Parts count a shared tensor once, where first met, so together they never exceed the total.
    assert sum(parts.values()) <= report["total"], f"{name}: parts sum to {sum(parts.values())} > total {report['total']}"
