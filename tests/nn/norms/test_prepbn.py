"""PRepBN (SLAB): lam follows the reference's schedule (r0 * remaining / total over a decay
window of training, 0 after it), eval is RepBN alone, and folding is exact at any lam."""
import pytest
import torch

import anyformer as af
from anyformer import registry
from anyformer.errors import ConfigError
from anyformer.nn.norms import fold_batchnorm

from ..helpers import at_end_of_schedule

D = 16


def _norm(**options):
    """A prepbn norm with non-trivial affine parameters and running statistics moved off init."""
    torch.manual_seed(0)
    norm = registry.build("norm", "prepbn", dim=D, **options).train()
    with torch.no_grad():
        norm.rep_bn.eta.fill_(0.3)
        norm.rep_bn.bn.weight.normal_()
        norm.rep_bn.bn.bias.normal_()
        norm.layer_norm.weight.normal_()
    for _ in range(3):
        norm(torch.randn(4, 8, D) * 2 + 1)
    return norm


def _repbn_train(norm, x):
    """RepBN by hand with batch statistics (biased variance)."""
    flat, bn = x.reshape(-1, D), norm.rep_bn.bn
    return (x - flat.mean(0)) / torch.sqrt(flat.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias + norm.rep_bn.eta * x


def _repbn_eval(norm, x):
    """RepBN by hand with running statistics."""
    bn = norm.rep_bn.bn
    return (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias + norm.rep_bn.eta * x


def test_default_schedule_is_the_papers_60k_of_375k():
    norm = registry.build("norm", "prepbn", dim=D)
    assert norm.decay == pytest.approx(0.16) and norm.warmup == 0.0 and norm.r0 == 1.0
    values = []
    for f in (0.0, 0.04, 0.08, 0.12, 0.16, 0.5, 1.0):
        norm.set_progress(f)
        values.append(float(norm.lam))
    assert values == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0], abs=1e-6)


def test_warmup_r0_and_window():
    norm = registry.build("norm", "prepbn", dim=D, warmup=0.1, decay=0.4, r0=0.8)
    got = {f: norm.lam_at(f) for f in (0.0, 0.05, 0.1, 0.3, 0.45, 0.5, 0.9, 1.0)}
    assert got == pytest.approx({0.0: 1.0, 0.05: 1.0, 0.1: 0.8, 0.3: 0.4, 0.45: 0.1, 0.5: 0.0, 0.9: 0.0, 1.0: 0.0})
    sudden = registry.build("norm", "prepbn", dim=D, warmup=0.2, decay=0.0)
    assert [sudden.lam_at(f) for f in (0.0, 0.19, 0.2, 1.0)] == [1.0, 1.0, 0.0, 0.0]


def test_trainer_contract_matches_the_reference_countdown():
    # The trainer sets step / steps before each step; the reference counts iter down from
    # `step` to 0 with lamda = iter / step. 50 steps x 0.16 = a window of 8 steps.
    norm = registry.build("norm", "prepbn", dim=D)
    for step in range(50):
        norm.set_progress(step / 50)
        assert float(norm.lam) == pytest.approx(max(0.0, (8 - step) / 8), abs=1e-6)


def test_train_mode_mixes_and_is_plain_repbn_after_the_window():
    norm = _norm()
    x = torch.randn(2, 8, D) * 2 + 1
    norm.set_progress(0.0)
    assert torch.allclose(norm(x), norm.layer_norm(x), atol=1e-6)
    norm.set_progress(0.08)  # lam = 0.5
    mid = 0.5 * norm.layer_norm(x) + 0.5 * _repbn_train(norm, x)
    assert (norm(x) - mid).abs().max() < 1e-5
    norm.set_progress(0.3)
    assert float(norm.lam) == 0.0
    assert (norm(x) - _repbn_train(norm, x)).abs().max() < 1e-5


def test_every_parameter_gets_a_gradient_at_any_lam():
    # Both branches stay in the graph in training, so DDP needs no unused-parameter search.
    for f in (0.0, 0.5):
        norm = _norm(warmup=0.1)
        norm.set_progress(f)
        norm(torch.randn(2, 8, D)).square().sum().backward()
        assert all(p.grad is not None for p in norm.parameters())


