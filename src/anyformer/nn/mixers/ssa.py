"""Stochastically subsampled self-attention: random key subsets in training only."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from anyformer.errors import ConfigError
from anyformer.nn.mixers.base import AttentionMixer, allowed_pairs
from anyformer.registry import register


@register("mixer", "ssa")
class SubsampledSelfAttention(AttentionMixer):
    """Stochastically subsampled self-attention, SSA (Hossain et al. 2023). x: [B, L, D] -> [B, L, D].

    In training each sequence keeps a random subset of round(keep * L) keys (drawn anew per
    sequence and call; each query also keeps itself) and all queries attend only to it:
    a random sub-network of the attention's information pathways. In evaluation it is full
    softmax attention; `eval_samples: n > 0` instead averages n subsampled outputs (the
    paper's ensemble inference), drawn from a fixed seed so evaluation stays deterministic."""

    complexity = "L^2"
    paper = "The Information Pathways Hypothesis: Transformers are Dynamic Self-Ensembles (Hossain et al. 2023)"
    stochastic_in_training = True

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, bias: bool = True,
                 keep: float = 0.5, eval_samples: int = 0, eval_seed: int = 0) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias)
        if not 0.0 < keep <= 1.0:
            raise ConfigError(f"mixer 'ssa': keep must be in (0, 1], got {keep}")
        if eval_samples < 0:
            raise ConfigError(f"mixer 'ssa': eval_samples must be >= 0, got {eval_samples}")
        self.keep, self.eval_samples, self.eval_seed = keep, eval_samples, eval_seed

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
        elif not self.training and self.eval_samples > 0:
            gen = torch.Generator(device=x.device).manual_seed(self.eval_seed)
            out = sum(self.attend(q, k, v, mask, self.sample_keys(B, L, x.device, gen))
                      for _ in range(self.eval_samples)) / self.eval_samples
        else:
            out = self.attend(q, k, v, mask, None)
        return self.o_proj(self.merge(out))
