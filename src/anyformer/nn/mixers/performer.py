"""Performer: FAVOR+ attention with positive orthogonal random features."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from anyformer.nn.mixers.base import AttentionMixer, refuse_padded_decoding
from anyformer.nn.mixers.linear import linear_attention
from anyformer.nn.ranges import Count, Epsilon, NonNegativeInt
from anyformer.registry import register

MAX_FEATURE_BYTES = 16 * 2**20

# Added to every feature so that none is exactly zero (the reference's numerical stabiliser).
FEATURE_FLOOR = 1e-6
# Key shifts never go below log(floor): the shifted floor floor * exp(-s) then stays <= 1, so
# it cannot overflow when every logit is very negative (large |k|) or every key is masked.
LOG_FEATURE_FLOOR = math.log(FEATURE_FLOOR)


def orthogonal_gaussian_projection(features: int, head_dim: int,
                                   generator: torch.Generator | None = None) -> torch.Tensor:
    """[features, head_dim] rows w_r ~ N(0, I) made exactly orthogonal within each block of
    head_dim rows (QR of a Gaussian matrix), each row rescaled to the norm of an independent
    Gaussian vector so its marginal stays N(0, I) (Choromanski et al. 2021, section 2.4)."""
    # All blocks in one batched draw and QR (the same draws as one block after another): a
    # Python loop over blocks ran for ever on a huge `features` before any size guard saw it.
    gaussian = torch.randn(-(-features // head_dim), head_dim, head_dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    # Sign fix makes Q Haar-distributed (QR alone is not unique up to signs).
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    rows = q.transpose(-1, -2).reshape(-1, head_dim)[:features]
    norms = torch.randn(features, head_dim, generator=generator, dtype=torch.float64).norm(dim=1)
    return (rows * norms[:, None]).float()


def feature_logits(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """w_r^T x - |x|^2 / 2 for every random feature r. x: [B, H, L, Dh] -> [B, H, L, m]."""
    wx = torch.einsum("bhld,md->bhlm", x, projection)
    return wx - x.square().sum(-1, keepdim=True) / 2


def positive_random_features(logits: torch.Tensor, shift: torch.Tensor,
                             floor_shifted: bool = False) -> torch.Tensor:
    """phi(x) = (exp(w^T x - |x|^2 / 2) + floor) / sqrt(m), computed as exp(logits - shift):
    positive random features whose inner products estimate exp(q^T k) without bias.
    `floor_shifted` scales the floor with the shift too, so the result is exactly
    exp(-shift) times the unshifted features; otherwise the floor is added after shifting
    (the reference's form for queries, where a per-query factor cancels anyway)."""
    floor = FEATURE_FLOOR * torch.exp(-shift) if floor_shifted else FEATURE_FLOOR
    return (torch.exp(logits - shift) + floor) / math.sqrt(logits.shape[-1])


def causal_key_shift(logits: torch.Tensor, mask: torch.Tensor | None,
                     start: torch.Tensor | None = None) -> torch.Tensor:
    """t_j = max(log floor, max over real keys j' <= j and features r of logits[j', r]).
    logits [B, h, L, m], mask [B, L] -> [B, h, L], non-decreasing along L. It reads no key
    after j, so a shift built from it keeps causality exactly, not only up to rounding.
    `start` [B, h]: the shift after earlier tokens (decoding), the running max's seed."""
    per_key = logits.detach().amax(-1)
    if mask is not None:
        per_key = per_key.masked_fill(~mask[:, None, :], float("-inf"))
    shift = per_key.cummax(dim=-1).values.clamp_min(LOG_FEATURE_FLOOR)
    return shift if start is None else torch.maximum(shift, start[..., None])


def causal_favor_chunked(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor,
                         shift: torch.Tensor, eps: float, chunk: int) -> torch.Tensor:
    """The causal FAVOR+ outputs [B, h, L, Dv] of causal_favor_from with nothing before."""
    return causal_favor_from(phi_q, phi_k, v, shift, eps, chunk)[0]


def causal_favor_from(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor,
                      shift: torch.Tensor, eps: float, chunk: int, state=None):
    """y_i = sum_{j<=i} (phi_q_i . k_j) v_j / (sum_{j<=i} phi_q_i . k_j + eps), k_j the unshifted
    key features, given phi_k[j] = exp(-t_j) k_j with t = `shift` [B, h, L] non-decreasing.
    Query i works in units of exp(-t_i): key j is rescaled by exp(t_j - t_i) <= 1 and eps by
    exp(-t_i), so that factor cancels exactly and nothing is ever scaled up (no overflow),
    while each stored feature is relative to a shift at most its own logit max (no
    underflow of the largest terms). Chunked: a masked L_c x L_c product inside a chunk; across
    chunks a running state (S, z) kept relative to the shift at the end of the last chunk
    and rescaled by exp(T_prev - T_new) <= 1 as it is carried.
    phi_q, phi_k [B, h, L, m], v [B, h, L, Dv] -> (out [B, h, L, Dv], state after them).
    `state` (S [B, h, m, Dv], z [B, h, m], t [B, h]): the sums over earlier tokens relative
    to their last shift t (None: nothing before), the RNN form decoding runs on; `shift`
    must then start from t (causal_key_shift's `start`), so every carry stays <= 1."""
    B, H, L, m = phi_q.shape
    Dv = v.shape[-1]
    if L == 1 and state is not None:  # one decoding step: the recurrence itself
        t = shift[..., 0]
        carry = torch.exp(state[2] - t)[..., None]
        S = state[0] * carry[..., None] + phi_k.transpose(2, 3) @ v
        z = state[1] * carry + phi_k[:, :, 0]
        den = (phi_q[:, :, 0] * z).sum(-1) + eps * torch.exp(-t)
        return (phi_q @ S) / den[..., None, None], (S, z, t)
    chunk = max(1, min(chunk, L))  # a chunk past the end would only be padding to allocate
    n = -(-L // chunk)
    pad = n * chunk - L
    if pad:
        # Zero keys add nothing; the shift is padded with its last value so it stays
        # non-decreasing (every factor below stays <= 1).
        phi_q, phi_k, v = (F.pad(t, (0, 0, 0, pad)) for t in (phi_q, phi_k, v))
        shift = torch.cat([shift, shift[..., -1:].expand(B, H, pad)], dim=-1)
    qc = phi_q.view(B, H, n, chunk, m)
    kc = phi_k.view(B, H, n, chunk, m)
    vc = v.view(B, H, n, chunk, Dv)
    tc = shift.view(B, H, n, chunk)
    # Inside a chunk: decay[i, j] = exp(t_j - t_i) for j <= i. The upper triangle is set to
    # -inf before exp, since t_j - t_i > 0 there could overflow and inf * 0 would be nan.
    tri = torch.ones(chunk, chunk, dtype=torch.bool, device=phi_q.device).tril()
    diff = (tc[..., None, :] - tc[..., :, None]).masked_fill(~tri, float("-inf"))
    scores = torch.einsum("bhncd,bhnkd->bhnck", qc, kc) * torch.exp(diff)
    # Each chunk's own sums, relative to the shift at its last position.
    end = tc[..., -1]
    kc_end = kc * torch.exp(tc - end[..., None])[..., None]
    S_own = torch.einsum("bhncd,bhnce->bhnde", kc_end, vc)
    z_own = kc_end.sum(dim=3)
    # State entering chunk c, relative to ref[c] (ref[c] = end[c - 1]; ref[0] = the earlier
    # tokens' shift, or chunk 0's own first one when there are none, which keeps every
    # factor finite). A loop over chunks (not a cumsum): the carry factor changes from
    # chunk to chunk, and a cumsum of exp(end) would overflow. unbind, not S_own[:, :, c]:
    # each indexing op's backward writes a full-size zero tensor, which made the backward
    # pass quadratic in the number of chunks.
    if state is None:
        state = (S_own.new_zeros(B, H, m, Dv), z_own.new_zeros(B, H, m), tc[:, :, 0, 0])
    ends = torch.cat([state[2][..., None], end], dim=2)
    S_parts, z_parts = S_own.unbind(2), z_own.unbind(2)
    carry = torch.exp(ends[..., :-1] - ends[..., 1:]).unbind(2)  # ref[c] -> end[c], <= 1
    S_in, z_in = [state[0]], [state[1]]
    for c in range(n):
        S_in.append(S_in[-1] * carry[c][..., None, None] + S_parts[c])
        z_in.append(z_in[-1] * carry[c][..., None] + z_parts[c])
    S_prev, z_prev = torch.stack(S_in[:-1], dim=2), torch.stack(z_in[:-1], dim=2)
    # Query i of chunk c reads that state scaled from ref[c] to t_i (<= 1).
    to_query = torch.exp(ends[..., :-1, None] - tc)
    num = torch.einsum("bhnck,bhnke->bhnce", scores, vc)
    num = num + torch.einsum("bhncd,bhnde->bhnce", qc, S_prev) * to_query[..., None]
    den = scores.sum(-1) + torch.einsum("bhncd,bhnd->bhnc", qc, z_prev) * to_query
    out = num / (den + eps * torch.exp(-tc))[..., None]
    return out.reshape(B, H, n * chunk, Dv)[:, :, :L], (S_in[-1], z_in[-1], end[..., -1])


@register("mixer", "performer")
class PerformerAttention(AttentionMixer):
    """Performer FAVOR+ (Choromanski et al. 2021, Rethinking Attention with Performers). x: [B, L, D] -> [B, L, D].

    softmax(q k^T / sqrt(d)) v is estimated by linear attention on positive orthogonal
    random features of q' = q d^(-1/4), k' = k d^(-1/4):
    phi(x) = exp(w^T x - |x|^2/2) / sqrt(m), E[phi(q')^T phi(k')] = exp(q^T k / sqrt(d)).
    `features` = m random features per head (projection [m, Dh]); `redraw` draws a new
    projection every N training forward passes (0: never). Per head, q, k, v [B, h, L, Dh]
    give features [B, h, L, m]. Causal: prefix sums in chunks of `chunk` positions. Masked
    keys are removed from the sums.

    Follows google-research/google-research performer/fast_attention/{jax,tensorflow}/
    fast_attention.py (and lucidrains/performer-pytorch performer_pytorch/performer_pytorch.py)
    in the features, the projection (orthogonal blocks, chi-distributed row norms), the
    feature floor 1e-6 and the stabiliser for queries: each query's features are divided by
    their own largest value (a per-query factor cancels in the ratio).

    Differs, on purpose, in the key stabiliser. The references subtract one maximum of
    w^T k over all keys and features, future keys included even when unidirectional, and add
    the floor after the shift. Here keys share a factor exp(-s) that the floor and eps are
    scaled by too, so the output equals the unshifted formula num / (den + eps) exactly and
    does not depend on s: non-causal, s = the largest logit over the real keys; causal,
    query i uses s_i = the running maximum of the logits of real keys j <= i (never below
    log floor), so the output at i reads no later token at all. Keys are stored relative to
    their own running maximum and rescaled per query by exp(s_j - s_i) <= 1, and the state
    carried between chunks by exp(s_end_prev - s_end) <= 1, so nothing overflows and the
    largest terms never underflow (a fixed bound s = max_r |w_r|^2 / 2 made every key
    feature subnormal or zero at head_dim >= 128 in float32). Other difference: eps in the
    denominator (the references divide by the bare sum).

    Decoding keeps the recurrent state (S, z) [B, h, m, Dv], [B, h, m] relative to the
    running key shift t [B, h] of the tokens so far. Every stabiliser is per row (a query's
    own maximum) or a running maximum over the past, never one over the whole sequence, so
    a prefix's features, and so its outputs, are those of the full causal forward."""

    complexity = "L"
    subquadratic = True
    paper = "Rethinking Attention with Performers (Choromanski et al. 2021)"
    accepts_token_subset = True  # a set operation over the tokens: a filtered subset is fine
    supports_kv_heads = True  # k/v repeated to the query heads by qkv()
    supported_positions = frozenset({"rotary"})
    example_options = {"features": 16}
    stochastic_in_training = True
    supports_decoding = True  # the recurrent state (S, z) and the running key shift

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, bias: bool = True,
                 features: Count | None = None, redraw: NonNegativeInt = 1000, eps: Epsilon = 1e-6,
                 chunk: Count = 64,
                 kv_heads: Count | None = None) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias, kv_heads=kv_heads)
        if features is None:
            # The paper's m = Theta(d log d) per head (d = head dim), as its reference code
            # defaults to; a fixed 256 made short sequences several times dearer than softmax.
            features = max(8, round(self.head_dim * math.log(max(self.head_dim, 2))))
        self.features, self.redraw, self.eps, self.chunk = features, redraw, eps, chunk
        # A buffer, not a parameter: the projection is sampled, never trained, but saved with
        # the model so a reloaded model computes the same function.
        self.register_buffer("projection", orthogonal_gaussian_projection(features, self.head_dim))
        self.calls_since_redraw = 0

    @torch.no_grad()
    def redraw_projection(self) -> None:
        """Draw a fresh random projection (from torch's global generator)."""
        fresh = orthogonal_gaussian_projection(self.features, self.head_dim)
        # A new tensor, not an in-place copy: a block shared across depth (schedule.share /
        # repeat) may redraw between two of its layers, and the earlier layer's backward
        # still needs the projection it used.
        self.projection = fresh.to(self.projection)
        self.calls_since_redraw = 0

    def feature_maps(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None,
                     start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """phi(q'), phi(k') [B, h, L, m] with the stabilisers described in the class doc, and
        the key shift s (log of the factor exp(-s) that eps must be scaled by): [B, h, 1, 1]
        non-causal, [B, h, L] (one per query position) causal, continuing from the earlier
        tokens' shift `start` [B, h] when decoding."""
        scale = self.head_dim ** -0.25
        q, k = q * scale, k * scale
        w = self.projection.to(q.dtype)
        wq, wk = feature_logits(q, w), feature_logits(k, w)
        q_shift = wq.amax(-1, keepdim=True).detach()
        if self.causal:
            k_shift = causal_key_shift(wk, mask, start)
            phi_k = positive_random_features(wk, k_shift[..., None], floor_shifted=True)
        else:
            real = wk if mask is None else wk.masked_fill(~mask[:, None, :, None], float("-inf"))
            k_shift = real.amax(dim=(-1, -2), keepdim=True).detach().clamp_min(LOG_FEATURE_FLOOR)
            phi_k = positive_random_features(wk, k_shift, floor_shifted=True)
        return positive_random_features(wq, q_shift), phi_k, k_shift

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        cache = self.decode_cache() if self.causal else None
        # Never while decoding: the cached state holds features of the current projection.
        if self.training and self.redraw and cache is None:
            if self.calls_since_redraw >= self.redraw:
                self.redraw_projection()
            self.calls_since_redraw += 1
        q, k, v = self.qkv(x)
        if cache is not None:
            refuse_padded_decoding(self, mask)
        state = None if cache is None else cache.get("state")
        # Every quantity here is per head (the stabilisers and the decoding state too), so
        # heads can run in groups. Groups keep each [B, h, L, m] feature tensor under
        # MAX_FEATURE_BYTES: glibc hands allocations above its 32 MiB mmap ceiling fresh,
        # page-faulted memory on every call, which made long sequences cost more than linearly.
        per_head = q.shape[0] * q.shape[2] * self.features * q.element_size()
        group = max(1, MAX_FEATURE_BYTES // max(per_head, 1))
        outs, states = [], []
        for h in range(0, self.heads, group):
            part = slice(h, h + group)
            if cache is None:
                outs.append(self.attend(q[:, part], k[:, part], v[:, part], mask))
                continue
            out, after = self.decode(q[:, part], k[:, part], v[:, part],
                                     None if state is None else tuple(t[:, part] for t in state))
            outs.append(out)
            states.append(after)
        if cache is not None:
            cache["state"] = states[0] if len(states) == 1 else tuple(torch.cat(t, 1) for t in zip(*states))
        return self.o_proj(self.merge(outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)))

    def decode(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state):
        """New tokens' q, k, v [B, h, T, Dh] after the state of the earlier ones (None: none)
        -> (out [B, h, T, Dh], the state after them), as causal_favor_from keeps it."""
        phi_q, phi_k, k_shift = self.feature_maps(q, k, None, None if state is None else state[2])
        return causal_favor_from(phi_q, phi_k, v, k_shift, self.eps, self.chunk, state)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        """FAVOR+ on head-split q, k, v [B, h, L, Dh] (any number of heads h)."""
        phi_q, phi_k, k_shift = self.feature_maps(q, k, mask)
        if mask is not None:
            phi_k = phi_k * mask[:, None, :, None].to(phi_k.dtype)
        if self.causal:
            return causal_favor_chunked(phi_q, phi_k, v, k_shift, self.eps, self.chunk)
        return linear_attention(phi_q, phi_k, v, self.eps * torch.exp(-k_shift))
