"""Structured pruning: attention heads (`--heads N` per layer, or `--heads-fraction F` of
all heads ranked across layers) and FFN hidden units (`--neurons-fraction F` of each layer,
by `--neurons-criterion magnitude | activation`) are REMOVED, so the model shrinks: a
pruned head's rows of q/k/v and columns of o_proj, a pruned unit's rows of the linears
that write it and its column of the one that reads it. Head importance: prune_heads.py
(Michel et al. 2019's ablation, the loss increase when masked); unit importance:
prune_neurons.py. Every importance is taken on the unpruned model (one shot), then all
cuts are made. The new sizes go into the model config as per-layer overrides
(schedule.overrides: the mixer's `heads` with its `head_dim` kept, the ffn's `hidden`),
so catalog.create builds modules of exactly the pruned shapes. A few AdamW steps on the
calibration batches (`finetune_steps`) may follow, to recover what pruning cost."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from anyformer.compress.data import Judged
from anyformer.compress.prune_heads import Objective, choose_heads, head_importance, head_units
from anyformer.compress.prune_neurons import CRITERIA, choose_neurons, ffn_units, neuron_scores
from anyformer.config import ComponentSpec, model_config
from anyformer.errors import ConfigError, unknown

HEAD_CRITERION = "calibration loss increase when the head alone is masked (Michel et al. 2019's ablation)"


def _fraction(value: Any, option: str) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} must be a number in (0, 1), got {value!r}") from None
    if isinstance(value, bool) or not 0.0 < f < 1.0:
        raise ConfigError(f"{option} must be in (0, 1) (the share pruned), got {value!r}")
    return f


def check_options(heads: Any, heads_fraction: Any, neurons_fraction: Any, neurons_criterion: Any,
                  finetune_steps: Any, finetune_lr: Any) -> tuple[float | None, float | None]:
    """Every option checked before any work: (heads_fraction, neurons_fraction) as floats."""
    if heads is not None and heads_fraction is not None:
        raise ConfigError("give one of --heads (pruned in each layer) or --heads-fraction (pruned over the whole model), not both")
    if heads is not None and (isinstance(heads, bool) or not isinstance(heads, int) or heads < 1):
        raise ConfigError(f"--heads must be an integer >= 1 (heads pruned in each layer), got {heads!r}")
    fractions = _fraction(heads_fraction, "--heads-fraction"), _fraction(neurons_fraction, "--neurons-fraction")
    if heads is None and fractions == (None, None):
        raise ConfigError("prune needs --heads N, --heads-fraction F (0 < F < 1) and/or --neurons-fraction F (0 < F < 1)")
    if neurons_criterion not in CRITERIA:
        raise unknown("--neurons-criterion", str(neurons_criterion), CRITERIA)
    if isinstance(finetune_steps, bool) or not isinstance(finetune_steps, int) or finetune_steps < 0:
        raise ConfigError(f"--finetune-steps must be an integer >= 0, got {finetune_steps!r}")
    if isinstance(finetune_lr, bool) or not isinstance(finetune_lr, (int, float)) or not 0 < finetune_lr < 1:
        raise ConfigError(f"--finetune-lr must be a number in (0, 1), got {finetune_lr!r}")
    return fractions


def _layer_specs(config: dict[str, Any], depth: int) -> tuple[list[dict], list[dict]]:
    """Each layer's mixer and ffn spec as the stack builds it (the last override wins)."""
    cfg = model_config(copy.deepcopy(config))

    def dump(spec: ComponentSpec) -> dict[str, Any]:
        return spec.model_dump(mode="json")

    mixers, ffns = [dump(cfg.mixer)] * depth, [dump(cfg.ffn)] * depth
    for ov in cfg.schedule.overrides:
        for layer in ov.indices(depth):
            mixers[layer] = dump(ov.mixer) if ov.mixer is not None else mixers[layer]
            ffns[layer] = dump(ov.ffn) if ov.ffn is not None else ffns[layer]
    return mixers, ffns


def record(config: dict[str, Any], stack: nn.Module, heads: dict[int, nn.Module], ffns: dict[int, int]) -> dict[str, Any]:
    """The model config with an override per changed block: mixer {.., heads, head_dim} for
    the blocks in `heads` (block -> its pruned mixer), ffn {.., hidden} for those in `ffns`
    (block -> hidden size); a shared block's override lists every layer that runs it."""
    mixers, ffn_specs = _layer_specs(config, stack.depth)
    added = []
    for b in sorted(set(heads) | set(ffns)):
        layers = stack.layers_of(b)
        entry: dict[str, Any] = {"layers": layers}
        if b in heads:
            entry["mixer"] = {**mixers[layers[0]], "heads": heads[b].heads, "head_dim": heads[b].head_dim}
        if b in ffns:
            entry["ffn"] = {**ffn_specs[layers[0]], "hidden": ffns[b]}
        added.append(entry)
    new = copy.deepcopy(config)
    schedule = dict(new.get("schedule") or {})
    schedule["overrides"] = list(schedule.get("overrides") or []) + added
    new["schedule"] = schedule
    return new


