"""ProbSparse attention against softmax (all queries active) and its own definition."""
import math

import pytest
import torch

import anyformer as af
from anyformer.nn.mixers.probsparse import EVAL_SEED, online_top, top_count

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


def _causal_index(length, samples):
    # Query i's keys, drawn among 0..i as the eval-mode mixer draws them.
    gen = torch.Generator().manual_seed(EVAL_SEED)
    uniform = torch.rand(length, samples, generator=gen, dtype=torch.float64)
    return (uniform * torch.arange(1, length + 1, dtype=torch.float64)[:, None]).long()


def test_causal_score_divides_by_the_key_count_as_the_reference():
    _, prob = _pair(True, factor=1)
    u = top_count(1, L)
    x = torch.randn(2, L, D)
    q, k, _ = _heads(prob, x)
    index = _causal_index(L, u)
    assert all(index[i].max() <= i for i in range(L))
    s = torch.stack([(q[:, :, i, None, :] * k[:, :, index[i]]).sum(-1) for i in range(L)], dim=2)
    want = s.max(-1).values - s.sum(-1) / L  # L_K = L for every query, not i + 1
    assert torch.allclose(prob.sparsity(q, k, None, u), want, atol=1e-5)


def test_causal_activates_exactly_u_queries_at_the_informer_decoder_length():
    # Informer's decoder: label 48 + horizon 96 = 144 steps, factor 5 -> u = 5 * ceil(ln 144) = 25.
    n = 144
    prob = af.build("mixer", "probsparse", dim=D, heads=H, max_len=n, causal=True, factor=5).eval()
    soft = af.build("mixer", "softmax", dim=D, heads=H, max_len=n, causal=True).eval()
    soft.load_state_dict(prob.state_dict())
    u = top_count(5, n)
    assert u == 25
    x = torch.randn(3, n, D)
    q, k, v = _heads(prob, x)
    with torch.no_grad():
        active = prob.select_active(prob.sparsity(q, k, None, u), u)
        assert (active.sum(-1) == u).all()  # the rule before this budget activated 57 to 94
        scores = (q @ k.transpose(-1, -2) / math.sqrt(D // H)).masked_fill(
            ~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
        # Lazy queries: the running sum of V (the reference's V.cumsum), not its mean.
        want = torch.where(active[..., None], scores.softmax(-1) @ v, v.cumsum(2))
        want = prob.o_proj(want.transpose(1, 2).reshape(3, n, D))
        assert torch.allclose(prob(x), want, atol=1e-4)


def test_online_selection_on_hand_made_scores():
    rising = torch.arange(10.0)
    # Every query out-ranks the earlier ones; the pace ceil(3 (i + 1) / 10) spreads the picks.
    assert online_top(rising, 3).nonzero().flatten().tolist() == [0, 3, 6]
    # Only the first is ever a candidate; the last two fill the budget.
    assert online_top(-rising, 3).nonzero().flatten().tolist() == [0, 8, 9]
    padded = torch.tensor([3.0, 1.0, 2.0, 5.0, 4.0, float("-inf"), float("-inf")])
    assert online_top(padded, 9).tolist() == [True] * 5 + [False] * 2  # min(u, real) of them
    torch.manual_seed(0)
    m = torch.randn(64, 144)
    active = online_top(m, 25)
    assert (active.sum(-1) == 25).all()
    for t in (0, 30, 71, 120):  # each decision reads the scores up to itself only
        m2 = m.clone()
        m2[:, t + 1:] = torch.randn(64, 143 - t) * 3
        assert torch.equal(online_top(m2, 25)[:, :t + 1], active[:, :t + 1])


def _reference_causal(q, k, v, factor, index):
    """Informer2020 ProbAttention with mask_flag: keys sampled from the whole sequence and a
    global top-u, the rest cumsum(V)."""
    B, Hs, n, Dh = q.shape
    u = top_count(factor, n)
    s = (q[:, :, :, None, :] * k[:, :, index]).sum(-1)
    top = (s.max(-1).values - s.sum(-1) / n).topk(u, dim=-1).indices
    q_top = torch.gather(q, 2, top[..., None].expand(-1, -1, -1, Dh))
    scores = (q_top @ k.transpose(-1, -2) / math.sqrt(Dh)).masked_fill(
        torch.arange(n)[None, None, None, :] > top[..., None], float("-inf"))
    return v.cumsum(2).scatter(2, top[..., None].expand(-1, -1, -1, Dh), scores.softmax(-1) @ v)


def test_causal_outputs_never_read_later_tokens_where_the_reference_selection_does():
    n, t = 144, 71
    prob = af.build("mixer", "probsparse", dim=D, heads=H, max_len=n, causal=True, factor=5).eval()
    torch.manual_seed(1)
    x = torch.randn(2, n, D)
    x2 = x.clone()
    x2[:, t + 1:] = torch.randn(2, n - t - 1, D)
    with torch.no_grad():
        y, y2 = prob(x), prob(x2)
        assert torch.allclose(y[:, :t + 1], y2[:, :t + 1], atol=1e-6)
        assert not torch.allclose(y[:, t + 1:], y2[:, t + 1:], atol=1e-3)
        # The reference on the same q, k, v: its global top-u picks other queries <= t.
        index = torch.randint(n, (n, top_count(5, n)), generator=torch.Generator().manual_seed(0))
        r, r2 = _reference_causal(*_heads(prob, x), 5, index), _reference_causal(*_heads(prob, x2), 5, index)
        assert not torch.allclose(r[:, :, :t + 1], r2[:, :, :t + 1], atol=1e-3)


def test_eval_is_deterministic_training_samples_afresh():
    _, prob = _pair(False, factor=1)
    x = torch.randn(2, L, D)
    assert torch.equal(prob(x), prob(x))
    prob.train()
    outs = [prob(x) for _ in range(6)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])
