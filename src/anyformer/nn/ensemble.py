"""Self-ensembling at inference: in eval mode a model averages its output over n whole
sub-models, each drawn anew in every layer that declares the capability (SSA's attention
subsampling; Hossain et al. 2023, "an ensemble of sub-models ... formed from the
subsampled pathways within a network").

A component takes part by declaring two methods (found by duck typing, never by class):
  `ensemble_samples() -> int`: sub-models it asks the model to average in eval (0: none);
  `set_ensemble_member(index: int | None, layer: int)`: act as sub-model `index` (a
  deterministic draw from its own seed, this pass index and its position `layer` among the
  model's members) until called with None, which restores the full component."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

Forward = TypeVar("Forward", bound=Callable[..., Any])


def ensemble_members(model: nn.Module) -> list[nn.Module]:
    """The model's modules that declare the capability, each once, in `modules()` order:
    a fixed order, so a member's `layer` (its place among those asking) and with it its
    draws are the same on every call."""
    return [m for m in model.modules() if callable(getattr(m, "ensemble_samples", None))]


def ensemble_size(model: nn.Module) -> int:
    """Sub-models `model` averages in eval: the most any member asks for (0: no ensemble)."""
    return max((m.ensemble_samples() for m in ensemble_members(model)), default=0)


def self_ensembled(forward: Forward) -> Forward:
    """Wrap a model's `forward(x, mask=None, return_hidden=False, **kw)` so that in eval mode,
    with n = ensemble_size(model) > 0, it runs the whole model n times (pass i: every member
    set to sub-model i) and returns the mean of the n outputs: the paper's ensemble of whole
    sub-models, averaging their predictions. The mean is taken on what the model returns:
    values for regression and forecast heads, logits for classification and LM heads (a
    mean of probabilities would need the task's output function, which nn does not know).
    The hidden states returned with `return_hidden` are the first sub-model's. Training
    mode, and n = 0, call `forward` once, unchanged; auxiliary losses (MoE) are read in
    training only, so the extra eval passes leave them alone."""

    @functools.wraps(forward)
    def run(model: nn.Module, x: Any, mask: torch.Tensor | None = None,
            return_hidden: bool = False, **kwargs: Any) -> Any:
        # Only members asking for sub-models draw them: a layer with eval_samples 0 stays full.
        members = [] if model.training else [m for m in ensemble_members(model) if m.ensemble_samples() > 0]
        n = max((m.ensemble_samples() for m in members), default=0)
        # A wrapped forward calling another (a subclass's super().forward) runs inside the
        # outer pass, as one sub-model, rather than nesting n ensembles in each pass.
        if n == 0 or getattr(model, "_ensemble_pass", None) is not None:
            return forward(model, x, mask, return_hidden, **kwargs)
        try:
            for i in range(n):
                model._ensemble_pass = i
                for layer, m in enumerate(members):
                    m.set_ensemble_member(i, layer)
                out, states = forward(model, x, mask, True, **kwargs)
                total, hidden = (out, states) if i == 0 else (total + out, hidden)
        finally:
            model._ensemble_pass = None
            for layer, m in enumerate(members):
                m.set_ensemble_member(None, layer)
        out = total / n
        return (out, hidden) if return_hidden else out

    return run  # type: ignore[return-value]
