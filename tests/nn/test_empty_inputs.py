"""Edge shapes: a batch of 0 samples and an input of 0 tokens are ShapeErrors from the
encoder contract (nn/encoders/base.py), for every preset and so every arch, encoder and
mixer behind them (before: `RuntimeError: cannot reshape tensor of 0 elements` from deep
inside a mixer)."""
from __future__ import annotations

import pytest
import torch

import anyformer as af
from anyformer import registry
from anyformer.errors import ShapeError
from anyformer.nn.encoders.base import Encoder


def smallest_depth(preset: str) -> int:
    arch = af.model_config(preset).arch
    return sum(arch.options.get("depths") or [1])


def _slice(x, index):
    return {k: _slice(v, index) for k, v in x.items()} if isinstance(x, dict) else x[index]


@pytest.mark.parametrize("preset", af.list_presets())
def test_a_batch_of_zero_samples_is_a_shape_error(preset):
    model = af.create(preset, depth=smallest_depth(preset), dim=32, heads=4, max_len=16)
    empty = _slice(model.encoder.example_input(batch=2), slice(0, 0))
    for mode in (model.train, model.eval):
        mode()
        with pytest.raises(ShapeError, match=r"^encoder '[a-z-]+' got a batch of 0 samples; pass at least one sample$"):
            model(empty)


@pytest.mark.parametrize("preset", [p for p in af.list_presets()
                                    if af.model_config(p).encoder.name in ("tokens", "series")])
def test_an_input_of_zero_tokens_is_a_shape_error(preset):
    model = af.create(preset, depth=smallest_depth(preset), dim=32, heads=4, max_len=16)
    x = model.encoder.example_input(batch=2)[:, :0]
    with pytest.raises(ShapeError, match=r"got an input of 0 tokens; pass at least one token") as err:
        model(x)
    assert "\n" not in str(err.value)


def test_a_cls_token_alone_is_no_input_either():
    model = af.create("bert", dim=16, heads=2, depth=1, max_len=8)
    assert model.encoder.num_prefix_tokens == 1
    with pytest.raises(ShapeError, match="encoder 'tokens' got an input of 0 tokens"):
        model(torch.zeros(2, 0, dtype=torch.long))
    assert model(torch.zeros(2, 1, dtype=torch.long)).shape == (2, 2)  # one real token is enough


def test_every_encoder_checks_through_the_base_class():
    # The check lives on the contract, not in each encoder: every registered one inherits it.
    for name in registry.list_components("encoder"):
        assert issubclass(registry.get("encoder", name), Encoder), name
    encoder = registry.build("encoder", "tabular", dim=8, num_numeric=3)
    with pytest.raises(ShapeError, match="encoder 'tabular' got a batch of 0 samples"):
        encoder(torch.zeros(0, 3))
    with pytest.raises(ShapeError, match="encoder 'tabular' got a batch of 0 samples"):
        registry.build("encoder", "tabular", dim=8, num_numeric=1, categories=[3])(
            {"numeric": torch.zeros(0, 1), "categorical": torch.zeros(0, 1, dtype=torch.long)})


@pytest.mark.parametrize("head", ["cls", "mean", "last", "attention", "multilayer", "mlp-cls", "random-feature"])
def test_a_sample_of_padding_only_gives_finite_logits(head):
    # The attention head's softmax over no real token was NaN (the fuzz campaign's last crash).
    torch.manual_seed(0)
    model = af.create("bert", depth=1, dim=16, heads=2, max_len=8, head={"name": head, "num_classes": 3},
                      encoder={"name": "tokens", "vocab_size": 5, "pad_id": 0, "cls_token": False}).eval()
    ids = torch.tensor([[0] * 8, [3, 4, 2, 0, 0, 0, 0, 0]])  # all padding; three real tokens
    out = model(ids)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    alone = model(ids[1:])  # the padded-only neighbour changes nothing for the real sample
    assert torch.allclose(out[1:], alone, atol=1e-6)
