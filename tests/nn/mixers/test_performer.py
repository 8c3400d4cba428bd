"""Performer FAVOR+ against softmax attention and against its own feature-space formula."""
import math

import pytest
import torch

import anyformer as af
import anyformer.nn.mixers.performer as performer
from anyformer.nn.mixers.performer import orthogonal_gaussian_projection

from ..helpers import padding_mask

D, H, L = 32, 4, 16


def _pair(features, causal=False, seed=0):
    torch.manual_seed(seed)
    soft = af.build("mixer", "softmax", dim=D, heads=H, max_len=L, causal=causal).eval()
    perf = af.build("mixer", "performer", dim=D, heads=H, max_len=L, causal=causal, features=features).eval()
    missing, unexpected = perf.load_state_dict(soft.state_dict(), strict=False)
    assert missing == ["projection"] and unexpected == []
    return soft, perf


@pytest.mark.parametrize("causal", [False, True])
def test_error_against_softmax_falls_with_more_features(causal):
    errors = {}
    for m in (16, 64, 256):
        errs = []
        for seed in range(4):
            soft, perf = _pair(m, causal, seed)
            x = torch.randn(2, L, D) * 0.5
            want = soft(x)
            errs.append(((perf(x) - want).norm() / want.norm()).item())
        errors[m] = sum(errs) / len(errs)
    # Monte Carlo error ~ 1/sqrt(m): each 4x more features should roughly halve it.
    assert errors[16] > 1.5 * errors[64] and errors[64] > 1.5 * errors[256], errors
    assert errors[256] < 0.05, errors


def test_projection_rows_orthogonal_within_blocks():
    w = orthogonal_gaussian_projection(20, 8, torch.Generator().manual_seed(0))
    assert w.shape == (20, 8)
    for block in (w[:8], w[8:16]):
        gram = block @ block.T
        off = gram - torch.diag(torch.diagonal(gram))
        assert off.abs().max() < 1e-4


def _features(perf, t, is_query):
    """The paper's phi on t d^(-1/4); queries with the reference's per-query stabiliser."""
    t = t * perf.head_dim ** -0.25
    w = perf.projection
    logits = t @ w.T - t.square().sum(-1, keepdim=True) / 2
    shift = logits.amax(-1, keepdim=True) if is_query else 0.0
    return (torch.exp(logits - shift) + 1e-6) / math.sqrt(w.shape[0])


def test_noncausal_equals_feature_space_formula_and_ignores_masked_keys():
    _, perf = _pair(32)
    x = torch.randn(2, L, D)
    mask = padding_mask()
    B = x.shape[0]
    split = lambda t: t.view(B, L, H, -1).transpose(1, 2)  # noqa: E731
    q, k, v = split(perf.q_proj(x)), split(perf.k_proj(x)), split(perf.v_proj(x))
    keep = mask[:, None, :, None].float()
    pq = _features(perf, q, True)
    pk = _features(perf, k, False) * keep
    att = pq @ pk.transpose(-1, -2)
    out = (att @ v) / (att.sum(-1, keepdim=True) + 1e-6)
    want = perf.o_proj(out.transpose(1, 2).reshape(B, L, D))
    got = perf(x, mask)
    assert torch.allclose(got[mask], want[mask], atol=1e-4)


def test_causal_equals_masked_quadratic_form():
    _, perf = _pair(32, causal=True)
    x = torch.randn(2, L, D)
    B = x.shape[0]
    split = lambda t: t.view(B, L, H, -1).transpose(1, 2)  # noqa: E731
    q, k, v = split(perf.q_proj(x)), split(perf.k_proj(x)), split(perf.v_proj(x))
    att = _features(perf, q, True) @ _features(perf, k, False).transpose(-1, -2)
    att = att.tril()
    out = (att @ v) / (att.sum(-1, keepdim=True) + 1e-6)
    want = perf.o_proj(out.transpose(1, 2).reshape(B, L, D))
    assert torch.allclose(perf(x), want, atol=1e-4)


def test_redraw_every_n_training_passes_and_never_in_eval():
    perf = af.build("mixer", "performer", dim=D, heads=H, max_len=L, features=16, redraw=2)
    x = torch.randn(1, L, D)
    w0 = perf.projection.clone()
    perf.train()
    perf(x)
    perf(x)
    assert torch.equal(perf.projection, w0)
    perf(x)  # third training pass: two have run since the last draw
    assert not torch.equal(perf.projection, w0)
    w1 = perf.projection.clone()
    perf.eval()
    for _ in range(5):
        perf(x)
    assert torch.equal(perf.projection, w1)
    never = af.build("mixer", "performer", dim=D, heads=H, max_len=L, features=16, redraw=0).train()
    w2 = never.projection.clone()
    for _ in range(3):
        never(x)
    assert torch.equal(never.projection, w2)


