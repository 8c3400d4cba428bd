"""TokenBatchNorm at the edges the fuzz campaign found: a training batch of padding only
(the mean of no token is NaN), a lone real token (variance 0 scaled the padding by
1 / sqrt(eps) per layer until it overflowed); and torch's BatchNorm layers (ffn 'conv',
transition 'distill', the convolutional patch stems) given one value per channel."""
import pytest
import torch

import anyformer as af
from anyformer import registry
from anyformer.errors import ShapeError

D = 8


def test_a_batch_of_padding_only_uses_the_running_statistics_and_leaves_them():
    bn = registry.build("norm", "batchnorm", dim=D).train()
    with torch.no_grad():
        bn.running_mean.fill_(0.5)
        bn.running_var.fill_(4.0)
    x = torch.randn(2, 3, D)
    out = bn(x, torch.zeros(2, 3, dtype=torch.bool))
    assert torch.isfinite(out).all()
    assert torch.equal(bn.running_mean, torch.full((D,), 0.5)) and torch.equal(bn.running_var, torch.full((D,), 4.0))


def test_padded_positions_leave_as_zeros_in_training_and_real_ones_are_unchanged():
    bn = registry.build("norm", "batchnorm", dim=D).train()
    x = torch.randn(2, 4, D)
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    out = bn(x, mask)
    real = x[mask]
    want = (real - real.mean(0)) / torch.sqrt(real.var(0, unbiased=False) + bn.eps)
    assert torch.allclose(out[mask], want, atol=1e-5) and torch.equal(out[~mask], torch.zeros(5, D))


def test_a_lone_real_token_through_post_norm_layers_stays_finite():
    # The fuzz case: gpt with pad_id, post-placed batchnorm, one real token in the batch.
    torch.manual_seed(0)
    model = af.create("gpt", dim=16, heads=1, depth=3, max_len=4, vocab_size=4, pad_id=1, ffn={"name": "glu", "hidden": 1},
                      norm={"name": "batchnorm", "placement": "post"}).train()
    out = model(torch.tensor([[1, 3, 1, 1]]))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("build,x,owner", [
    (lambda: registry.build("ffn", "conv", dim=D, grid=(1, 1)), torch.randn(1, 1, D), "ffn 'conv'"),
    (lambda: registry.build("transition", "distill", dim=D), torch.randn(1, 1, D), "transition 'distill'"),
    (lambda: registry.build("encoder", "dhvt-patches", dim=D, image_size=2, patch_size=2, channels=1),
     torch.randn(1, 1, 2, 2), "encoder 'dhvt-patches'"),
    (lambda: registry.build("encoder", "patches", dim=D, image_size=4, patch_size=4, channels=1, conv_stem=True),
     torch.randn(1, 1, 4, 4), "encoder 'patches'"),
])
def test_one_value_per_channel_in_training_is_a_shape_error_naming_the_part(build, x, owner):
    # Before: torch's ValueError "Expected more than 1 value per channel when training".
    module = build().train()
    with pytest.raises(ShapeError, match=rf"^{owner} normalises each channel over the batch in training.*batch of at least 2$"):
        module(x)
    module.eval()
    assert torch.isfinite(module(x)[0] if isinstance(module(x), tuple) else module(x)).all()
    module.train()
    module(torch.cat([x, x + 1]))  # two samples: statistics exist
