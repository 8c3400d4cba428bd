"""Absurd option values the fuzz campaign found past the memory guard (nn/footprint.py): a
Python loop or a Python-side size that ran for ever or raised a raw torch error before any
tensor was counted. Each is now a one-line ConfigError, or works without the allocation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import anyformer as af
from anyformer.errors import ConfigError
from anyformer.nn.archs.fedformer import MovingAverage
from anyformer.nn.mixers.performer import orthogonal_gaussian_projection

SMALL = dict(dim=16, heads=2, depth=1, max_len=8)


@pytest.mark.parametrize("spec,message", [
    # Looped over 10^11 QR blocks before anything was allocated (a hang).
    ({"mixer": {"name": "performer", "features": 10 ** 12}}, r"^model.mixer.features=1000000000000 / model.dim=16: the model needs"),
    # A vocab_size that cannot tie was allocated first (a raw allocator RuntimeError).
    ({"head": {"name": "lm", "vocab_size": 10 ** 12}}, r"^head 'lm' tie=true needs a token encoder with the same vocabulary"),
    # Built 10^12 Linear layers in a Python list (a hang).
    ({"head": {"name": "mlp-cls", "layers": 10 ** 12}}, r"the model would have over 30,000 modules"),
    # On meta the strides overflowed first: a TypeError with no sizes, then a raw build error.
    ({"mixer": {"name": "karat", "rank": 10 ** 18}}, r"^model.mixer.rank=1000000000000000000: the model needs over 8 EiB"),
    ({"mixer": {"name": "ssa", "eval_samples": 10 ** 12}}, r"^model.mixer.eval_samples must be in \[0, 1000\], got 1000000000000"),
])
def test_absurd_values_are_refused_in_one_line(spec, message):
    with pytest.raises(ConfigError, match=message) as err:
        af.create("gpt", **SMALL, **spec)
    assert "\n" not in str(err.value)


def test_an_image_of_more_tokens_than_any_tensor_holds_is_refused():
    with pytest.raises(ConfigError, match=r"^encoder 'patches': image_size 1000000000000x1000000000000 / patch_size 2x2 gives more tokens than any tensor holds"):
        af.create("vit-gap", dim=16, heads=2, depth=1, image_size=10 ** 12, patch_size=2)


def test_a_huge_capacity_factor_is_no_limit():
    # ceil(1e30 * tokens * k / experts) reached torch as an int past int64 (OverflowError).
    model = af.create("gpt", **SMALL, ffn={"name": "moe", "experts": 4, "top_k": 2, "ratio": 1.0, "capacity_factor": 1e30})
    free = af.create("gpt", **SMALL, ffn={"name": "moe", "experts": 4, "top_k": 2, "ratio": 1.0})
    free.load_state_dict(model.state_dict())
    ids = torch.randint(0, 256, (2, 8))
    assert torch.allclose(model(ids), free(ids))


def _padded_average(x, k):
    back = (k - 1) // 2
    front = k - 1 - back
    padded = torch.cat([x[:, :1].expand(-1, front, -1), x, x[:, -1:].expand(-1, back, -1)], 1)
    return F.avg_pool1d(padded.transpose(1, 2), k, stride=1).transpose(1, 2)


@pytest.mark.parametrize("kernel", [7, 8, 9, 25, 10 ** 12])
def test_a_moving_average_wider_than_the_series_needs_no_padding(kernel):
    # FEDformer's decomposition materialised k - 1 repeated ends: 10^12 of them at forward.
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    out = MovingAverage(kernel)(x)
    if kernel < 100:
        assert torch.allclose(out, _padded_average(x, kernel), atol=1e-12)
    else:  # the ends dominate: the average tends to the mean of the first and last steps
        assert torch.allclose(out, (x[:, :1] + x[:, -1:]).expand_as(x) / 2, atol=1e-9)


def test_the_batched_projection_draws_what_one_block_after_another_drew():
    torch.manual_seed(0)
    got = orthogonal_gaussian_projection(40, 16)
    torch.manual_seed(0)
    blocks = []
    for _ in range(3):
        q, r = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
        blocks.append((q * torch.sign(torch.diagonal(r))[None, :]).T)
    norms = torch.randn(40, 16, dtype=torch.float64).norm(dim=1)
    assert torch.equal(got, (torch.cat(blocks)[:40] * norms[:, None]).float())


def test_more_permuted_groups_than_tokens_is_one_token_per_group():
    # The extra groups held only padding slots: 10^12 of them at forward.
    torch.manual_seed(0)
    model = af.create("transformer", dim=16, heads=2, depth=2, max_len=8, mixer={"name": "sliced", "groups": 2, "permuted_groups": 10 ** 12}).eval()
    same = af.create("transformer", dim=16, heads=2, depth=2, max_len=8, mixer={"name": "sliced", "groups": 2, "permuted_groups": 8}).eval()
    same.load_state_dict(model.state_dict())
    x = model.encoder.example_input(3)
    assert torch.allclose(model(x), same(x), atol=1e-6)


def test_an_invalid_config_is_refused_before_a_huge_part_is_allocated():
    """Found by the fuzz campaign (seed 11): the embedding of 1e12 ids was allocated (128 TB,
    a raw allocator error) before the mixer refused its rotary positions."""
    cfg = {"encoder": {"name": "tokens", "vocab_size": 10**12}, "mixer": {"name": "gau"}, "position": {"name": "rotary"},
           "head": {"name": "mean", "num_classes": 2}, "dim": 32, "heads": 2, "depth": 1, "max_len": 16}
    with pytest.raises(ConfigError, match="mixer 'gau' cannot apply 'rotary' positions"):
        af.create(cfg)
