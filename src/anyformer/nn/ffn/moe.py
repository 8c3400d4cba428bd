"""Sparse mixture-of-experts feed-forward layers (token-choice top-k routing)."""
from __future__ import annotations

import math

import torch
from torch import nn

from anyformer.errors import ConfigError
from anyformer.nn.ffn.mlp import MLP, Activation, get_activation, hidden_size
from anyformer.nn.ranges import Count, Dropout, NonNegativeFloat, PositiveFloat
from anyformer.registry import register


def router_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over experts in at least float32: the router is the numerically fragile part
    (Switch Transformer's selective precision)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(-1)


def load_balancing_loss(probs: torch.Tensor, assigned: torch.Tensor) -> torch.Tensor:
    """Switch Transformer auxiliary loss E * sum_i f_i P_i. probs [N, E] router probabilities;
    assigned [N, k] expert indices chosen per token. f_i is the share of routing assignments
    that went to expert i, P_i the mean router probability of expert i. Equals 1 when the
    router is uniform (its minimum for a balanced dispatch)."""
    experts = probs.shape[-1]
    counts = torch.zeros(experts, dtype=probs.dtype, device=probs.device)
    counts.scatter_add_(0, assigned.reshape(-1), torch.ones_like(assigned.reshape(-1), dtype=probs.dtype))
    fraction = counts / assigned.numel()
    return experts * (fraction * probs.mean(0)).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE router z-loss: mean over tokens of logsumexp(logits)^2, keeps router logits small."""
    return torch.logsumexp(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1).square().mean()


def expert_capacity(tokens: int, experts: int, top_k: int, capacity_factor: float | None) -> int:
    """Most assignments one expert takes: ceil(factor * tokens * k / experts); all when None
    (no expert can take more than all of them, so a huge factor is no limit either)."""
    if capacity_factor is None:
        return tokens * top_k
    return min(tokens * top_k, max(1, math.ceil(capacity_factor * tokens * top_k / experts)))


def keep_within_capacity(assigned: torch.Tensor, experts: int, capacity: int) -> torch.Tensor:
    """Bool [N, k]: which assignments fit into their expert's buffer. Priority follows GShard /
    Switch: every token's first choice before any second choice, then token order."""
    N, k = assigned.shape
    onehot = torch.nn.functional.one_hot(assigned.t().reshape(-1), experts)  # [k*N, E], choice-major
    position = (onehot.cumsum(0) - 1) * onehot  # slot index inside the chosen expert
    slot = position.sum(-1).view(k, N).t()
    return slot < capacity


@register("ffn", "moe")
class MixtureOfExperts(nn.Module):
    """Sparse MoE FFN with token-choice top-k routing (Shazeer et al. 2017; GShard) and
    Switch top-1 (Fedus et al. 2022, "Switch Transformers"). x: [..., D] -> [..., D].

    Each token goes to its `top_k` experts (MLPs like ffn 'mlp'), weighted by the router
    probability (renormalised over the chosen k when `renormalize`). With `capacity_factor`
    an expert takes at most ceil(factor * tokens * k / experts) assignments; the overflow
    is dropped (that expert contributes 0: the token passes through the residual only).
    After each forward: `aux_loss` = balance_weight * Switch load-balancing loss +
    z_weight * router z-loss (ST-MoE), and `expert_usage` [experts] = share of routing
    assignments per expert (sums to 1, detached)."""

    paper = "Switch Transformers: Scaling to Trillion Parameter Models with Simple and Efficient Sparsity (Fedus et al. 2022)"
    example_options = {"experts": 4, "top_k": 2, "ratio": 1.0}

    def __init__(self, dim: int, experts: Count = 8, top_k: Count = 1, capacity_factor: PositiveFloat | None = None,
                 ratio: PositiveFloat = 4.0, hidden: Count | None = None, activation: Activation = "gelu",
                 bias: bool = True, dropout: Dropout = 0.0, renormalize: bool = False,
                 balance_weight: NonNegativeFloat = 0.01, z_weight: NonNegativeFloat = 0.001) -> None:
        super().__init__()
        if not 1 <= top_k <= experts:
            raise ConfigError(f"ffn 'moe': top_k {top_k} outside the valid range 1..{experts} (experts={experts})")
        get_activation(activation, "moe")
        h = hidden_size(dim, ratio, hidden, "moe")
        self.num_experts, self.top_k, self.capacity_factor = experts, top_k, capacity_factor
        self.renormalize, self.balance_weight, self.z_weight = renormalize, balance_weight, z_weight
        self.router = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList(
            MLP(dim, hidden=h, activation=activation, bias=bias, dropout=dropout) for _ in range(experts)
        )
        self.aux_loss = torch.zeros(())
        self.expert_usage = torch.zeros(experts)

    def input_linears(self) -> list[nn.Linear]:
        """The router and every expert's input linears read x, nothing else does: an input
        affine map (a folded BatchNorm) moves into them and routing stays the same."""
        return [self.router, *(linear for expert in self.experts for linear in expert.input_linears())]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        logits = self.router(flat)
        probs = router_probabilities(logits)
        gate, assigned = probs.topk(self.top_k, dim=-1)  # [N, k]
        if self.renormalize and self.top_k > 1:
            gate = gate / gate.sum(-1, keepdim=True)
        capacity = expert_capacity(flat.shape[0], self.num_experts, self.top_k, self.capacity_factor)
        keep = keep_within_capacity(assigned, self.num_experts, capacity)
        gate = (gate * keep).to(x.dtype)

        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, choice = torch.nonzero((assigned == e) & keep, as_tuple=True)
            if token.numel():
                out.index_add_(0, token, gate[token, choice, None] * expert(flat[token]))

        self.aux_loss = (self.balance_weight * load_balancing_loss(probs, assigned)
                         + self.z_weight * router_z_loss(logits)).to(x.dtype)
        counts = torch.bincount(assigned.reshape(-1), minlength=self.num_experts)
        self.expert_usage = (counts.to(probs.dtype) / assigned.numel()).detach()
        return out.view(shape)
