"""Every registered transition (what may sit between two layers and shorten the sequence,
model.schedule.transition) against its contract: built with the model's context (dim=...),
forward(x [B, L, D], mask) -> (y [B, out_length(L), D], mask of that length); `out_grid`
agrees with `out_length` on grid tokens; gradients reach every parameter; eval is deterministic."""
from __future__ import annotations

import pytest
import torch

from anyformer import registry
from anyformer.errors import ShapeError

from .helpers import DIM, HEADS, LEN

TRANSITIONS = registry.list_components("transition")
LENGTHS = [1, 2, 3, 5, 8, 16, 17]
GRIDS = [(4, 4), (2, 8), (3, 5), (1, 1)]


def make(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cls = registry.get("transition", name)
    # The stack builds a transition as build("transition", name, dim=model.dim, **options);
    # other context keys are offered too and dropped when the transition does not take them.
    return registry.build("transition", name, dim=DIM, heads=HEADS, max_len=LEN, **getattr(cls, "example_options", {}))


def _prefix_mask(lengths: list[int], total: int) -> torch.Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("name", TRANSITIONS)
def test_declares_contract(name):
    cls = registry.get("transition", name)
    assert getattr(cls, "paper", ""), f"transition {name} needs a `paper` attribute"
    assert cls.__doc__ and len(cls.__doc__.strip()) > 20
    t = make(name)
    assert callable(getattr(t, "out_length", None)) and callable(getattr(t, "out_grid", None))


@pytest.mark.parametrize("name", TRANSITIONS)
@pytest.mark.parametrize("length", LENGTHS)
def test_output_length_matches_out_length(name, length):
    t = make(name).eval()
    n = t.out_length(length)
    assert isinstance(n, int) and 1 <= n <= length, f"{name}: out_length({length}) = {n}"
    x = torch.randn(2, length, DIM)
    with torch.no_grad():
        y, mask = t(x, torch.ones(2, length, dtype=torch.bool))
        y_none, mask_none = t(x, None)
    assert y.shape == (2, n, DIM) and y.dtype == x.dtype and torch.isfinite(y).all()
    assert mask is not None and mask.dtype == torch.bool and mask.shape == (2, n)
    assert mask.all(), f"{name}: an all-real input gives padded outputs {mask.tolist()}"
    # Without a mask nothing is padded: the same output, and no mask (or an all-real one).
    assert torch.equal(y_none, y)
    assert mask_none is None or (mask_none.shape == (2, n) and mask_none.all())


@pytest.mark.parametrize("name", TRANSITIONS)
@pytest.mark.parametrize("length,real", [(16, 6), (16, 11), (17, 9), (8, 1), (5, 4)])
def test_output_mask_marks_real_tokens(name, length, real):
    """Trailing padding stays trailing; the outputs a pad-free input of `real` tokens would
    have are real; an output beyond those of `real + 1` tokens draws on padding only."""
    t = make(name).eval()
    mask_in = _prefix_mask([real, length], length)
    with torch.no_grad():
        _, mask = t(torch.randn(2, length, DIM), mask_in)
    n = t.out_length(length)
    assert mask.shape == (2, n) and mask.dtype == torch.bool
    count = mask.sum(1).tolist()
    assert torch.equal(mask, _prefix_mask(count, n)), f"{name}: output mask {mask.int().tolist()} is not a prefix"
    assert count[1] == n, f"{name}: a row without padding lost real outputs: {mask[1].int().tolist()}"
    low, high = t.out_length(real), t.out_length(min(real + 1, length))
    assert low <= count[0] <= high, \
        f"{name}: {real} real of {length} tokens give {count[0]} real outputs, want {low}..{high}"


@pytest.mark.parametrize("name", TRANSITIONS)
@pytest.mark.parametrize("grid", GRIDS)
def test_out_grid_agrees_with_out_length(name, grid):
    t = make(name).eval()
    assert t.out_grid(None) is None, f"{name}: out_grid(None) must be None (no grid in, no grid out)"
    out = t.out_grid(grid)
    if out is None:  # the transition does not keep 2-D structure (declared by returning None)
        return
    assert len(out) == 2 and all(isinstance(v, int) and v >= 1 for v in out), f"{name}: out_grid({grid}) = {out}"
    L = grid[0] * grid[1]
    assert out[0] * out[1] == t.out_length(L), f"{name}: out_grid({grid}) = {out} but out_length({L}) = {t.out_length(L)}"
    with torch.no_grad():
        y, _ = t(torch.randn(2, L, DIM), None)
    assert y.shape[1] == out[0] * out[1]


@pytest.mark.parametrize("name", TRANSITIONS)
def test_gradients_reach_every_parameter(name):
    t = make(name).train()
    x = torch.randn(2, LEN, DIM, requires_grad=True)
    y, _ = t(x, _prefix_mask([LEN - 3, LEN], LEN))
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    missing = [n for n, p in t.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient reaches {missing}"
    bad = [n for n, p in t.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradients in {bad}"


@pytest.mark.parametrize("name", TRANSITIONS)
def test_deterministic_in_eval(name):
    a, b = make(name, seed=3).eval(), make(name, seed=3).eval()
    x = torch.randn(2, LEN, DIM)
    mask = _prefix_mask([LEN - 5, LEN], LEN)
    with torch.no_grad():
        (y1, m1), (y2, m2), (y3, m3) = a(x, mask), a(x, mask), b(x, mask)
    assert torch.equal(y1, y2) and torch.equal(m1, m2), f"{name}: two eval passes differ"
    assert torch.equal(y1, y3) and torch.equal(m1, m3), f"{name}: two builds with one seed differ"


@pytest.mark.parametrize("name", TRANSITIONS)
def test_rejects_inputs_that_are_not_batch_length_dim(name):
    t = make(name).eval()
    with pytest.raises(ShapeError):
        t(torch.randn(LEN, DIM), None)
    with pytest.raises(ShapeError):
        t(torch.randn(2, LEN, DIM + 1), None)
