"""Token filtering ("Predicting Token Impact Towards Efficient Vision Transformer", Wang et al.
2023): `--method token-filter --keep F | --threshold X`. Each input token's importance is
the loss increase when it alone is masked, measured on the calibration (training) batches
(compress/token_importance.py); an MLP learns to predict it from the token itself (the
stack's input: the encoder's token plus its input position); the model gets that MLP as
`model.token_filter` (nn/token_filter.py), which keeps the `keep` share of each sample's
tokens it scores highest, or those scored >= `threshold` (a predicted loss increase, in the
loss's units), before the first layer, at inference and in training; a short fine-tune of
the backbone on the filtered tokens (`finetune_steps`) may follow, as in the paper.

Where this differs from the paper: the MLP regresses the loss increase itself (mean squared
error on standardised targets) rather than classifying tokens labelled relevant when their
loss increase passes a threshold rho (its BCE); ranking by the prediction serves `keep`, and
comparing it with `threshold` is the paper's rho rule applied to the prediction. A token is
masked through the key mask (exact removal) rather than zeroed, where the model honours masks.
The calibration batches stand in for the whole training set."""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anyformer import catalog
from anyformer.compress.data import Judged
from anyformer.compress.prune import finetune
from anyformer.compress.prune_heads import Objective
from anyformer.compress.token_importance import Importance, token_importance
from anyformer.errors import ConfigError

FIT_SEED = 0
FIT_LR = 3e-3
FIT_BATCH = 1024


