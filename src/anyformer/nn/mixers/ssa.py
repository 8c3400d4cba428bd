"""Stochastically subsampled self-attention: random key subsets in training, and in each
sub-model of a model's eval-time self-ensemble."""
from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field

from anyformer.nn.mixers.base import AttentionMixer, allowed_pairs
from anyformer.nn.ranges import Count
from anyformer.registry import register


# Each sub-model of the eval ensemble is a whole forward pass: past 1000 an evaluation costs
# more than the training it checks (the paper averages a handful).
EvalSamples = Annotated[int, Field(ge=0, le=1000, description="sub-models the eval-time self-ensemble averages (0: none)")]


def ensemble_seed(eval_seed: int, index: int, layer: int) -> int:
    """The seed of sub-model `index`'s draws in member `layer`. Folded to 32 bits, since
    torch's CPU generator ignores a seed's higher bits; distinct for every (index, layer)
    with both below 2^16."""
    return ((eval_seed * 65537 + index) * 65537 + layer) % 2**32


@register("mixer", "ssa")
class SubsampledSelfAttention(AttentionMixer):
    """Stochastically subsampled self-attention, SSA (Hossain et al. 2023). x: [B, L, D] -> [B, L, D].

    In training each sequence keeps a random subset of round(keep * L) keys (drawn anew per
    sequence and call; each query also keeps itself) and all queries attend only to it:
    a random sub-network of the attention's information pathways. In evaluation it is full
    softmax attention, except inside a model's self-ensemble (nn/ensemble.py): with
    `eval_samples: n > 0` the model runs n whole sub-models, in each of which every SSA
    layer draws its own subset, and averages the model's outputs (the paper's ensemble is
    over whole sub-models, not per layer). Draws come from a generator seeded from
    (eval_seed, pass, layer), so evaluation stays deterministic."""

    complexity = "L^2"
    paper = "The Information Pathways Hypothesis: Transformers are Dynamic Self-Ensembles (Hossain et al. 2023)"
    accepts_token_subset = True  # a set operation over the tokens: a filtered subset is fine
    supports_kv_heads = True  # k/v repeated to the query heads by qkv()
    stochastic_in_training = True

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, bias: bool = True,
                 keep: Annotated[float, Field(gt=0.0, le=1.0, description="share of the keys each sequence keeps in training")] = 0.5,
                 eval_samples: EvalSamples = 0, eval_seed: int = 0,
                 kv_heads: Count | None = None) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias, kv_heads=kv_heads)
        self.keep, self.eval_samples, self.eval_seed = keep, eval_samples, eval_seed
        self.member_seed: int | None = None  # set by the model for one ensemble pass
        self._generator: torch.Generator | None = None

    def ensemble_samples(self) -> int:
        """Sub-models the model should average in eval; with keep = 1 every sub-model is the
        full model, so there is nothing to average."""
        return self.eval_samples if self.keep < 1.0 else 0

    def set_ensemble_member(self, index: int | None, layer: int) -> None:
        """Act as sub-model `index` of the model's ensemble (None: full attention again)."""
        self.member_seed = None if index is None else ensemble_seed(self.eval_seed, index, layer)
        self._generator = None

    def sample_keys(self, batch: int, length: int, device: torch.device,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Bool [B, L]: a uniformly random subset of round(keep * L) keys per sequence."""
        n = max(1, round(self.keep * length))
        noise = torch.rand(batch, length, generator=generator, device=device)
        chosen = noise.argsort(dim=-1)[:, :n]
        keys = torch.zeros(batch, length, dtype=torch.bool, device=device)
        return keys.scatter_(1, chosen, True)

    def attend(self, q, k, v, mask, keys: torch.Tensor | None) -> torch.Tensor:
        """Softmax attention over the allowed keys; `keys` Bool [B, L] restricts them."""
        L = q.shape[2]
        if keys is not None:
            mask = keys if mask is None else keys & mask
        allowed = allowed_pairs(L, mask, self.causal, q.device)
        bias = self.score_bias(L, q.dtype)
        if allowed is None and bias is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        attn_mask = allowed if bias is None else bias[None]
        if bias is not None and allowed is not None:
            attn_mask = attn_mask.masked_fill(~allowed, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        B, L, _ = x.shape
        q, k, v = self.qkv(x)
        if self.training and self.keep < 1.0:
            out = self.attend(q, k, v, mask, self.sample_keys(B, L, x.device))
        elif not self.training and self.member_seed is not None:
            if self._generator is None:  # made at first use, on the input's device; a layer
                # run several times in one pass (shared across depth) draws anew each time
                self._generator = torch.Generator(device=x.device).manual_seed(self.member_seed)
            out = self.attend(q, k, v, mask, self.sample_keys(B, L, x.device, self._generator))
        else:
            out = self.attend(q, k, v, mask, None)
        return self.o_proj(self.merge(out))