def test_eval_is_repbn_alone_even_at_progress_zero():
    norm = _norm()
    norm.set_progress(0.0)
    assert float(norm.lam) == 1.0
    norm.eval()
    x = torch.randn(2, 8, D) * 2 + 1
    assert (norm(x) - _repbn_eval(norm, x)).abs().max() < 1e-5
    assert (norm(x) - norm.rep_bn(x)).abs().max() == 0
    scale, shift = norm.folded_affine()
    assert (norm(x) - (x * scale + shift)).abs().max() < 1e-5


@pytest.mark.parametrize("ffn", ["mlp", "glu"])
def test_folding_leaves_eval_outputs_unchanged(ffn):
    model = af.create("vit", image_size=8, patch_size=2, channels=1, dim=32, depth=2,
                      norm={"name": "prepbn", "placement": "pre"}, ffn=ffn)
    images = torch.randn(4, 1, 8, 8)
    model = at_end_of_schedule(model, images)
    before = model(images)
    assert fold_batchnorm(model) == 4  # two sublayers per block, two blocks
    after = model(images)
    assert torch.allclose(before, after, atol=1e-5)
    assert not any(type(s.norm_in).__name__ == "ProgressiveRepBatchNorm" for s in model.modules() if hasattr(s, "norm_in"))


def test_folding_mid_schedule_needs_no_manual_call():
    torch.manual_seed(0)
    model = af.create("vit", image_size=8, patch_size=2, channels=1, dim=32, depth=2, norm="prepbn").train()
    images = torch.randn(4, 1, 8, 8)
    for m in model.modules():
        if hasattr(m, "set_progress"):
            m.set_progress(0.05)  # lam = 1 - 0.05 / 0.16, inside the window
    for _ in range(3):
        model(images)
    lams = [float(m.lam) for m in model.modules() if hasattr(m, "lam")]
    assert lams and all(lam == pytest.approx(1 - 0.05 / 0.16) for lam in lams)
    model.eval()
    with torch.no_grad():
        before = model(images)
        assert fold_batchnorm(model) == 4
        after = model(images)
    assert (before - after).abs().max() < 1e-4


def test_state_dict_keeps_its_keys_and_resumes_the_schedule():
    norm = _norm()
    norm.set_progress(0.1)
    state = norm.state_dict()
    # The keys of the earlier schedule's checkpoints: they load strictly.
    assert set(state) == {"lam", "layer_norm.weight", "layer_norm.bias", "rep_bn.eta", "rep_bn.bn.weight",
                          "rep_bn.bn.bias", "rep_bn.bn.running_mean", "rep_bn.bn.running_var"}
    fresh = registry.build("norm", "prepbn", dim=D).train()
    fresh.load_state_dict(state)
    assert float(fresh.lam) == pytest.approx(1 - 0.1 / 0.16)
    x = torch.randn(2, 8, D)
    assert torch.equal(fresh(x), norm(x))


@pytest.mark.parametrize("options, match", [
    ({"warmup": -0.1}, "warmup must be in"),
    ({"warmup": 1.5}, "warmup must be in"),
    ({"decay": 1.2}, "decay must be in"),
    ({"decay": -0.01}, "decay must be in"),
    ({"r0": 1.5}, "r0 must be in"),
    ({"warmup": 0.9, "decay": 0.2}, "warmup \\+ decay must be at most 1"),
])
def test_bad_options_are_one_line_config_errors(options, match):
    with pytest.raises(ConfigError, match=match) as err:
        registry.build("norm", "prepbn", dim=D, **options)
    assert "\n" not in str(err.value)


def test_window_may_end_exactly_at_the_end_of_training():
    norm = registry.build("norm", "prepbn", dim=D, warmup=0.84, decay=0.16)
    assert norm.lam_at(0.92) == pytest.approx(0.5) and norm.lam_at(1.0) == 0.0
