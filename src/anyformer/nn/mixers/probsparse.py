"""Informer's ProbSparse self-attention: full attention for the few 'active' queries."""
from __future__ import annotations

import math

import torch

from anyformer.nn.mixers.base import AttentionMixer
from anyformer.nn.ranges import Count
from anyformer.registry import register

# Eval-mode key sampling uses its own generator with this seed, so a trained model answers
# the same input the same way every time (training samples from torch's global generator).
EVAL_SEED = 0
# Rows per block when the causal selection ranks each score among the earlier ones: bounds
# the [B, H, rows, L] comparison in memory.
RANK_BLOCK = 128


def top_count(factor: int, length: int) -> int:
    """u = c * ceil(ln L), capped at L: the number of sampled keys and of active queries."""
    return min(length, factor * math.ceil(math.log(max(length, 1))) if length > 1 else 1)


def earlier_greater(m: torch.Tensor) -> torch.Tensor:
    """[..., L] -> [..., L]: how many of m_0 .. m_{i-1} are strictly greater than m_i."""
    L = m.shape[-1]
    pos = torch.arange(L, device=m.device)
    rank = torch.zeros(m.shape, dtype=torch.long, device=m.device)
    for start in range(0, L, RANK_BLOCK):
        rows = pos[start:start + RANK_BLOCK]
        earlier = pos[None, :] < rows[:, None]  # [rows, L]
        rank[..., rows] = ((m[..., None, :] > m[..., rows, None]) & earlier).sum(-1)
    return rank


