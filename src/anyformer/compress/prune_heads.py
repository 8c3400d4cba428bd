"""Attention-head importance and choice for structured pruning ("Are Sixteen Heads Really
Better than One?", Michel et al. 2019). A head's importance is how much the calibration
loss rises when that head alone is masked: its slice of the input of the mixer's
`heads_output()` linear (o_proj) zeroed, exactly what removing it does. This is the
paper's ablation measured directly, one forward pass over the calibration batches per head,
rather than its first-order estimate |dL/d mask_h|: the estimate is zero for every head of
a run judged by closeness to its own unpruned outputs (1 - cosine is at its minimum there),
so it could not rank heads for a run with no task. Increases are in the loss's own units,
so one ranking across layers (`--heads-fraction`) is meaningful."""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from anyformer import registry
from anyformer.compress.data import Judged
from anyformer.errors import ConfigError
from anyformer.tasks.evaluation import model_kwargs


class Objective:
    """The calibration loss: the task's loss on its targets, or for a run with no task
    1 - cosine of the outputs to the unpruned model's (per example, flattened), the measure
    such a run is judged by. The reference outputs are taken when this is built."""

    def __init__(self, model: nn.Module, data: Judged, device: torch.device) -> None:
        self.task = data.task
        self.batches = [batch.to(device) for batch in data.calibration]
        if not self.batches:
            raise ConfigError("pruning needs calibration batches; the data gave none (give --data with more examples)")
        self.reference: list[torch.Tensor] | None = None
        if self.task is None:
            model.eval()
            with torch.no_grad():
                self.reference = [self.output(model, i).float() for i in range(len(self.batches))]

    def output(self, model: nn.Module, i: int) -> torch.Tensor:
        batch = self.batches[i]
        return model(batch.inputs, **model_kwargs(batch))

    def batch_loss(self, model: nn.Module, i: int) -> torch.Tensor:
        """Scalar loss of calibration batch i (with gradients when enabled)."""
        out = self.output(model, i)
        if self.reference is None:
            return self.task.loss(out, self.batches[i].target)
        return 1.0 - F.cosine_similarity(out.float().flatten(1), self.reference[i].flatten(1), dim=-1).mean()

    @torch.no_grad()
    def mean(self, model: nn.Module) -> float:
        """The loss averaged over the calibration batches, in eval mode."""
        model.eval()
        return sum(float(self.batch_loss(model, i)) for i in range(len(self.batches))) / len(self.batches)


@contextmanager
def scaled_input(linear: nn.Linear, scale: torch.Tensor) -> Iterator[None]:
    """Inside: `linear` reads its input times `scale` [in_features] (0 masks a column)."""
    handle = linear.register_forward_pre_hook(lambda module, args: (args[0] * scale.to(args[0].dtype), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


def head_scale(mixer: nn.Module, masked: list[int]) -> torch.Tensor:
    """[heads * head_dim] ones with zeros at the columns of heads `masked`."""
    scale = torch.ones(mixer.heads, mixer.head_dim, device=mixer.heads_output().weight.device)
    scale[masked] = 0.0
    return scale.flatten()


def prunable_mixers() -> str:
    return ", ".join(n for n in registry.list_components("mixer") if getattr(registry.get("mixer", n), "prunable_heads", False))


def head_units(stack: nn.Module, active: dict[int, list[int]]) -> dict[int, nn.Module]:
    """Distinct block -> its mixer, for the blocks (with a running mixer, in `active`) whose
    mixer can lose heads; a ConfigError when none can, or when one cannot be pruned exactly
    (grouped-query attention, ALiBi's per-head slopes shared by every layer)."""
    units, refused = {}, []
    for b, layers in active.items():
        mixer = stack.blocks[b].part("mixer")
        if not getattr(mixer, "prunable_heads", False):
            refused.append(f"{getattr(mixer, 'name', type(mixer).__name__)!r} (layers {layers})")
            continue
        if mixer.kv_heads != mixer.heads:
            raise ConfigError(f"--heads: layers {layers} use grouped-query attention (kv_heads {mixer.kv_heads} < heads {mixer.heads}); "
                              "head pruning supports multi-head attention only (kv_heads == heads)")
        if mixer.position is not None and mixer.position.applies_to == "bias":
            raise ConfigError("--heads: the model's ALiBi slopes are one per head of model.heads, shared by every layer, "
                              "so a layer cannot lose heads; prune models with rotary, learned or sinusoidal positions")
        units[b] = mixer
    if not units:
        raise ConfigError(f"--heads: no layer's mixer can lose heads (mixers {', '.join(refused) or 'none running'}); "
                          f"mixers that can: {prunable_mixers()}")
    return units


@torch.no_grad()
def head_importance(units: dict[int, nn.Module], model: nn.Module, objective: Objective) -> tuple[float, dict[int, list[float]]]:
    """(the calibration loss of the whole model, block -> each head's loss increase when masked)."""
    base = objective.mean(model)
    scores: dict[int, list[float]] = {}
    for b, mixer in units.items():
        scores[b] = []
        for h in range(mixer.heads):
            with scaled_input(mixer.heads_output(), head_scale(mixer, [h])):
                scores[b].append(objective.mean(model) - base)
    return base, scores


def _check_heads(heads: object) -> int:
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ConfigError(f"--heads must be an integer >= 1 (heads pruned in each layer), got {heads!r}")
    return heads


def choose_heads(scores: dict[int, list[float]], heads: int | None, fraction: float | None,
                 layers: dict[int, list[int]]) -> dict[int, list[int]]:
    """Block -> the heads to prune, least important first: `heads` of each layer, or the
    least important `fraction` of all heads (each layer keeps at least one)."""
    if heads is not None:
        heads = _check_heads(heads)
        least = min(len(s) for s in scores.values())
        if heads >= least:
            full = [layers[b] for b, s in scores.items() if len(s) <= heads]
            valid = f"give --heads in 1..{least - 1}" if least > 1 else "a layer with one head cannot lose it"
            raise ConfigError(f"--heads {heads} prunes every head of layers {full} (they have {least}); {valid}")
        return {b: sorted(range(len(s)), key=lambda h: (s[h], h))[:heads] for b, s in scores.items()}
    total, units = sum(len(s) for s in scores.values()), len(scores)
    k = math.floor(fraction * total + 1e-9)
    if k < 1:
        raise ConfigError(f"--heads-fraction {fraction} prunes 0 of the {total} heads; give --heads-fraction in [{1 / total:.4g}, 1)")
    if k > total - units:
        raise ConfigError(f"--heads-fraction {fraction} prunes {k} of the {total} heads, but each of the {units} layers keeps one; "
                          f"give --heads-fraction in (0, {(total - units) / total:.4g}]")
    ranked = sorted(((s[h], b, h) for b, s in scores.items() for h in range(len(s))))
    chosen: dict[int, list[int]] = {b: [] for b in scores}
    for _, b, h in ranked:
        if sum(map(len, chosen.values())) == k:
            break
        if len(chosen[b]) < len(scores[b]) - 1:  # the last head of a layer stays
            chosen[b].append(h)
    return chosen
