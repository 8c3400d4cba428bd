"""Informer's ProbSparse self-attention: full attention for the few 'active' queries."""
from __future__ import annotations

import math

import torch

from anyformer.errors import ConfigError
from anyformer.nn.mixers.base import AttentionMixer
from anyformer.registry import register

# Eval-mode key sampling uses its own generator with this seed, so a trained model answers
# the same input the same way every time (training samples from torch's global generator).
EVAL_SEED = 0


def top_count(factor: int, length: int) -> int:
    """u = c * ceil(ln L), capped at L: the number of sampled keys and of active queries."""
    return min(length, factor * math.ceil(math.log(max(length, 1))) if length > 1 else 1)


@register("mixer", "probsparse")
class ProbSparseAttention(AttentionMixer):
    """ProbSparse self-attention (Zhou et al. 2021, Informer). x: [B, L, D] -> [B, L, D].

    u = factor * ceil(ln L) keys are sampled per query to estimate the sparsity measurement
    M(q_i, K) = max_j s_ij - sum_j s_ij / L_K over the sampled j (s = q k^T; the mean's
    divisor L_K as in the reference code); the top-u queries get full softmax attention
    and the other ('lazy') queries output mean(V), or, causal, the cumulative sum of V up
    to their position (as the reference), with the causal mask on the active queries.
    With u >= L every query is active and this is softmax attention. Causal, query i
    samples keys among 0..i and is active when its M is among the u largest of queries
    0..i (a global top-u would let future queries decide; see `select_active`).

    Padding mask: masked keys are left out of the sampled measurement, the attention and
    mean(V) / cumsum(V); padded queries are never preferred to real ones. Sampling uses
    the global generator in training and a fixed-seed one in eval (deterministic)."""

    complexity = "L log L"
    subquadratic = True
    paper = "Informer: Beyond Efficient Transformer for Long Sequence Time-Series Forecasting (Zhou et al. 2021)"
    supported_positions = frozenset({"rotary"})
    stochastic_in_training = True

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, bias: bool = True,
                 factor: int = 5) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias)
        if factor < 1:
            raise ConfigError(f"mixer 'probsparse': factor must be >= 1, got {factor}")
        self.factor = factor

    def _sample_index(self, length: int, samples: int, device: torch.device) -> torch.Tensor:
        """[L_Q, u] key indices sampled with replacement, shared by batch and heads; causal,
        query i samples among keys 0..i only."""
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
        # L_K of the reference: the keys a query may see (causal: those up to itself).
        if mask is None:
            seen = torch.arange(1, L + 1, device=q.device) if self.causal else torch.full((L,), L, device=q.device)
            return s.amax(-1) - s.sum(-1) / seen.to(s.dtype)
        real = mask[:, index][:, None]  # [B, 1, L, u]
        seen = mask.cumsum(-1) if self.causal else mask.sum(-1, keepdim=True).expand_as(mask)
        top = s.masked_fill(~real, float("-inf")).amax(-1)
        mean = s.masked_fill(~real, 0.0).sum(-1) / seen.clamp_min(1).to(s.dtype)[:, None]
        # A real query whose samples all fell on padding gets the lowest finite score; padded
        # queries rank below every real one.
        m = torch.where(real.any(-1), top - mean, torch.finfo(s.dtype).min / 2)
        return m.masked_fill(~mask[:, None, :], float("-inf"))

    def select_active(self, m: torch.Tensor, u: int) -> torch.Tensor:
        """Bool [B, H, L]: the queries that get full attention.

        Non-causal: the top-u of M (the paper). Causal: a top-u over the whole sequence
        would let a future query's score decide whether an earlier one is active, so a
        query is active when its M is among the u largest of the queries up to itself
        (the first u always are); about u (1 + ln(L / u)) queries for scores in random
        order."""
        L = m.shape[-1]
        if not self.causal:
            top = m.topk(u, dim=-1, sorted=False).indices
            return torch.zeros_like(m, dtype=torch.bool).scatter(-1, top, True)
        active = torch.zeros_like(m, dtype=torch.bool)
        active[..., :u] = True
        pos = torch.arange(L, device=m.device)
        for start in range(u, L, 128):  # row blocks bound the [.., rows, L] memory
            rows = pos[start:start + 128]
            prefix = m[..., None, :].expand(*m.shape[:-1], len(rows), L)
            prefix = prefix.masked_fill(pos[None, :] > rows[:, None], float("-inf"))
            threshold = prefix.topk(u, dim=-1).values[..., -1]
            active[..., rows] = m[..., rows] >= threshold
        return active

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
