"""Attention dynamics over training (`train.track: [attention]`): at step 0 and after every
evaluation, each layer's attention weights on a fixed batch of validation examples, reduced
to entropy and top-weight statistics and logged to metrics.jsonl as a record of split
"attention" (so a resume truncates and rewrites it with the rest of the file, exactly).

The weights come from each mixer's own `attention_weights(x, mask) -> [B, H, Lq, Lk]`, a
capability declared by the mixers whose forward applies explicit softmax weights, on the
input the layer actually receives (captured by a forward pre-hook), so their forward and
its fused SDPA kernels stay untouched. Tian et al. 2023 ("Scan and Snap: Understanding
Training Dynamics and Token Composition in 1-layer Transformer") is the finding it shows.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from anyformer import registry
from anyformer.errors import ConfigError
from anyformer.tasks.base import Task
from anyformer.tasks.evaluation import model_kwargs

# Validation examples the statistics are taken on: the split's first ones, the same at
# every step, so a curve shows the model changing and not the batch.
EXAMPLES = 64
# The top-k mass reported beside the top-1 weight.
TOP_K = 5
TRACKS = ("attention",)

OnEval = Callable[[int, dict[str, dict[str, float]]], None]


def has_attention_weights(mixer: nn.Module) -> bool:
    return callable(getattr(mixer, "attention_weights", None))


def mixers_with_weights() -> str:
    return ", ".join(n for n in registry.list_components("mixer") if has_attention_weights(registry.get("mixer", n)))


def token_mixers(model: nn.Module) -> list[nn.Module]:
    """The model's token mixers in module order, outermost only (a mixer built of others is
    one site): each forward call of one is a layer, in the order the model runs them."""
    found: list[tuple[str, nn.Module]] = []
    for name, m in model.named_modules():
        if getattr(m, "registry_kind", None) != "mixer":
            continue
        if any(name.startswith(outer + ".") for outer, _ in found):
            continue
        found.append((name, m))
    return [m for _, m in found]


def attention_statistics(weights: torch.Tensor, mask: torch.Tensor | None, k: int = TOP_K) -> dict[str, Any]:
    """Weights [B, H, Lq, Lk] (rows sum to 1) -> entropy (nats), mean top-1 weight and top-k
    mass, each the mean over heads and real queries (`mask` Bool[B, L], True = real), and
    per head."""
    B, H, Lq, Lk = weights.shape
    w = weights.float()
    entropy = -torch.special.xlogy(w, w).sum(-1)  # [B, H, Lq]; 0 log 0 = 0
    top = w.topk(min(k, Lk), dim=-1).values
    top1, topk = top[..., 0], top.sum(-1)
    real = torch.ones(B, Lq, device=w.device) if mask is None else mask.to(w.dtype)
    weight = real[:, None, :].expand(B, H, Lq)
    per_head = lambda t: (t * weight).sum((0, 2)) / weight.sum((0, 2)).clamp_min(1.0)  # noqa: E731
    stats = {name: per_head(t) for name, t in (("entropy", entropy), ("top1", top1), ("topk", topk))}
    out: dict[str, Any] = {name: round(float(v.mean()), 6) for name, v in stats.items()}
    out["k"] = min(k, Lk)
    out["heads"] = {name: [round(float(x), 6) for x in v] for name, v in stats.items() if name != "topk"}
    return out


def last_real(mask: torch.Tensor | None, batch: int, length: int, device: torch.device) -> torch.Tensor:
    """Index [B] of each sequence's last real token (the query a 'last' head reads)."""
    if mask is None:
        return torch.full((batch,), length - 1, dtype=torch.long, device=device)
    return (mask.long() * torch.arange(length, device=device)).argmax(1)


