"""DIN's own layers: the Dice activation and the local activation unit."""
from __future__ import annotations

import torch
from torch import nn


class Dice(nn.Module):
    """Dice (Zhou et al. 2018, eq. 5): f(s) = p(s) s + (1 - p(s)) alpha s with
    p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps)), the mean and variance of the mini-batch
    in training and their running averages in eval (a BatchNorm without affine), alpha
    learned per feature (0 at first). s: [B, F] -> [B, F]."""

    paper = "Deep Interest Network for Click-Through Rate Prediction (Zhou et al. 2018)"

    def __init__(self, features: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(features, eps=eps, affine=False)
        self.alpha = nn.Parameter(torch.zeros(features))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.norm(s))
        return p * s + (1 - p) * self.alpha * s


class LocalActivationUnit(nn.Module):
    """DIN's local activation unit (Zhou et al. 2018, sec. 4.3, eq. 3): each behaviour e_j
    [B, L, D] weighted by a(e_j, v_a) = MLP([e_j, v_a, e_j - v_a, e_j * v_a]) with the
    candidate v_a [B, D] (sigmoid hidden layers, as the authors' code), then summed -> the
    user's interest in this candidate [B, D]. The weights are not normalised: the paper keeps
    their sum as the intensity of the interest (`normalize`: a softmax over the real
    behaviours instead, as the released code does). Padded behaviours (mask False) weigh 0."""

    paper = "Deep Interest Network for Click-Through Rate Prediction (Zhou et al. 2018)"

    def __init__(self, dim: int, hidden: list[int], normalize: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 4 * dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Sigmoid()]
            width = h
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))
        self.normalize = normalize

    def weights(self, history: torch.Tensor, candidate: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each behaviour's activation weight [B, L] (0 at padding)."""
        v = candidate[:, None].expand_as(history)
        score = self.mlp(torch.cat([history, v, history - v, history * v], -1))[..., 0]
        if self.normalize:
            # A history of padding only gets weights 0, not a softmax over nothing (NaN).
            return torch.softmax(score.masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0) * mask
        return score * mask

    def forward(self, history: torch.Tensor, candidate: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.weights(history, candidate, mask)[..., None] * history).sum(1)
