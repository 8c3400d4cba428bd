"""Every registered head against its contract: `(tokens [B, L, D], mask, hidden_states) ->
output` of the shape its problem family declares (features: [B, L, D] or pooled [B, D]), and padding-mask invariance: the values of
padded tokens (in `tokens` and in every `hidden_states` entry) never change the output.

Which part of the output must stay fixed is read from the head's declared `problem` (and, for
forecasting, its `per_token` attribute): a pooled output ([B, K] logits, a flattened forecast
[B, H, C]) is compared whole; a per-token output (LM logits [B, L, V], a per-variate forecast
[B, H, N]) carries one slice per input position by design, so only the real positions' slices
are compared. A head of another problem fails `test_declares_a_known_problem` until it is
placed here."""
from __future__ import annotations

import pytest
import torch

from anyformer import registry

from .helpers import DIM, HEADS, LEN, padding_mask

HEAD_NAMES = registry.list_components("head")
B, LAYERS = 2, 3
PROBLEMS = ("classification", "lm", "forecast", "features")
# Further option sets that change which positions a head reads (each head also runs on
# its declared example_options alone).
VARIANTS: dict[str, list[dict]] = {
    "features": [{"pool": "none", "pooler": False}, {"pool": "first"}, {"pool": "mean", "normalize": True}, {"pool": "last"}, {"pool": "pooler", "pooler": True}],
    "forecast": [{"per_token": True}, {"horizon": 3, "channels": 2}],
    "multilayer": [{"token": "first"}, {"token": "mean"}],
    "random-feature": [{"normalization": "softmax"}, {"qk_mean": 1.0, "scale": "sum"}],
}
CASES = [(n, {}) for n in HEAD_NAMES] + [(n, opts) for n, variants in VARIANTS.items() if n in HEAD_NAMES for opts in variants]
IDS = [n + "".join(f"-{k}={v}" for k, v in opts.items()) for n, opts in CASES]


def make(name: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    cls = registry.get("head", name)
    opts = {**getattr(cls, "example_options", {}), **options}
    return registry.build("head", name, dim=DIM, heads=HEADS, num_tokens=LEN, **opts).eval()


def per_token_axis(head) -> int | None:
    """The output axis that runs over input positions, or None for a pooled output."""
    problem = type(head).problem
    if problem == "lm" or (problem == "features" and head.per_token):
        return 1
    if problem == "forecast" and getattr(head, "per_token", False):
        return -1
    return None


def expected_shape(head) -> tuple[int, ...]:
    problem = type(head).problem
    if problem == "classification":
        return (B, head.num_classes)
    if problem == "lm":
        return (B, LEN, head.vocab_size)
    if problem == "features":
        return (B, LEN, DIM) if head.per_token else (B, DIM)
    assert problem == "forecast"
    return (B, head.horizon, LEN) if head.per_token else (B, head.horizon, head.channels)


def real_part(out: torch.Tensor, mask: torch.Tensor, axis: int | None) -> list[torch.Tensor]:
    """Per sample, the output that may depend only on that sample's real tokens."""
    if axis is None:
        return list(out)
    sample_axis = axis if axis < 0 else axis - 1  # the axis within one sample's output
    return [o.movedim(sample_axis, 0)[m] for o, m in zip(out, mask)]


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(B, LEN, DIM, generator=g)
    hidden = [torch.randn(B, LEN, DIM, generator=g) for _ in range(LAYERS)]
    return tokens, hidden


def _replace(x: torch.Tensor, where: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = x.clone()
    y[where] = torch.randn(int(where.sum()), x.shape[-1], generator=g) * 5 + 3
    return y


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_declares_a_known_problem(name):
    problem = getattr(registry.get("head", name), "problem", None)
    assert problem in PROBLEMS, \
        f"head {name} declares problem {problem!r}; tests/nn/test_generic_heads.py knows {PROBLEMS}: say there which outputs are per token"


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_output_shape_and_finite(name, options):
    head = make(name, **options)
    tokens, hidden = _inputs()
    with torch.no_grad():
        out = head(tokens, padding_mask(), hidden)
    assert tuple(out.shape) == expected_shape(head), f"{name}: output {tuple(out.shape)}, want {expected_shape(head)}"
    assert out.dtype == tokens.dtype and torch.isfinite(out).all()


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_padded_tokens_do_not_change_the_output(name, options):
    head = make(name, **options)
    axis = per_token_axis(head)
    tokens, hidden = _inputs()
    mask = padding_mask()
    pad = ~mask
    tokens2 = _replace(tokens, pad, seed=2)
    hidden2 = [_replace(h, pad, seed=3 + i) for i, h in enumerate(hidden)]
    with torch.no_grad():
        out, out2 = head(tokens, mask, hidden), head(tokens2, mask, hidden2)
    for i, (a, b) in enumerate(zip(real_part(out, mask, axis), real_part(out2, mask, axis))):
        assert torch.allclose(a, b, atol=1e-5), \
            f"head {name} {options}: padded tokens change sample {i}'s output by {(a - b).abs().max():.3g}"
    # The comparison has teeth: changing the real tokens does change the output.
    tokens3 = _replace(tokens, mask, seed=9)
    hidden3 = [_replace(h, mask, seed=10 + i) for i, h in enumerate(hidden)]
    with torch.no_grad():
        out3 = head(tokens3, mask, hidden3)
    for i, (a, c) in enumerate(zip(real_part(out, mask, axis), real_part(out3, mask, axis))):
        assert not torch.allclose(a, c, atol=1e-5), f"head {name} {options}: sample {i}'s output ignores its real tokens"


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_an_all_real_mask_equals_no_mask(name, options):
    head = make(name, **options)
    tokens, hidden = _inputs()
    with torch.no_grad():
        out = head(tokens, torch.ones(B, LEN, dtype=torch.bool), hidden)
        out_none = head(tokens, None, hidden)
    assert torch.allclose(out, out_none, atol=1e-6), f"head {name}: mask of all real tokens differs from no mask"
