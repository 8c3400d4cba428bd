"""Informer's self-attention distilling between encoder layers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.errors import ShapeError
from anyformer.nn.norms.batchnorm import require_batch_statistics
from anyformer.registry import register


@register("transition", "distill")
class DistillingTransition(nn.Module):
    """Self-attention distilling (Zhou et al. 2021, Informer): Conv1d(kernel 3, circular
    padding) -> BatchNorm -> ELU -> MaxPool1d(kernel 3, stride 2, padding 1), halving the
    length between layers. x: [B, L, D] -> [B, ceil(L / 2), D].

    A mask is pooled the same way (an output step is real when any step of its window is);
    padded steps are zeroed before the convolution, but the circular wrap and the batch
    statistics still see them, so distilling is meant for pad-free series, as in Informer."""

    paper = "Informer: Beyond Efficient Transformer for Long Sequence Time-Series Forecasting (Zhou et al. 2021)"
    supports_decoding = False  # it pools over the whole sequence

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.conv = nn.Conv1d(dim, dim, kernel_size=3, padding=1, padding_mode="circular")
        self.norm = nn.BatchNorm1d(dim)
        self.act = nn.ELU()
        self.pool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

    @staticmethod
    def out_length(length: int) -> int:
        """floor((L + 2 - 3) / 2) + 1 = ceil(L / 2), the max-pool's output length."""
        return (length - 1) // 2 + 1

    @staticmethod
    def out_grid(grid: tuple[int, int] | None) -> None:
        """Pooling runs along the sequence, so no 2-D grid survives it."""
        return None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ShapeError(f"transition 'distill' expects [batch, length, {self.dim}], got {list(x.shape)}")
        require_batch_statistics(x.shape[0] * x.shape[1], "transition 'distill'", self.training)
        h = x.transpose(1, 2)
        if mask is not None:
            h = h * mask[:, None, :].to(h.dtype)
        h = self.pool(self.act(self.norm(self.conv(h))))
        if mask is not None:
            mask = F.max_pool1d(mask[:, None].to(x.dtype), 3, 2, 1)[:, 0] > 0
        return h.transpose(1, 2), mask
