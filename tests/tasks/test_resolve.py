"""Fitting a model config to a task: a causal classifier must read a token that sees the input."""
import pytest
import torch

import anyformer as af
from anyformer.errors import ConfigError
from anyformer.tasks.digits import DigitsTask
from anyformer.tasks.resolve import model_for_task

SMALL = {"dim": 16, "heads": 2, "depth": 1}


@pytest.mark.parametrize("source, overrides", [
    ("gpt", {}),                                  # causal preset without a classification head
    ({"preset": "vit", "causal": True}, {}),      # the preset's [CLS] head kept
    ("vit", {"causal": True}),                    # causal set by --set, after the fitting
])
def test_causal_classifier_output_depends_on_the_input(source, overrides):
    torch.manual_seed(0)
    task = DigitsTask()
    cfg = model_for_task(source, task, **SMALL, **overrides)
    assert cfg.causal and cfg.head.name == "last"
    model = af.create(cfg).eval()
    x = task.splits()["test"].batch(torch.arange(4)).inputs
    with torch.no_grad():
        out = model(x)
    # With a [CLS] head at token 0 a causal model's output is the same for every image.
    assert (out - out[0]).abs().amax(-1)[1:].min() > 1e-4


def test_causal_model_with_a_cls_head_the_user_named_is_an_error():
    with pytest.raises(ConfigError, match="causal"):
        model_for_task({"preset": "vit", "causal": True, "head": "cls"}, DigitsTask(), **SMALL)
