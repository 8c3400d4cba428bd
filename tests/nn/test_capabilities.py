"""Capabilities declared on components: `subquadratic` on mixers, `input_linears()` on the
sublayer functions that can absorb an input affine map, `folded_affine()` on norms, and the
folding that uses nothing else."""
import pytest
import torch

import anyformer as af
from anyformer import registry
from anyformer.nn.mixers.base import TokenMixer, mixers_supporting
from anyformer.nn.norms import fold_batchnorm, fold_into

from .helpers import DIM, LEN, at_end_of_schedule, make, make_mixer

MIXERS = registry.list_components("mixer")


def _quadratic_by_text(complexity: str) -> bool:
    # The one place the complexity text is read: L^2 without a divisor is quadratic.
    return "L^2" in complexity and "L^2/" not in complexity


@pytest.mark.parametrize("name", MIXERS)
def test_subquadratic_is_declared_consistently_with_complexity(name):
    cls = registry.get("mixer", name)
    assert isinstance(cls.subquadratic, bool)
    assert cls.subquadratic == (not _quadratic_by_text(cls.complexity)), (name, cls.complexity)
    if cls.subquadratic:
        # Set on the class itself, not inherited by accident from a parent's declaration.
        assert "subquadratic" in vars(cls), f"mixer {name!r} must declare subquadratic = True itself"


def test_known_subquadratic_mixers():
    assert registry.get("mixer", "softmax").subquadratic is False
    assert registry.get("mixer", "linear").subquadratic is True
    assert registry.get("mixer", "sliced").subquadratic is True  # L^2 / groups
    assert TokenMixer.subquadratic is False


def test_mixers_supporting_uses_the_registry():
    names = mixers_supporting("subquadratic").split(", ")
    assert names == sorted(n for n in MIXERS if registry.get("mixer", n).subquadratic)
    assert "softmax" not in names and "linear" in names


def _affine(dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(dim, generator=g) + 0.5, torch.randn(dim, generator=g)


def _folding_is_exact(module, x):
    """module(x * s + c) == module'(x), module' with (s, c) folded into its input linears."""
    scale, shift = _affine(x.shape[-1])
    with torch.no_grad():
        want = module(x * scale + shift)
        for linear in module.input_linears():
            fold_into(linear, scale, shift)
        got = module(x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MIXERS)
def test_mixer_input_linears_absorb_an_affine_map_exactly(name):
    mixer = make_mixer(name).eval()
    linears = mixer.input_linears()
    if not linears:
        return
    assert all(isinstance(lin, torch.nn.Linear) for lin in linears)
    torch.manual_seed(0)
    _folding_is_exact(mixer, torch.randn(2, LEN, DIM))


def test_the_attention_mixers_that_fold():
    foldable = {n for n in MIXERS if make_mixer(n).input_linears()}
    assert {"softmax", "linear", "local"} <= foldable
    mixer = make_mixer("softmax")
    assert mixer.input_linears() == [mixer.q_proj, mixer.k_proj, mixer.v_proj]
    assert make_mixer("fnet").input_linears() == []


@pytest.mark.parametrize("name", ["mlp", "glu", "moe"])
def test_ffn_input_linears_absorb_an_affine_map_exactly(name):
    torch.manual_seed(0)
    ffn = make("ffn", name).eval()
    expected = {"mlp": lambda f: [f.fc1], "glu": lambda f: [f.gate, f.up],
                "moe": lambda f: [f.router, *(e.fc1 for e in f.experts)]}[name](ffn)
    assert ffn.input_linears() == expected
    _folding_is_exact(ffn, torch.randn(2, LEN, DIM))


def test_batchnorm_declares_its_eval_map():
    norm = make("norm", "batchnorm").train()
    for _ in range(3):
        norm(torch.randn(4, LEN, DIM) * 2 + 1)
    norm.eval()
    x = torch.randn(2, LEN, DIM)
    scale, shift = norm.folded_affine()
    assert torch.allclose(norm(x), x * scale + shift, atol=1e-5)
    assert not hasattr(make("norm", "layernorm"), "folded_affine")  # not an affine map of x


@pytest.mark.parametrize("preset, norm, mixer, ffn, placement, folds", [
    ("vit", "batchnorm", "softmax", "mlp", "pre", 4),
    ("vit-gap", "prepbn", "sla", "glu", "peri", 4),  # sla on the patch grid: no [CLS] token
    ("vit", "prepbn", "local", "moe", "pre", 4),
    ("vit", "prepbn", "fnet", "mlp", "pre", 2),  # fnet reads x itself: only the ffn branches fold
])
def test_fold_batchnorm_keeps_outputs(preset, norm, mixer, ffn, placement, folds):
    torch.manual_seed(0)
    # Two experts, both chosen: folding's rounding cannot flip a routing decision.
    ffn_spec = {"name": "moe", "experts": 2, "top_k": 2, "ratio": 1.0} if ffn == "moe" else ffn
    model = af.create(preset, image_size=8, patch_size=2, channels=1, dim=32, depth=2,
                      norm={"name": norm, "placement": placement}, mixer=mixer, ffn=ffn_spec)
    images = torch.randn(4, 1, 8, 8)
    model = at_end_of_schedule(model, images)
    with torch.no_grad():
        before = model(images)
        assert fold_batchnorm(model) == folds
        after = model(images)
    assert torch.allclose(before, after, atol=1e-4)
    remaining = [s.norm_in for s in model.modules() if getattr(s, "norm_in", None) is not None]
    assert sum(type(n).__name__ == "NoNorm" for n in remaining) == folds
