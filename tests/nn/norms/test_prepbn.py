"""PRepBN: the schedule's end state is RepBN, and folding into the next linear is exact."""
import pytest
import torch

import anyformer as af
from anyformer import registry
from anyformer.errors import ConfigError
from anyformer.nn.norms import fold_batchnorm

from ..helpers import at_end_of_schedule

D = 16


def test_schedule_is_one_during_warmup_then_linear_to_zero():
    norm = registry.build("norm", "prepbn", dim=D, warmup=0.2)
    values = []
    for f in (0.0, 0.2, 0.6, 1.0):
        norm.set_progress(f)
        values.append(float(norm.lam))
    assert values == pytest.approx([1.0, 1.0, 0.5, 0.0])


def test_start_is_layernorm_and_end_is_plain_repbn():
    norm = registry.build("norm", "prepbn", dim=D).train()
    with torch.no_grad():
        norm.rep_bn.eta.fill_(0.3)
        norm.rep_bn.bn.weight.normal_()
        norm.layer_norm.weight.normal_()
    x = torch.randn(2, 8, D) * 2 + 1
    assert torch.allclose(norm(x), norm.layer_norm(x), atol=1e-6)
    norm.set_progress(1.0)
    flat = x.reshape(-1, D)
    bn = norm.rep_bn.bn
    want = (x - flat.mean(0)) / torch.sqrt(flat.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias + 0.3 * x
    assert torch.allclose(norm(x), want, atol=1e-5)
    norm.set_progress(0.5)
    mid = 0.5 * norm.layer_norm(x) + 0.5 * norm.rep_bn(x)
    assert torch.allclose(norm(x), mid, atol=1e-5)


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


def test_folding_mid_schedule_is_refused():
    model = af.create("vit", image_size=8, patch_size=2, channels=1, dim=32, depth=1, norm="prepbn")
    with pytest.raises(ConfigError, match="lam"):
        fold_batchnorm(model)
