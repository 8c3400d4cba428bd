"""SeqBoat: the damped EMA against its recurrence; all gates on equals EMA path + GAU, all
off equals the EMA path; mixed gates equal a GAU run on each row's activated tokens; causal
prefix independence; the reference's (truncated normal) init."""
import math

import pytest
import torch
import torch.nn.functional as F

import anyformer as af
from anyformer.errors import ConfigError
from anyformer.nn.mixers.seqboat import DampedEMA

from ..helpers import padding_mask

D, L = 32, 16


def _seqboat(max_len=L, **opts):
    """A float64 SeqBoat whose GAU output is O(1): at the reference init (weights and gamma
    ~ N(0, 0.02)) it is ~1e-8, below the tolerances that would tell variants apart."""
    opts = {"qk_dim": 16, "ema_dim": 4, **opts}
    m = af.build("mixer", "seqboat", dim=D, heads=4, max_len=max_len, **opts).double()
    with torch.no_grad():
        for linear in (m.gau.uv_proj, m.gau.z_proj, m.gau.o_proj):
            linear.weight.normal_(0.0, linear.in_features ** -0.5)
            linear.bias.normal_(0.0, 0.1)
        m.gau.gamma.normal_(0.0, 1.0)
        m.gau.beta.normal_(0.0, 0.5)
    return m


def _ema_recurrence(ema, x, lo, hi, reverse=False):
    """y_t = sum_n gamma_n h_t[n] / sqrt(N), h_t = p beta x_t + q h_{t-1}, kernels lo:hi."""
    p = torch.sigmoid(ema.delta[lo:hi])
    q = 1 - p * torch.sigmoid(ema.alpha[lo:hi])
    seq = x.flip(1) if reverse else x
    h = torch.zeros(x.shape[0], hi - lo, ema.ndim, dtype=x.dtype)
    out = []
    for t in range(x.shape[1]):
        h = p * ema.beta[lo:hi] * seq[:, t, :, None] + q * h
        out.append((h * ema.gamma[lo:hi]).sum(-1) / math.sqrt(ema.ndim))
    out = torch.stack(out, 1)
    return out.flip(1) if reverse else out


@pytest.mark.parametrize("bidirectional", [False, True])
def test_ema_matches_recurrence(bidirectional):
    ema = DampedEMA(D, ndim=4, bidirectional=bidirectional).double()
    x = torch.randn(2, L, D, dtype=torch.float64)
    want = _ema_recurrence(ema, x, 0, D) + ema.omega * x
    if bidirectional:
        want = want + _ema_recurrence(ema, x, D, 2 * D, reverse=True)
    assert torch.allclose(ema(x), want, atol=1e-10)


def _force_gates(m, on):
    with torch.no_grad():
        m.router.weight.zero_()
        m.router.bias.copy_(torch.tensor([-100.0, 100.0] if on else [100.0, -100.0]))


@pytest.mark.parametrize("causal,scores", [(True, "relu2"), (False, "relu2"), (False, "softmax")])
def test_all_gates_on_is_ema_path_plus_gau(causal, scores):
    # Window = L: local attention covers every pair. relu2 scores are still divided by the
    # reference's fixed window (2 * window when not causal), not by the GAU's per-query count.
    m = _seqboat(causal=causal, scores=scores, window=L)
    _force_gates(m, on=True)
    x = torch.randn(2, L, D, dtype=torch.float64)
    mem = F.silu(m.ema(x))
    gau = m.gau(mem) if scores == "softmax" else m.gau.gated(mem, None, None, float(L if causal else 2 * L))
    want = m.ema_out(mem) + gau
    assert (gau - m.gau.o_proj.bias).abs().max() > 1e-2  # the GAU part is not negligible
    assert torch.allclose(m(x), want, atol=1e-10)


def test_all_gates_off_is_the_ema_path():
    m = _seqboat(causal=True)
    _force_gates(m, on=False)
    x = torch.randn(2, L, D, dtype=torch.float64)
    assert torch.allclose(m(x), m.ema_out(F.silu(m.ema(x))), atol=1e-12)


@pytest.mark.parametrize("causal", [True, False])
def test_mixed_gates_run_a_local_gau_on_the_activated_tokens(causal):
    torch.manual_seed(0)
    m = _seqboat(causal=causal, window=2)
    with torch.no_grad():
        m.router.weight.normal_(0, 1.0)
    x = torch.randn(2, L, D, dtype=torch.float64)
    mask = padding_mask()
    mem = F.silu(m.ema(x, mask))
    probs = (m.router(mem) / m.log_temperature.exp()).softmax(-1)
    want = m.ema_out(mem)
    total = 0
    for b in range(2):
        idx = [t for t in range(L) if mask[b, t] and probs[b, t, 1] > probs[b, t, 0]]
        total += len(idx)
        if not idx:
            continue
        pos = torch.arange(len(idx))
        window = ((pos[:, None] - pos[None]).abs() <= 2)[None]
        h = m.gau.gated(mem[b:b + 1, idx], None, window, 2.0 if causal else 4.0)[0]
        want[b, idx] += h * probs[b, idx, 1:]
    got = m(x, mask)
    assert 0 < total < int(mask.sum())  # some tokens skip the GAU, some use it
    assert (got - m.ema_out(mem))[mask].abs().max() > 1e-3  # the GAU part is not negligible
    assert torch.allclose(got[mask], want[mask], atol=1e-10)


def test_causal_output_does_not_depend_on_how_many_tokens_follow():
    torch.manual_seed(0)
    m = _seqboat(max_len=64, causal=True, window=2)
    with torch.no_grad():
        m.router.weight.normal_(0, 1.0)
    x = torch.randn(2, 64, D, dtype=torch.float64)
    with torch.no_grad():
        y64, y8, y1 = m(x), m(x[:, :8]), m(x[:, :1])
    assert torch.allclose(y8, y64[:, :8], rtol=0, atol=1e-12)
    assert torch.allclose(y1, y64[:, :1], rtol=0, atol=1e-12)


def test_init_follows_the_reference():
    # SeqBoatUnit.reset_parameters: N(0, 0.02) cut at 2 std (std 0.02 * 0.88 after the cut)
    # for the GAU's gamma and every projection, biases and beta 0.
    torch.manual_seed(0)
    m = af.build("mixer", "seqboat", dim=128, heads=4, max_len=L, qk_dim=1024, ema_dim=16)
    gamma = m.gau.gamma
    assert gamma.mean().abs() < 0.003 and 0.016 < gamma.std() < 0.0195
    assert gamma.abs().max() <= 0.04 and torch.equal(m.gau.beta, torch.zeros_like(m.gau.beta))
    for linear in (m.router, m.ema_out, m.gau.uv_proj, m.gau.z_proj, m.gau.o_proj):
        assert linear.weight.abs().max() <= 0.04 and 0.016 < linear.weight.std() < 0.0195
        assert torch.equal(linear.bias, torch.zeros_like(linear.bias))
    ema = m.ema  # exponential_moving_average.py, reset_parameters_trunc
    sign = torch.tensor([1.0, -1.0] * 8)
    assert (ema.beta - sign).abs().max() <= 0.04
    assert ema.delta.abs().max() <= 0.4 and ema.alpha.abs().max() <= 0.4
    assert ema.gamma.abs().max() <= 2.0 and ema.omega.abs().max() <= 2.0


def test_build_errors():
    with pytest.raises(ConfigError, match="window"):
        _seqboat(window=0)
    with pytest.raises(ConfigError, match="did you mean 'softmax'"):
        _seqboat(scores="softmx")