def finetune(model: nn.Module, objective: Objective, steps: int, lr: float) -> dict[str, float]:
    """`steps` AdamW steps on the calibration batches in turn, on the calibration loss."""
    before = objective.mean(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    model.train()
    for step in range(steps):
        loss = objective.batch_loss(model, step % len(objective.batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    return {"steps": steps, "lr": lr, "loss_before": round(before, 6), "loss_after": round(objective.mean(model), 6)}


def _key(stack: nn.Module, b: int) -> str:
    """A block's name in the notes: the layers that run it ('1', or '0,2' when shared)."""
    return ",".join(str(layer) for layer in stack.layers_of(b))


def apply(model: nn.Module, config: dict[str, Any], data: Judged, device: torch.device,
          heads: int | None = None, heads_fraction: float | None = None, neurons_fraction: float | None = None,
          neurons_criterion: str = "magnitude", finetune_steps: int = 0,
          finetune_lr: float = 1e-4) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(the model with the least important heads and/or FFN units removed, its model
    config, notes: importances, what was pruned and kept, the calibration losses)."""
    heads_fraction, neurons_fraction = check_options(heads, heads_fraction, neurons_fraction, neurons_criterion,
                                                     finetune_steps, finetune_lr)
    stack = getattr(model, "stack", None)
    if stack is None or not hasattr(stack, "layers_of"):
        raise ConfigError(f"prune works on models with a layer stack; arch {type(model).__name__} has none")
    running = {b: [layer for layer in stack.layers_of(b) if layer not in stack.dropped] for b in range(len(stack.blocks))}
    running = {b: layers for b, layers in running.items() if layers}
    objective = Objective(model, data, device)
    notes: dict[str, Any] = {"loss": "task loss" if data.task is not None else "1 - cosine to the unpruned outputs"}

    # Scores and choices first: a bad option is refused before the model is touched.
    head_cut: dict[int, list[int]] = {}
    if heads is not None or heads_fraction is not None:
        with_mixer = {b: layers for b, layers in running.items()
                      if any("mixer" not in stack.skip.get(layer, ()) for layer in layers)}
        mixers = head_units(stack, with_mixer)
        base, scores = head_importance(mixers, model, objective)
        head_cut = {b: gone for b, gone in choose_heads(scores, heads, heads_fraction, with_mixer).items() if gone}
        notes["heads"] = {"criterion": HEAD_CRITERION, "base_loss": round(base, 6),
                          "importance": {_key(stack, b): [round(s, 6) for s in v] for b, v in scores.items()},
                          "pruned": {_key(stack, b): sorted(head_cut.get(b, [])) for b in scores},
                          "kept": {_key(stack, b): [h for h in range(len(v)) if h not in head_cut.get(b, [])] for b, v in scores.items()}}
    unit_keep: dict[tuple[int, str], list[int]] = {}
    if neurons_fraction is not None:
        ffns = ffn_units(stack, running)
        unit_scores = neuron_scores(ffns, neurons_criterion, model, objective)
        unit_keep = choose_neurons(unit_scores, neurons_fraction, running)
        notes["neurons"] = {"criterion": neurons_criterion,
                            "importance": {f"{_key(stack, b)}.{n}": [round(float(x), 6) for x in s] for (b, n), s in unit_scores.items()},
                            "kept": {f"{_key(stack, b)}.{n}": keep for (b, n), keep in unit_keep.items()}}

    for b, gone in head_cut.items():
        mixer = stack.blocks[b].part("mixer")
        mixer.prune_heads([h for h in range(mixer.heads) if h not in gone])
    hidden: dict[int, int] = {}
    for (b, n), keep in unit_keep.items():
        stack.blocks[b].part(n).prune_hidden(keep)
        hidden[b] = len(keep)
    new_config = record(config, stack, {b: stack.blocks[b].part("mixer") for b in head_cut}, hidden)
    if head_cut or "heads" in notes:
        notes["heads_per_layer"] = {str(layer): stack.block_at(layer).part("mixer").heads for layer in range(stack.depth)
                                    if getattr(stack.block_at(layer).part("mixer"), "prunable_heads", False)}
    if hidden:
        notes["hidden_per_layer"] = {str(layer): hidden[stack.layer_blocks[layer]] for layer in range(stack.depth)
                                     if stack.layer_blocks[layer] in hidden}
    notes["pruned_loss"] = round(objective.mean(model), 6)
    if finetune_steps:
        notes["finetune"] = finetune(model, objective, finetune_steps, finetune_lr)
    return model, new_config, notes