def _number(value: Any, option: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{option} must be a finite number, got {value!r}")
    return float(value)


def check_options(keep: Any, threshold: Any, hidden: Any, filter_steps: Any, finetune_steps: Any, finetune_lr: Any) -> None:
    """Every option checked before any work, each error naming its option."""
    if keep is not None and threshold is not None:
        raise ConfigError("give one of --keep (share of tokens kept) or --threshold (least predicted loss increase), not both")
    if keep is None and threshold is None:
        raise ConfigError("token-filter needs --keep F (share of each sample's tokens kept, 0 < F <= 1) or --threshold X "
                          "(keep tokens whose predicted loss increase when masked is >= X)")
    if keep is not None and not 0.0 < _number(keep, "--keep") <= 1.0:
        raise ConfigError(f"--keep must be in (0, 1] (the share of tokens kept), got {keep!r}")
    if threshold is not None:
        _number(threshold, "--threshold")
    for option, value, low in (("--hidden", hidden, 1), ("--filter-steps", filter_steps, 1), ("--finetune-steps", finetune_steps, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{option} must be an integer >= {low}, got {value!r}")
    if isinstance(finetune_lr, bool) or not isinstance(finetune_lr, (int, float)) or not 0 < finetune_lr < 1:
        raise ConfigError(f"--finetune-lr must be a number in (0, 1), got {finetune_lr!r}")


def _rows(imp: Importance, batches: range) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [M, D], loss increases [M]) of the real candidate tokens of `batches`."""
    xs, ys = [], []
    for i in batches:
        real = imp.real(i)
        xs.append(imp.tokens[i][:, imp.prefix:][real])
        ys.append(imp.delta[i][real])
    return torch.cat(xs), torch.cat(ys)


def fit_filter(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Train the filter's MLP (Linear -> GELU -> Linear) to predict y [M] from x [M, D] by
    mean squared error, on standardised inputs and targets; the standardisation is then
    folded into the first and last linear layers, so net(x) predicts y in its own units.
    Returns the final training loss (standardised units)."""
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    y_mean, y_std = y.mean(), y.std().clamp_min(1e-8)
    xs, ys = (x - mean) / std, (y - y_mean) / y_std
    gen = torch.Generator().manual_seed(FIT_SEED)
    optimizer = torch.optim.AdamW(net.parameters(), lr=FIT_LR, weight_decay=1e-4)
    loss = torch.zeros(())
    net.train()
    with torch.enable_grad():
        for _ in range(steps):
            pick = torch.randint(0, len(xs), (min(FIT_BATCH, len(xs)),), generator=gen).to(xs.device)
            loss = F.mse_loss(net(xs[pick]).squeeze(-1), ys[pick])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    net.eval()
    first, last = net[0], net[-1]
    with torch.no_grad():  # net(x) = y_std * net_s((x - mean) / std) + y_mean, exactly
        first.bias -= first.weight @ (mean / std)
        first.weight /= std
        last.weight *= y_std
        last.bias.mul_(y_std).add_(y_mean)
    return float(loss.detach())


def _ranks(v: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(v).scatter_(0, v.argsort(), torch.arange(len(v), dtype=v.dtype, device=v.device))


def fit_report(net: nn.Module, imp: Importance, batches: range, keep: float | None) -> dict[str, float]:
    """How well the filter predicts the measured importances of `batches` (held out): the
    Pearson and Spearman correlations over their tokens, and (for `keep`) the share of each
    sample's truly most important ceil(keep * n) tokens the filter also ranks there."""
    x, y = _rows(imp, batches)
    with torch.no_grad():
        p = net(x).squeeze(-1)
    pearson = float(torch.corrcoef(torch.stack([p, y]))[0, 1])
    spearman = float(torch.corrcoef(torch.stack([_ranks(p), _ranks(y)]))[0, 1])
    report = {"tokens": len(y), "pearson": round(pearson, 4), "spearman": round(spearman, 4)}
    if keep is not None and keep < 1.0:
        hits = total = 0
        for i in batches:
            with torch.no_grad():
                scores = net(imp.tokens[i][:, imp.prefix:]).squeeze(-1)
            real = imp.real(i)
            for b in range(len(real)):
                n = int(real[b].sum())
                k = max(1, math.ceil(n * keep - 1e-9))
                idx = real[b].nonzero().squeeze(-1)
                truth = set(idx[imp.delta[i][b, idx].argsort(descending=True)[:k]].tolist())
                guess = set(idx[scores[b, idx].argsort(descending=True)[:k]].tolist())
                hits, total = hits + len(truth & guess), total + k
        report["top_recall"] = round(hits / max(total, 1), 4)
    return report


@torch.no_grad()
def kept_share(model: nn.Module, objective: Objective) -> float:
    """The share of the non-prefix real tokens the model's filter keeps on the calibration batches."""
    kept = total = 0
    filt = model.token_filter

    def hook(module: nn.Module, args: tuple, output: tuple) -> None:
        nonlocal kept, total
        tokens, mask = args[0], args[1] if len(args) > 1 else None
        out_tokens, out_mask = output
        total += int(mask[:, filt.prefix:].sum()) if mask is not None else tokens[:, filt.prefix:].shape[:2].numel()
        kept += int(out_mask[:, filt.prefix:].sum()) if out_mask is not None else out_tokens[:, filt.prefix:].shape[:2].numel()

    handle = filt.register_forward_hook(hook)
    try:
        model.eval()
        for i in range(len(objective.batches)):
            objective.output(model, i)
    finally:
        handle.remove()
    return kept / max(total, 1)


def apply(model: nn.Module, config: dict[str, Any], data: Judged, device: torch.device,
          keep: float | None = None, threshold: float | None = None, hidden: int = 64, filter_steps: int = 300,
          finetune_steps: int = 0, finetune_lr: float = 1e-4) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(the model with a trained token filter before its first layer, its model config,
    notes: the importances, how well the filter predicts them, the tokens it keeps, the
    calibration losses before and after the filter and the fine-tune)."""
    check_options(keep, threshold, hidden, filter_steps, finetune_steps, finetune_lr)
    if config.get("token_filter"):
        raise ConfigError("this run already filters its tokens (model.token_filter); compress the run it came from instead")
    spec = {"hidden": hidden, **({"keep": float(keep)} if keep is not None else {"threshold": float(threshold)})}
    new_config = {**copy.deepcopy(config), "token_filter": spec}
    # Built first: a model with a part that cannot take a subset of its tokens is refused
    # (a one-line ConfigError) before any work.
    filtered = catalog.create(new_config).to(device)
    prefix = filtered.token_filter.prefix
    objective = Objective(model, data, device)
    imp = token_importance(model, objective, prefix)
    held = range(len(imp.delta) - 1, len(imp.delta)) if len(imp.delta) > 1 else range(len(imp.delta))
    fit_on = range(0, len(imp.delta) - 1) if len(imp.delta) > 1 else held
    x, y = _rows(imp, fit_on)
    net = copy.deepcopy(filtered.token_filter.net)
    fit_loss = fit_filter(net, x, y, filter_steps)
    missing, unexpected = filtered.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not k.startswith("token_filter.") for k in missing):
        raise ConfigError(f"the filtered model does not match the run's weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
    filtered.token_filter.net.load_state_dict(net.state_dict())
    filtered.eval()
    positions = imp.per_position()
    order = sorted(range(len(positions)), key=lambda t: -positions[t])
    notes: dict[str, Any] = {
        "loss": "task loss" if data.task is not None else "1 - cosine to the unfiltered outputs",
        "masking": imp.how, "prefix_tokens": prefix,
        "importance": {"base_loss": round(float(torch.cat(imp.base).mean()), 6),
                       "per_position": [round(v, 6) for v in positions],
                       "ranked_positions": [prefix + t for t in order]},
        "filter": {"hidden": hidden, "steps": filter_steps, "fit_loss": round(fit_loss, 6),
                   "held_out": fit_report(net, imp, held, keep)},
        "unfiltered_loss": round(objective.mean(model), 6),
        "filtered_loss": round(objective.mean(filtered), 6),
        "kept_share": round(kept_share(filtered, objective), 4),
    }
    if finetune_steps:
        notes["finetune"] = finetune(filtered, objective, finetune_steps, finetune_lr)
    return filtered, new_config, notes