@pytest.mark.parametrize("causal", [False, True])
def test_head_groups_give_the_same_output(causal, monkeypatch):
    """Long inputs run heads in groups (to keep allocations small); the result is identical."""
    torch.manual_seed(0)
    m = af.build("mixer", "performer", dim=32, heads=4, max_len=16, causal=causal, features=16).eval()
    x = torch.randn(2, 16, 32)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 11:] = False
    whole = m(x, mask)
    monkeypatch.setattr(performer, "MAX_FEATURE_BYTES", 1)  # one head per group
    grouped = m(x, mask)
    assert torch.allclose(whole[mask], grouped[mask], atol=1e-6)


def _float64_reference(perf, x, causal, mask=None):
    """The unshifted FAVOR+ formula (features exp(w^T k' - |k'|^2/2) + floor, no key
    stabiliser at all) as an explicit quadratic form in float64, with perf's weights."""
    B, n, _ = x.shape
    x = x.double()
    split = lambda t: t.view(B, n, perf.heads, -1).transpose(1, 2)  # noqa: E731
    lin = lambda mod, t: torch.nn.functional.linear(t, mod.weight.double(), mod.bias.double())  # noqa: E731
    q, k, v = split(lin(perf.q_proj, x)), split(lin(perf.k_proj, x)), split(lin(perf.v_proj, x))
    w = perf.projection.double()
    m = w.shape[0]

    def logits(t):
        t = t * perf.head_dim ** -0.25
        return t @ w.T - t.square().sum(-1, keepdim=True) / 2

    lq, lk = logits(q), logits(k)
    pq = (torch.exp(lq - lq.amax(-1, keepdim=True)) + 1e-6) / math.sqrt(m)
    pk = (torch.exp(lk) + 1e-6) / math.sqrt(m)
    att = pq @ pk.transpose(-1, -2)
    if causal:
        att = att.tril()
    if mask is not None:
        att = att * mask[:, None, None, :]
    out = (att @ v) / (att.sum(-1, keepdim=True) + perf.eps)
    return lin(perf.o_proj, out.transpose(1, 2).reshape(B, n, -1))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("head_dim", [128, 256])
def test_float32_matches_float64_at_large_head_dims(head_dim, causal):
    """The old causal key shift, a fixed bound max_r |w_r|^2 / 2 (about 90 at head_dim 128,
    170 at 256), left every key feature subnormal or zero in float32: relative error 1.7e-2
    at 128 and nan at 256. The running-maximum shift keeps float32 at ~1e-6."""
    torch.manual_seed(0)
    n = 80  # several chunks of 32 and a partial one
    perf = af.build("mixer", "performer", dim=head_dim, heads=1, max_len=n, causal=causal, chunk=32).eval()
    x = torch.randn(2, n, head_dim)
    with torch.no_grad():
        got, want = perf(x).double(), _float64_reference(perf, x, causal)
    err = ((got - want).norm() / want.norm()).item()
    assert err < 1e-4, err


@pytest.mark.parametrize("t", [0, 20, 31, 32, 50])
def test_causal_prefix_exactly_independent_of_later_tokens(t):
    """Output at i reads no token > i at all, not even through the stabiliser: huge later
    tokens (whose logits would dominate any shift taken over the sequence or the chunk)
    leave every earlier output bit for bit the same."""
    torch.manual_seed(0)
    n = 70
    perf = af.build("mixer", "performer", dim=128, heads=2, max_len=n, causal=True, chunk=16).eval()
    x = torch.randn(2, n, 128)
    later = x.clone()
    later[:, t + 1:] = torch.randn_like(later[:, t + 1:]) * 30
    with torch.no_grad():
        assert torch.equal(perf(x)[:, :t + 1], perf(later)[:, :t + 1])


@pytest.mark.parametrize("causal", [False, True])
def test_large_inputs_and_masks_stay_finite_and_exact(causal):
    """Large |k| makes every logit very negative; the shift never goes below log(floor), so
    the scaled floor cannot overflow (the old non-causal path gave nan here). Left and right
    padding check that masked keys stay out of the shift and of the sums."""
    torch.manual_seed(0)
    n = 40
    perf = af.build("mixer", "performer", dim=64, heads=2, max_len=n, causal=causal, chunk=16).eval()
    x = torch.randn(2, n, 64) * 20
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[0, :7] = False
    mask[1, 29:] = False
    with torch.no_grad():
        for m in (None, mask):
            got, want = perf(x, m).double(), _float64_reference(perf, x, causal, m)
            keep = slice(None) if m is None else m
            assert torch.isfinite(got).all()
            assert ((got - want)[keep].norm() / want[keep].norm()) < 1e-4


def test_a_block_shared_across_depth_may_redraw_between_its_layers():
    # Found by the fuzz campaign: the in-place redraw modified a projection the previous
    # layer's backward still needed (RuntimeError: ... modified by an inplace operation).
    model = af.create("gpt", dim=32, heads=2, depth=3, max_len=8, schedule={"share": 1},
                      mixer={"name": "performer", "features": 8, "redraw": 1})
    mixer = model.stack.blocks[0].mixer
    before = mixer.projection.clone()
    model.train()
    model(torch.randint(0, 256, (2, 8))).sum().backward()
    assert not torch.equal(mixer.projection, before)
    assert "stack.blocks.0.sublayers.0.fn.projection" in model.state_dict()
