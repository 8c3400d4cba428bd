"""What components report besides their output during training: auxiliary losses (MoE load
balancing, router z-loss) that the loop adds to the task's, and expert usage it logs."""
from __future__ import annotations

import torch
from torch import nn


class AuxLosses:
    """Collects the auxiliary losses components expose (MoE balancing, router z-loss) from
    every call in training: a block shared across depth runs several times per forward,
    and each call's loss counts, not only the last one's."""

    def __init__(self, model: nn.Module) -> None:
        self.terms: list[torch.Tensor] = []
        for m in model.modules():
            if isinstance(getattr(m, "aux_loss", None), torch.Tensor):
                m.register_forward_hook(self._collect)

    def _collect(self, module: nn.Module, inputs, output) -> None:
        if module.training and isinstance(module.aux_loss, torch.Tensor):
            self.terms.append(module.aux_loss)

    def pop(self) -> torch.Tensor | float:
        total: torch.Tensor | float = sum(self.terms) if self.terms else 0.0
        self.terms = []
        return total


def expert_usage(model: nn.Module) -> dict[str, list[float]]:
    out = {}
    for name, m in model.named_modules():
        usage = getattr(m, "expert_usage", None)
        if isinstance(usage, torch.Tensor):
            out[name] = [round(float(u), 4) for u in usage]
    return out
