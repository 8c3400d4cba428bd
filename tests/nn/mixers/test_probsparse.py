"""ProbSparse attention against softmax (all queries active) and its own definition."""
import math

import pytest
import torch

import anyformer as af
from anyformer.nn.mixers.probsparse import EVAL_SEED, top_count

from ..helpers import padding_mask

D, H, L = 32, 4, 16


def _pair(causal, factor):
    soft = af.build("mixer", "softmax", dim=D, heads=H, max_len=L, causal=causal).eval()
    prob = af.build("mixer", "probsparse", dim=D, heads=H, max_len=L, causal=causal, factor=factor).eval()
    prob.load_state_dict(soft.state_dict())
    return soft, prob


@pytest.mark.parametrize("causal", [False, True])
def test_all_queries_active_equals_softmax(causal):
    soft, prob = _pair(causal, factor=10)
    assert top_count(10, L) >= L
    x = torch.randn(2, L, D)
    assert torch.allclose(prob(x), soft(x), atol=1e-5)
    mask = padding_mask()
    assert torch.allclose(prob(x, mask)[mask], soft(x, mask)[mask], atol=1e-5)


def _heads(m, x):
    B, n, _ = x.shape
    split = lambda t: t.view(B, n, H, -1).transpose(1, 2)  # noqa: E731
    return split(m.q_proj(x)), split(m.k_proj(x)), split(m.v_proj(x))


def test_noncausal_top_queries_attend_lazy_queries_get_mean_value():
    _, prob = _pair(False, factor=1)
    u = top_count(1, L)
    assert u == math.ceil(math.log(L)) < L
    x = torch.randn(2, L, D)
    q, k, v = _heads(prob, x)
    # The measurement on the same sampled keys the eval-mode mixer draws.
    index = torch.randint(L, (L, u), generator=torch.Generator().manual_seed(EVAL_SEED))
    s = torch.stack([(q[:, :, i, None, :] * k[:, :, index[i]]).sum(-1) for i in range(L)], dim=2)
    M = s.max(-1).values - s.sum(-1) / L
    top = M.topk(u, dim=-1).indices
    full = (q @ k.transpose(-1, -2) / math.sqrt(D // H)).softmax(-1) @ v
    want = v.mean(2, keepdim=True).expand_as(v).clone()
    for b in range(2):
        for h in range(H):
            want[b, h, top[b, h]] = full[b, h, top[b, h]]
    want = prob.o_proj(want.transpose(1, 2).reshape(2, L, D))
    assert torch.allclose(prob(x), want, atol=1e-5)


def test_causal_lazy_queries_get_cumulative_sum_and_actives_are_causal_full_attention():
    _, prob = _pair(True, factor=1)
    x = torch.randn(2, L, D)
    q, k, v = _heads(prob, x)
    with torch.no_grad():
        u = top_count(1, L)
        active = prob.select_active(prob.sparsity(q, k, None, u), u)
    assert active[..., :u].all() and not active.all()
    # Query i is active iff its M is among the u largest of M_0..M_i.
    M = prob.sparsity(q, k, None, u)
    for i in range(u, L):
        kth = M[..., : i + 1].topk(u, dim=-1).values[..., -1]
        assert torch.equal(active[..., i], M[..., i] >= kth)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(D // H)).masked_fill(~torch.ones(L, L, dtype=torch.bool).tril(), float("-inf"))
    full = scores.softmax(-1) @ v
    want = torch.where(active[..., None], full, v.cumsum(2))
    want = prob.o_proj(want.transpose(1, 2).reshape(2, L, D))
    assert torch.allclose(prob(x), want, atol=1e-5)


def test_eval_is_deterministic_training_samples_afresh():
    _, prob = _pair(False, factor=1)
    x = torch.randn(2, L, D)
    assert torch.equal(prob(x), prob(x))
    prob.train()
    outs = [prob(x) for _ in range(6)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])
