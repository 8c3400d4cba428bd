"""`attention_weights(x, mask)`: the softmax weights a mixer's forward applies. Multiplied by
its values and o_proj they give its output exactly, so attention tracking reads what the
model uses, not an estimate."""
import math

import pytest
import torch

from anyformer import registry
from anyformer.train.attention_tracking import has_attention_weights

from ..helpers import DIM, HEADS, LEN, make_mixer, padding_mask

WITH_WEIGHTS = [n for n in registry.list_components("mixer") if has_attention_weights(registry.get("mixer", n))]


def _through_values(mixer, x, weights):
    """o_proj(merge(weights @ v)): the output the weights give."""
    _, _, v = mixer.qkv(x)
    return mixer.o_proj(mixer.merge(weights @ v))


def _check(mixer, x, mask):
    mixer.eval()
    with torch.no_grad():
        w = mixer.attention_weights(x, mask)
        assert w.shape == (x.shape[0], mixer.heads, x.shape[1], x.shape[1])
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
        got, want = _through_values(mixer, x, w), mixer(x, mask)
    real = mask if mask is not None else torch.ones(x.shape[:2], dtype=torch.bool)
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-4)
    return w


def test_softmax_and_local_declare_weights():
    assert {"softmax", "local"} <= set(WITH_WEIGHTS)
    assert "linear" not in WITH_WEIGHTS  # no explicit softmax matrix there


@pytest.mark.parametrize("name", WITH_WEIGHTS)
@pytest.mark.parametrize("causal", [False, True])
def test_weights_reproduce_the_output(name, causal):
    torch.manual_seed(0)
    mixer = make_mixer(name, causal=causal)
    x = torch.randn(2, LEN, DIM)
    mask = padding_mask()
    w = _check(mixer, x, mask)
    # Padding keys get no weight from real queries; causal queries none from the future.
    assert float(w[0, :, :11, 11:].abs().max()) == 0.0
    if causal:
        assert float(w[:, :, :11].triu(1)[..., :11].abs().max()) == 0.0
    _check(mixer, x, None)


def test_softmax_weights_are_softmax_of_scaled_scores():
    torch.manual_seed(1)
    mixer = make_mixer("softmax").eval()
    x = torch.randn(1, 5, DIM)
    q, k, _ = mixer.qkv(x)
    want = (q @ k.transpose(-1, -2) / math.sqrt(DIM // HEADS)).softmax(-1)
    torch.testing.assert_close(mixer.attention_weights(x), want)


@pytest.mark.parametrize("position", ["rotary", "alibi"])
def test_softmax_weights_with_positions_inside_the_mixer(position):
    torch.manual_seed(2)
    mixer = make_mixer("softmax", causal=True)
    opts = {"dim": DIM, "heads": HEADS, "num_tokens": LEN} if position == "rotary" else {"heads": HEADS}
    mixer.set_position(registry.build("position", position, **opts))
    _check(mixer, torch.randn(2, LEN, DIM), padding_mask())


def test_grouped_query_weights_reproduce_the_output():
    torch.manual_seed(3)
    _check(make_mixer("softmax", kv_heads=2), torch.randn(2, LEN, DIM), padding_mask())


def test_local_weights_in_the_blocked_regime():
    # L > 3 * window: forward runs block by block; one [L, L] matrix still gives its output.
    torch.manual_seed(4)
    mixer = make_mixer("local", window=3, distance_penalty=0.1)
    w = _check(mixer, torch.randn(2, LEN, DIM), padding_mask())
    far = (torch.arange(LEN)[:, None] - torch.arange(LEN)[None, :]).abs() >= 3
    assert float(w[..., far].abs().max()) == 0.0
