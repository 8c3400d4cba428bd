"""Token filtering once, before the first layer ("Predicting Token Impact Towards Efficient
Vision Transformer", Wang et al. 2023): a small MLP scores every input token by the loss
increase masking it is predicted to cause, and only the tokens that matter go on.

`TokenFilter` is the module AnyFormer applies to its input tokens (after input positions,
so each kept token carries its own); `check_parts` is the build-time check that every
part after it can take a subset of the tokens, read from the parts' declared capability
`accepts_token_subset` (and `reads_first_token` for heads that read position 0, which need
a prefix token such as [CLS], always kept)."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from anyformer import registry
from anyformer.errors import ConfigError


class TokenFilter(nn.Module):
    """Keep the tokens an MLP scores highest (Wang et al. 2023, arXiv 2305.14840).
    forward(tokens [B, L, D], mask Bool[B, L] | None) -> (kept [B, P + K, D], kept mask
    Bool[B, P + K] | None). The first `prefix` tokens ([CLS]) are always kept; of the
    others (the real ones, under a mask), `keep` keeps the top ceil(keep * n) of each
    sample's n, `threshold` those scored >= threshold (at least the top one). Kept tokens
    stay in their original order. K is the most any sample keeps; a sample keeping fewer is
    padded (mask False), and the mask is None when no sample is padded. keep = 1 returns
    the inputs themselves. `score(tokens)` [B, L] is the MLP's output: the predicted loss
    increase when the token is masked, in the loss's units (compress/token_filter.py trains it)."""

    paper = "Predicting Token Impact Towards Efficient Vision Transformer (Wang et al. 2023)"

    def __init__(self, dim: int, keep: float | None = None, threshold: float | None = None,
                 hidden: int = 64, prefix: int = 0) -> None:
        super().__init__()
        if (keep is None) == (threshold is None):
            raise ConfigError("model.token_filter: give keep (share of tokens kept) or threshold (least predicted loss increase), one of them")
        if keep is not None and not 0.0 < keep <= 1.0:
            raise ConfigError(f"model.token_filter.keep must be in (0, 1] (the share of tokens kept), got {keep!r}")
        self.keep, self.threshold, self.prefix = keep, threshold, int(prefix)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    @property
    def identity(self) -> bool:
        """True when every token is kept (keep = 1): forward returns its inputs."""
        return self.keep is not None and self.keep >= 1.0

    def score(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, L, D] -> the predicted importance of each [B, L]."""
        return self.net(tokens).squeeze(-1)

    def counts(self, scores: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        """How many of each sample's candidate tokens to keep [B] (scores [B, N], real
        Bool[B, N] | None); every sample with a real token keeps at least one."""
        n = real.sum(1) if real is not None else torch.full(scores.shape[:1], scores.shape[1], device=scores.device)
        if self.keep is not None:
            # The epsilon keeps a product such as 0.3 * 10 = 3.0000000000000004 from rounding up.
            k = torch.ceil(n.double() * self.keep - 1e-9).long()
        else:
            above = scores >= self.threshold
            k = (above & real).sum(1) if real is not None else above.sum(1)
        return torch.minimum(k.clamp_min(1), n)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.identity:
            return tokens, mask
        P = self.prefix
        body = tokens[:, P:]
        N = body.shape[1]
        real = mask[:, P:] if mask is not None else None
        scores = self.score(body).float()
        if real is not None:  # padding is never kept before a real token
            scores = scores.masked_fill(~real, float("-inf"))
        k = self.counts(scores, real)
        if real is None and self.keep is not None:
            K = min(N, max(1, math.ceil(N * self.keep - 1e-9)))  # from the shape alone: no sync, traceable
        else:
            K = int(k.max()) if k.numel() else 0
        # Rank by score (ties: the earlier token first), keep each sample's top k, then
        # put the kept ones back in their original order.
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(N, device=order.device).expand_as(order))
        chosen = rank < k[:, None]
        position = torch.arange(N, device=tokens.device).expand_as(chosen)
        index = torch.where(chosen, position, position + N).sort(dim=1).values[:, :K] % N
        kept = body.gather(1, index[..., None].expand(-1, -1, body.shape[-1]))
        slots = torch.arange(K, device=tokens.device)[None] < k[:, None]  # [B, K]
        if mask is None and (self.keep is not None or bool(slots.all())):  # keep alone: every sample keeps K
            kept_mask = None
        else:
            kept_mask = slots if real is None else slots & real.gather(1, index)
            kept_mask = torch.cat([mask[:, :P] if mask is not None else kept_mask.new_ones(kept_mask.shape[0], P), kept_mask], 1)
        return torch.cat([tokens[:, :P], kept], 1), kept_mask


def _name(module: nn.Module) -> str:
    return getattr(module, "registry_name", None) or getattr(module, "name", None) or type(module).__name__


def _able(kind: str) -> str:
    return ", ".join(n for n in registry.list_components(kind) if getattr(registry.get(kind, n), "accepts_token_subset", False) is True)


def check_parts(position: nn.Module, mixers: Iterable[nn.Module], transitions: Iterable[nn.Module],
                head: nn.Module, prefix: int, threshold: bool) -> None:
    """Refuse, in one line, a model whose parts after the filter cannot take a subset of
    its tokens: each declares `accepts_token_subset` (absent: it cannot). A head that reads
    the first token needs a prefix token there; a per-sample count (threshold) pads with a
    mask, so every mixer must honour one."""
    where = "model.token_filter"
    if not getattr(position, "accepts_token_subset", False):
        raise ConfigError(f"{where}: position {_name(position)!r} acts inside the mixers by each token's index in the "
                          f"sequence, which filtering changes; use a position added to the input ({_able('position')}) or drop model.token_filter")
    for mixer in mixers:
        if not getattr(mixer, "accepts_token_subset", False):
            raise ConfigError(f"{where}: mixer {_name(mixer)!r} cannot take a subset of the tokens (it depends on their count, "
                              f"index or grid); use a mixer that can ({_able('mixer')}) or drop model.token_filter")
        if threshold and not getattr(mixer, "supports_mask", True):
            raise ConfigError(f"{where}.threshold keeps a different number of tokens per sample, padded under a mask that "
                              f"mixer {_name(mixer)!r} cannot honour; use model.token_filter.keep instead")
    for transition in transitions:
        if not getattr(transition, "accepts_token_subset", False):
            raise ConfigError(f"{where}: transition {_name(transition)!r} between layers needs the full token sequence; "
                              "drop model.schedule.transition or model.token_filter")
    if not getattr(head, "accepts_token_subset", False):
        raise ConfigError(f"{where}: head {_name(head)!r} needs every token (a fixed count, or an output per position); "
                          "use a pooling head (cls, mean, attention) or drop model.token_filter")
    if getattr(head, "reads_first_token", False) and prefix < 1:
        raise ConfigError(f"{where}: head {_name(head)!r} reads the first token, which filtering may drop without a "
                          "[CLS] token; set the encoder's cls_token: true or use head 'mean'")
