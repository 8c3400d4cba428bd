"""Informer's distilling transition: length arithmetic and its use between layers."""
import pytest
import torch

import anyformer as af


@pytest.mark.parametrize("length", [1, 2, 7, 16, 96, 97])
def test_out_length_matches_output(length):
    t = af.build("transition", "distill", dim=8).eval()
    y, mask = t(torch.randn(2, length, 8), torch.ones(2, length, dtype=torch.bool))
    assert y.shape == (2, t.out_length(length), 8) and mask.shape == (2, t.out_length(length))
    assert t.out_length(length) == -(-length // 2)


def test_matches_conv_bn_elu_maxpool():
    t = af.build("transition", "distill", dim=8).eval()
    with torch.no_grad():
        t.norm.running_mean.uniform_(-1, 1)
        t.norm.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 10, 8)
    h = x.transpose(1, 2)
    padded = torch.cat([h[..., -1:], h, h[..., :1]], dim=-1)  # circular padding by one
    h = torch.nn.functional.conv1d(padded, t.conv.weight, t.conv.bias)
    h = (h - t.norm.running_mean[:, None]) / (t.norm.running_var[:, None] + t.norm.eps).sqrt()
    h = torch.nn.functional.elu(h * t.norm.weight[:, None] + t.norm.bias[:, None])
    h = torch.nn.functional.pad(h, (1, 1), value=float("-inf"))
    want = torch.stack([h[..., i:i + 3].amax(-1) for i in range(0, 10, 2)], dim=-1).transpose(1, 2)
    assert torch.allclose(t(x)[0], want, atol=1e-5)


def test_model_with_distilling_shortens_later_layers():
    model = af.create({"dim": 32, "heads": 4, "depth": 3, "max_len": 16, "mixer": "probsparse",
                       "encoder": {"name": "series", "channels": 3}, "head": {"name": "forecast", "horizon": 4, "channels": 3},
                       "schedule": {"transition": {"name": "distill"}}})
    assert [b.mixer.max_len for b in model.stack.blocks] == [16, 8, 4]
    out, hidden = model(torch.randn(2, 16, 3), return_hidden=True)
    assert [h.shape[1] for h in hidden] == [16, 8, 4]
    assert out.shape == (2, 4, 3)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.stack.transitions.parameters())
