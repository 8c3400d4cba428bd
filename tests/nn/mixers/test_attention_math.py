"""softmax, local and linear attention against their formulas, computed directly."""
import math

import pytest
import torch

import anyformer as af
from anyformer.nn.mixers.linear import (
    causal_linear_attention_chunked,
    causal_linear_attention_cumsum,
    causal_linear_attention_recurrent,
)

from ..helpers import padding_mask

D, H, L = 32, 4, 16


def _heads(mixer, x):
    B = x.shape[0]
    split = lambda t: t.view(B, -1, H, D // H).transpose(1, 2)  # noqa: E731
    return split(mixer.q_proj(x)), split(mixer.k_proj(x)), split(mixer.v_proj(x))


def _merge(mixer, out):
    B, _, Lq, _ = out.shape
    return mixer.o_proj(out.transpose(1, 2).reshape(B, Lq, D))


def reference_softmax(mixer, x, mask=None, causal=False, bias=None):
    q, k, v = _heads(mixer, x)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D // H)
    if bias is not None:
        scores = scores + bias
    allowed = torch.ones(L, L, dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    allowed = allowed[None, None].expand(x.shape[0], 1, L, L)
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    return _merge(mixer, scores.softmax(-1) @ v)


@pytest.mark.parametrize("causal", [False, True])
def test_softmax_equals_direct_computation(causal):
    m = af.build("mixer", "softmax", dim=D, heads=H, max_len=L, causal=causal).eval()
    x = torch.randn(2, L, D)
    assert torch.allclose(m(x), reference_softmax(m, x, causal=causal), atol=1e-5)
    mask = padding_mask()
    got, want = m(x, mask), reference_softmax(m, x, mask=mask, causal=causal)
    assert torch.allclose(got[mask], want[mask], atol=1e-5)


def test_softmax_with_alibi_and_rotary_matches_reference():
    x = torch.randn(2, L, D)
    m = af.build("mixer", "softmax", dim=D, heads=H, max_len=L).eval()
    alibi = af.build("position", "alibi", heads=H)
    m.set_position(alibi)
    assert torch.allclose(m(x), reference_softmax(m, x, bias=alibi(L)), atol=1e-5)
    # Rotary: the score between i and j depends on i - j only; shifting both keeps it.
    rot = af.build("position", "rotary", dim=D, heads=H, num_tokens=2 * L)
    q = torch.randn(1, H, 1, D // H).expand(1, H, 2 * L, D // H)
    qr, kr = rot(q, q)
    s = qr @ kr.transpose(-1, -2)
    assert torch.allclose(s[..., 3, 1], s[..., 7, 5], atol=1e-4)
    assert not torch.allclose(s[..., 3, 1], s[..., 3, 2], atol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [L, 3 * L])
def test_local_with_window_covering_sequence_equals_softmax(causal, window):
    soft = af.build("mixer", "softmax", dim=D, heads=H, max_len=L, causal=causal).eval()
    local = af.build("mixer", "local", dim=D, heads=H, max_len=L, causal=causal, window=window).eval()
    local.load_state_dict(soft.state_dict())  # shared projection names
    x = torch.randn(2, L, D)
    mask = padding_mask()
    assert torch.allclose(local(x), soft(x), atol=1e-5)
    assert torch.allclose(local(x, mask)[mask], soft(x, mask)[mask], atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_local_blocked_path_matches_window_reference(causal):
    window, length = 3, 20  # 20 > 3 * window: the blocked path runs
    m = af.build("mixer", "local", dim=D, heads=H, max_len=length, causal=causal, window=window,
                 distance_penalty=0.3).eval()
    x = torch.randn(2, length, D)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, 15:] = False
    q, k, v = _heads(m, x)
    i = torch.arange(length)
    dist = i[:, None] - i[None, :]
    inside = dist.abs() < window
    if causal:
        inside &= dist >= 0
    scores = q @ k.transpose(-1, -2) / math.sqrt(D // H) - 0.3 * dist.abs()
    allowed = inside[None, None] & mask[:, None, None, :]
    want = _merge(m, scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v)
    got = m(x, mask)
    assert torch.allclose(got[mask], want[mask], atol=1e-5)


def _phi(t):
    return torch.nn.functional.elu(t) + 1


@pytest.mark.parametrize("causal", [False, True])
def test_linear_matches_katharopoulos_formula(causal):
    m = af.build("mixer", "linear", dim=D, heads=H, max_len=L, causal=causal, chunk=5).eval()
    x = torch.randn(2, L, D)
    mask = padding_mask()
    q, k, v = _heads(m, x)
    q, k = _phi(q), _phi(k) * mask[:, None, :, None]
    out = torch.zeros_like(v)
    for i in range(L):
        upto = i + 1 if causal else L
        S = torch.einsum("bhjd,bhje->bhde", k[:, :, :upto], v[:, :, :upto])
        z = k[:, :, :upto].sum(2)
        num = torch.einsum("bhd,bhde->bhe", q[:, :, i], S)
        den = (q[:, :, i] * z).sum(-1, keepdim=True)
        out[:, :, i] = num / (den + m.eps)
    want = _merge(m, out)
    got = m(x, mask)
    assert torch.allclose(got[mask], want[mask], atol=1e-5)


@pytest.mark.parametrize("length,chunk", [(1, 4), (13, 4), (16, 16), (33, 8)])
def test_causal_linear_forms_agree(length, chunk):
    q, k = (_phi(torch.randn(2, 3, length, 8)) for _ in range(2))
    v = torch.randn(2, 3, length, 5)
    rec = causal_linear_attention_recurrent(q, k, v, 1e-6)
    assert torch.allclose(causal_linear_attention_cumsum(q, k, v, 1e-6), rec, atol=1e-5)
    assert torch.allclose(causal_linear_attention_chunked(q, k, v, 1e-6, chunk), rec, atol=1e-5)


def test_a_chunk_longer_than_the_input_is_not_padding_to_allocate():
    # A chunk of 10^12 positions padded a 5-step input to 10^12 steps (an allocation
    # failure); the chunk now stops at the input length, with the same values.
    q, k = (_phi(torch.randn(1, 2, 5, 4)) for _ in range(2))
    v = torch.randn(1, 2, 5, 3)
    rec = causal_linear_attention_recurrent(q, k, v, 1e-6)
    assert torch.allclose(causal_linear_attention_chunked(q, k, v, 1e-6, 10 ** 12), rec, atol=1e-5)
    for name in ("linear", "performer", "sla"):
        m = af.build("mixer", name, dim=D, heads=H, max_len=L, causal=True, chunk=10 ** 12).eval()
        assert torch.isfinite(m(torch.randn(1, L, D))).all()


def test_linear_relu_feature_map_option():
    m = af.build("mixer", "linear", dim=D, heads=H, max_len=L, feature_map="relu").eval()
    assert m(torch.randn(1, L, D)).shape == (1, L, D)
    with pytest.raises(af.ConfigError, match="did you mean 'elu'"):
        af.build("mixer", "linear", dim=D, heads=H, max_len=L, feature_map="elus")
