"""Informer: shapes, the decoder's causal self-attention, and that it learns a sine series."""

import pytest
import torch

import anyformer as af

from ..helpers import adam_losses, sine_windows
from anyformer.errors import ConfigError

C = 2


def _model(horizon=8, label_len=8, depth=2, **kw):
    return af.create("informer", dim=32, heads=4, depth=depth, max_len=32, dropout=0.0,
                     encoder={"name": "series", "channels": C, "mode": "step"},
                     head={"name": "forecast", "horizon": horizon},
                     arch={"name": "informer", "label_len": label_len}, **kw)


def test_output_shape_structure_and_label_window():
    model = _model().eval()
    x = torch.randn(3, 32, C)
    assert model(x).shape == (3, 8, C)
    assert [b.mixer.max_len for b in model.stack.blocks] == [32, 16]  # distilled second layer
    assert type(model.stack.blocks[0].mixer).__name__ == "ProbSparseAttention"
    dec_in = model.decoder_input(x)
    assert dec_in.shape == (3, 16, C)
    assert torch.equal(dec_in[:, :8], x[:, -8:]) and torch.all(dec_in[:, 8:] == 0)
    assert "decoder" in model.parameter_report()


def test_decoder_self_attention_is_causal_probsparse():
    model = _model().eval()
    attn = model.decoder_layers[0].self_sub.fn
    assert type(attn).__name__ == "ProbSparseAttention" and attn.causal
    h = torch.randn(2, 16, 32)
    h2 = h.clone()
    h2[:, 9:] = torch.randn(2, 7, 32) * 3
    assert torch.allclose(attn(h)[:, :9], attn(h2)[:, :9], atol=1e-5)
    assert not torch.allclose(attn(h)[:, 9:], attn(h2)[:, 9:], atol=1e-5)


def test_forecast_depends_only_on_the_input_window():
    model = _model().eval()
    x = torch.randn(2, 32, C)
    x2 = x.clone()
    x2[1] = torch.randn(32, C)
    out, out2 = model(x), model(x2)
    assert torch.allclose(out[0], out2[0], atol=1e-5) and not torch.allclose(out[1], out2[1])


def test_adam_steps_reduce_mse_on_sine_series():
    torch.manual_seed(0)
    model = _model(depth=2)
    x, y = sine_windows()
    losses = adam_losses(model, x, y)
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], losses


@pytest.mark.parametrize("kwargs,match", [
    ({"head": {"name": "mean"}}, "forecast"),
    ({"encoder": {"name": "series", "channels": C, "mode": "patch"}}, "step"),
    ({"arch": {"name": "informer", "horizon": 5}}, "horizon"),
])
def test_config_errors(kwargs, match):
    base = {"dim": 32, "heads": 4, "depth": 1, "max_len": 32, "encoder": {"name": "series", "channels": C},
            "head": {"name": "forecast", "horizon": 8}, "arch": "informer"}
    with pytest.raises(ConfigError, match=match):
        af.create({**base, **kwargs})


def test_preset_keeps_informer_structure():
    model = af.create("informer", dim=32, heads=4, max_len=96)
    assert len(model.stack.blocks) == 2 and len(model.stack.transitions) == 1 and len(model.decoder_layers) == 1
    assert model.label_len == 48 and model.horizon == 96
    assert model.stack.blocks[0].mixer.factor == 5
    assert model(torch.randn(1, 96, 7)).shape == (1, 96, 7)