def last_query_row(weights: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The attention row [B, H, Lk] of each sequence's last real query."""
    B = weights.shape[0]
    query = last_real(mask, B, weights.shape[2], weights.device)
    return weights.float()[torch.arange(B, device=weights.device), :, query]


def last_query_statistics(weights: torch.Tensor, mask: torch.Tensor | None) -> dict[str, float]:
    """Entropy and top-1 weight of the last real query's row, the mean over examples and
    heads: the one query a 'last' head reads, which the means over every query dilute."""
    row = last_query_row(weights, mask)
    return {"entropy": round(float(-torch.special.xlogy(row, row).sum(-1).mean()), 6),
            "top1": round(float(row.max(-1).values.mean()), 6)}


def group_mass(weights: torch.Tensor, mask: torch.Tensor | None, groups: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The attention mass the last real query puts on each key group (Bool[B, Lk] each),
    the mean over heads and over the examples holding a key of that group, and the share of
    those examples' real keys the group holds (the mass uniform attention would give it)."""
    row = last_query_row(weights, mask)  # [B, H, Lk]
    B, _, Lk = row.shape
    real = torch.ones(B, Lk, device=weights.device) if mask is None else mask.float()
    mass, share = {}, {}
    for name, members in groups.items():
        m = members.to(weights.device).float() * real
        present = m.sum(-1) > 0
        if not bool(present.any()):
            continue
        mass[name] = round(float((row * m[:, None]).sum(-1).mean(-1)[present].mean()), 6)
        share[name] = round(float((m.sum(-1) / real.sum(-1))[present].mean()), 6)
    return {"groups": mass, "group_share": share}


class AttentionTracker:
    """Attention statistics per layer of `model` on the first EXAMPLES validation examples
    of `task`. A task may declare `attention_groups(inputs) -> {name: Bool[B, L]}`, key
    positions of interest (scan-snap's distinct and common tokens): the mass the last real
    query gives each is logged too, for layers whose input has those L tokens."""

    def __init__(self, model: nn.Module, task: Task, device: torch.device) -> None:
        self.model, self.device = model, device
        self.sites = token_mixers(model)
        if not any(has_attention_weights(m) for m in self.sites):
            names = sorted({m.name for m in self.sites}) or ["none"]
            raise ConfigError(f"train.track attention: no mixer of this model has attention weights (it uses {', '.join(names)}); "
                              f"use a mixer that has them: {mixers_with_weights()}, or drop --track attention")
        split = task.splits()["val"]
        self.batch = split.batch(torch.arange(min(EXAMPLES, len(split)))).to(device)
        declared = getattr(task, "attention_groups", None)
        self.groups: dict[str, torch.Tensor] = declared(self.batch.inputs) if callable(declared) else {}

    def note(self) -> str | None:
        """Which mixers are skipped (they have no explicit attention weights), or None."""
        skipped = sorted({m.name for m in self.sites if not has_attention_weights(m)})
        return f"attention tracking skips mixers without attention weights: {', '.join(skipped)}" if skipped else None

    @torch.no_grad()
    def record(self, step: int) -> dict[str, Any]:
        """{'step', 'split': 'attention', 'layers': [per layer statistics]} at this step."""
        calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor | None]] = []

        def capture(module: nn.Module, args: tuple, kwargs: dict) -> None:
            mask = args[1] if len(args) > 1 else kwargs.get("mask")
            calls.append((module, args[0], mask))

        hooks = [m.register_forward_pre_hook(capture, with_kwargs=True) for m in self.sites]
        was_training = self.model.training
        self.model.eval()
        try:
            self.model(self.batch.inputs, **model_kwargs(self.batch))
        finally:
            for h in hooks:
                h.remove()
            self.model.train(was_training)
        layers = []
        for layer, (mixer, x, mask) in enumerate(calls):
            if not has_attention_weights(mixer):
                continue
            weights = mixer.attention_weights(x.float(), mask)
            entry = {"layer": layer, "mixer": mixer.name, **attention_statistics(weights, mask),
                     "last_query": last_query_statistics(weights, mask)}
            if self.groups and all(g.shape[1] == weights.shape[-1] for g in self.groups.values()):
                entry.update(group_mass(weights, mask, self.groups))
            layers.append(entry)
        return {"step": step, "split": "attention", "layers": layers}


def tracked_on_eval(trainer: Any, on_eval: OnEval | None) -> OnEval | None:
    """The trainer's on_eval with `train.track` added: attention records logged after each
    evaluation (before the checkpoint that counts metrics.jsonl's bytes), and one at step 0
    of a run that starts fresh. Unchanged when nothing is tracked."""
    if "attention" not in trainer.cfg.track:
        return on_eval
    tracker = AttentionTracker(trainer.model, trainer.task, trainer.device)
    note = tracker.note()
    if note and trainer.logger.enabled:
        trainer.logger.console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if trainer.step == 0:
        trainer.logger.log(tracker.record(0))

    def after_eval(step: int, results: dict[str, dict[str, float]]) -> None:
        trainer.logger.log(tracker.record(step))
        if on_eval is not None:
            on_eval(step, results)

    return after_eval
