"""Layer dropping by redundancy ("What Matters in Transformers? Not All Attention is
Needed", He et al. 2024): a sublayer whose output is nearly its input (residual included)
does little, so the k most similar go. Similarity is the cosine between a sublayer's input
and output per token, averaged over the tokens of calibration batches (LLM-Drop's
`get_layer_similarities`). Dropped parts leave the forward pass through the config
(`schedule.prune` 'LAYER.mixer' / 'LAYER.ffn', `schedule.drop` for whole blocks), so the
model is faster, not masked."""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.compress.data import Judged, run_batch
from anyformer.errors import ConfigError

WHAT = ("attention", "mlp", "block", "joint")
MIXER = "mixer"


def _cosine(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None) -> tuple[float, int]:
    """(sum over real tokens of cos(a, b), their count); a, b [B, L, D]."""
    cos = F.cosine_similarity(a.float(), b.float(), dim=-1)
    if mask is not None and mask.shape == cos.shape:
        cos = cos[mask]
    return float(cos.sum()), cos.numel()


@torch.no_grad()
def similarities(model: nn.Module, data: Judged, device: torch.device) -> dict[str, float]:
    """{'L.mixer': attention sublayer, 'L.ffn': MLP sublayer, 'L': whole block} -> mean cosine
    between input and output over calibration tokens, for every layer the model still runs."""
    stack = model.stack
    sums: dict[str, list[float]] = {}
    state = {"order": [], "inside": False}
    running = [layer for layer in range(stack.depth) if layer not in stack.dropped]

    def add(key: str, value: tuple[float, int]) -> None:
        entry = sums.setdefault(key, [0.0, 0])
        entry[0] += value[0]
        entry[1] += value[1]

    def hook(block, args, kwargs, output):
        if state["inside"]:
            return
        layer = running[len(state["order"]) % len(running)]
        state["order"].append(layer)
        x = args[0]
        mask = args[1] if len(args) > 1 else kwargs.get("mask")
        skip = args[3] if len(args) > 3 else kwargs.get("skip", frozenset())
        others = frozenset(n for n in block.path_names if n != MIXER)
        state["inside"] = True  # the half-block call below must not count as a layer
        try:
            after_mixer = block(x, mask, 0.0, frozenset(skip) | others, **({"layer": layer} if "layer" in kwargs else {}))
        finally:
            state["inside"] = False
        if MIXER in block.path_names and MIXER not in skip:
            add(f"{layer}.{MIXER}", _cosine(x, after_mixer, mask))
        if any(n not in skip for n in others):
            add(f"{layer}.ffn", _cosine(after_mixer, output, mask))
        add(str(layer), _cosine(x, output, mask))

    handles = [b.register_forward_hook(hook, with_kwargs=True) for b in stack.blocks]
    try:
        model.eval()
        for batch in data.calibration:
            state["order"] = []
            run_batch(model, batch, device)
    finally:
        for h in handles:
            h.remove()
    return {k: s / max(n, 1) for k, (s, n) in sums.items()}


def choose(scores: dict[str, float], what: str, k: int | None, fraction: float | None) -> list[str]:
    """The k most redundant candidates of kind `what` (highest similarity first)."""
    if what not in WHAT:
        raise ConfigError(f"--what {what!r} is not one of {', '.join(WHAT)}")
    kinds = {"attention": (MIXER,), "mlp": ("ffn",), "block": ("",), "joint": (MIXER, "ffn")}[what]
    pool = {key: s for key, s in scores.items() if (key.partition(".")[2] or "") in kinds}
    if (k is None) == (fraction is None):
        raise ConfigError("give one of --k (how many to drop) or --fraction (the share of them to drop)")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ConfigError(f"--fraction must be in (0, 1], got {fraction}")
        k = math.floor(fraction * len(pool) + 1e-9)
    if not 0 <= k <= len(pool):
        raise ConfigError(f"--k {k}: the model has {len(pool)} {what} layers to drop; give --k in 0..{len(pool)}")
    if what == "block" and k == len(pool):
        raise ConfigError(f"--k {k} drops every block of the model; give --k in 0..{len(pool) - 1}")
    return sorted(pool, key=lambda key: (-pool[key], key))[:k]


def apply(model: nn.Module, config: dict[str, Any], data: Judged, device: torch.device,
          what: str = "attention", k: int | None = None, fraction: float | None = None) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(the model with the chosen layers removed, its model config, notes: scores and choice)."""
    model_cfg = copy.deepcopy(config)
    scores = similarities(model, data, device)
    chosen = choose(scores, what, k, fraction)
    schedule = dict(model_cfg.get("schedule") or {})
    drop = sorted(set(schedule.get("drop") or []) | {int(c) for c in chosen if "." not in c})
    # An MLP sublayer is every path but the mixer ('ffn', and macaron's 'ffn2').
    paths = []
    for c in chosen:
        if "." in c:
            layer, _, name = c.partition(".")
            names = model.stack.block_at(int(layer)).path_names
            paths += [(int(layer), n) for n in ([MIXER] if name == MIXER else [n for n in names if n != MIXER])]
    pruned = list(schedule.get("prune") or [])
    schedule.update({"drop": drop, "prune": pruned + [f"{layer}.{n}" for layer, n in paths if f"{layer}.{n}" not in pruned]})
    model_cfg["schedule"] = schedule
    model.stack.drop_layers(int(c) for c in chosen if "." not in c)
    for layer, name in paths:
        model.stack.prune_path(layer, name)
    return model, model_cfg, {"similarity": {key: round(v, 6) for key, v in scores.items()}, "dropped": chosen}