def online_top(m: torch.Tensor, u: int) -> torch.Tensor:
    """Bool [..., L]: exactly b = min(u, n) of the n real entries (m > -inf), each decided
    from m_0 .. m_i alone. Entry i is a candidate when it ranks within the top b / n
    fraction of the real entries so far; a candidate is taken unless the pace is spent
    (at most ceil(b (r + 1) / n) taken among the first r + 1 real entries, so a score that
    grows along the sequence cannot spend the budget at its start); once as many real
    entries remain as budget is left, all of them are taken."""
    real = m > float("-inf")
    n = real.sum(-1, keepdim=True)
    budget = n.clamp_max(u)
    seen = real.cumsum(-1) - real.long()  # real entries before i
    candidate = real & (earlier_greater(m) * n < budget * (seen + 1))
    pace = torch.where(real, (budget * (seen + 1) + n - 1) // n.clamp_min(1), 0).cummax(-1).values
    # taken_{i+1} = min(taken_i + candidate_i, pace_i) from taken_0 = 0, in closed form:
    # taken_i - C_i = min(0, min_{j<i} (pace_j - C_{j+1})), C the exclusive candidate count.
    counts = candidate.long().cumsum(-1)  # C_{i+1}
    after = counts + (pace - counts).cummin(-1).values.clamp_max(0)  # taken_{i+1}
    taken = torch.nn.functional.pad(after[..., :-1], (1, 0))  # taken_i
    # From the first i where the rest just fill the budget on, every real entry is taken
    # (the counts up to it are those of the paced rule, so the total is the budget).
    fill = (real & (n - seen <= budget - taken)).cumsum(-1) > 0
    return torch.where(fill, real, after > taken)


@register("mixer", "probsparse")
class ProbSparseAttention(AttentionMixer):
    """ProbSparse self-attention of Informer (Zhou et al. 2021, AAAI). x: [B, L, D] -> [B, L, D].

    Follows zhouhaoyi/Informer2020 models/attn.py (ProbAttention): U = factor * ceil(ln L)
    keys (capped at L) are sampled per query, with replacement and shared by batch and
    heads, for the sparsity score M_i = max_j s_ij - sum_j s_ij / L_K over the samples
    (s = q k^T; the sum divided by the key count L_K, as the reference); u = factor *
    ceil(ln L) queries (capped at L) get full softmax attention (scale 1 / sqrt(Dh)), and
    the other ('lazy') queries output mean(V), or, causal, cumsum(V) up to their position:
    the running sum, not a mean, as the reference's V.cumsum. Non-causal, the active
    queries are the global top-u of M, as the reference. With u >= L every query is active
    and this is softmax attention.

    Causal, the difference: the reference samples keys from the whole sequence and takes a
    global top-u, so whether query i is active (softmax over keys <= i) or lazy (cumsum(V)
    up to i) depends on later tokens: its values never read the future, its selection
    does. Measured on a port of it (L = 144, factor 5, Gaussian q, k, v, one head of 16):
    redrawing the tokens after t = 71 changed the outputs at <= t in 100 of 100 trials,
    flipping 10.5 of the 72 queries <= t between active and lazy on average. To stay
    strictly causal, query i samples keys among 0 .. i only, and the u queries are chosen
    online (`online_top`): i is a candidate when its M ranks within the top u / L fraction
    of M_0 .. M_i; a candidate is taken unless ceil(u (i + 1) / L) are already taken (a
    pace, because M grows along the sequence while the prefix of sampled keys widens:
    unpaced, 9.6 of the 25 picks fell in the first sixth of the sequence and 0.14 in the
    last); the last queries are taken once exactly as many remain as budget is left. So
    exactly u queries are active (the reference's cost) and nothing at position i depends
    on the tokens after i (it depends on L, through u, as the reference). At L = 144 the
    picks spread evenly (3.9 to 5.0 per sixth) and 17.1 of them are among the global
    top-u of the same M. The ranking compares L^2 / 2 scalars (no Dh factor), RANK_BLOCK
    rows at a time.

    Padding mask (the reference has none): masked keys are left out of the samples'
    score, the attention and mean(V) / cumsum(V), and L_K, L count real tokens only;
    padded queries are never active causal and never preferred to real ones otherwise.
    Sampling uses the global generator in training and a fixed-seed one in eval, so eval
    is deterministic (the reference always draws afresh)."""

    complexity = "L log L"
    subquadratic = True
    paper = "Informer: Beyond Efficient Transformer for Long Sequence Time-Series Forecasting (Zhou et al. 2021)"
    supports_kv_heads = True  # k/v repeated to the query heads by qkv()
    supported_positions = frozenset({"rotary"})
    stochastic_in_training = True

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, bias: bool = True,
                 factor: Count = 5,
                 kv_heads: Count | None = None) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias, kv_heads=kv_heads)
        self.factor = factor

    def _sample_index(self, length: int, samples: int, device: torch.device) -> torch.Tensor:
        """[L_Q, u] key indices sampled with replacement, shared by batch and heads; causal,
        query i samples among keys 0..i only (the reference samples among all keys)."""
        gen = None if self.training else torch.Generator().manual_seed(EVAL_SEED)
        if not self.causal:
            return torch.randint(length, (length, samples), generator=gen).to(device)
        span = torch.arange(1, length + 1, dtype=torch.float64)[:, None]
        uniform = torch.rand(length, samples, generator=gen, dtype=torch.float64)
        return (uniform * span).long().clamp_max(span.long() - 1).to(device)

    def sparsity(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None,
                 samples: int) -> torch.Tensor:
        """Sampled max-mean measurement M [B, H, L]; -inf for padded queries."""
        B, H, L, Dh = q.shape
        index = self._sample_index(L, samples, q.device)
        s = torch.einsum("bhld,bhlud->bhlu", q, k[:, :, index])  # k[:, :, index]: [B, H, L, u, Dh]
        if mask is None:
            return s.amax(-1) - s.sum(-1) / L
        real = mask[:, index][:, None]  # [B, 1, L, u]
        keys = mask.sum(-1).clamp_min(1).to(s.dtype)[:, None, None]  # L_K: the real keys
        top = s.masked_fill(~real, float("-inf")).amax(-1)
        mean = s.masked_fill(~real, 0.0).sum(-1) / keys
        # A real query whose samples all fell on padding gets the lowest finite score; padded
        # queries rank below every real one.
        m = torch.where(real.any(-1), top - mean, torch.finfo(s.dtype).min / 2)
        return m.masked_fill(~mask[:, None, :], float("-inf"))

    def select_active(self, m: torch.Tensor, u: int) -> torch.Tensor:
        """Bool [B, H, L]: the queries that get full attention. Non-causal: the top-u of M
        (the reference); causal: `online_top`, u queries each decided from M_0 .. M_i."""
        if self.causal:
            return online_top(m, u)
        top = m.topk(u, dim=-1, sorted=False).indices
        return torch.zeros_like(m, dtype=torch.bool).scatter(-1, top, True)

    def lazy_output(self, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """What a lazy query outputs: mean(V), causal cumsum(V). [B, H, L, Dh]."""
        if mask is not None:
            v = v * mask[:, None, :, None].to(v.dtype)
        if self.causal:
            return v.cumsum(dim=2)
        if mask is None:
            return v.mean(dim=2, keepdim=True).expand_as(v)
        n_real = mask.sum(-1).to(v.dtype)[:, None, None, None]
        return (v.sum(dim=2, keepdim=True) / n_real).expand_as(v)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        B, L, _ = x.shape
        q, k, v = self.qkv(x)
        Dh = self.head_dim
        u = top_count(self.factor, L)
        if u >= L:
            active = torch.ones(B, self.heads, L, dtype=torch.bool, device=x.device)
        else:
            active = self.select_active(self.sparsity(q, k, mask, u), u)
        # The active queries first (stable order), as many slots as the busiest (b, h) needs.
        n = int(active.sum(-1).max())
        order = torch.argsort(active.to(torch.int8), dim=-1, descending=True, stable=True)[..., :n]
        used = torch.gather(active, -1, order)  # [B, H, n]: False = a padding slot
        q_top = torch.gather(q, 2, order[..., None].expand(-1, -1, -1, Dh))
        scores = q_top @ k.transpose(-1, -2) / math.sqrt(Dh)  # [B, H, n, L]
        keys = torch.arange(L, device=x.device)
        allowed = torch.ones_like(scores, dtype=torch.bool)
        if self.causal:
            allowed = keys[None, None, None, :] <= order[..., None]
        if mask is not None:
            # A padded query may attend itself, so no row is empty (its output is unread).
            allowed = allowed & (mask[:, None, None, :] | (keys[None, None, None, :] == order[..., None]))
        scores = scores.masked_fill(~allowed, float("-inf"))
        top_out = scores.softmax(-1) @ v  # [B, H, n, Dh]
        lazy = self.lazy_output(v, mask)
        index = order[..., None].expand_as(top_out)
        top_out = torch.where(used[..., None], top_out, torch.gather(lazy, 2, index))
        out = lazy.scatter(2, index, top_out)
        return self.o_proj(self.merge(out))
