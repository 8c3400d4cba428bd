"""`--method fuse --other RUN2`: two runs of one config merged into one model by optimal
transport ("Transformer Fusion with Optimal Transport", Imfeld et al. 2024). The run (model
A) is the anchor; model B (--other) is transported onto it space by space (the residual
stream with one map along its whole path, each block's attention heads with q and k sharing
a map and v with o_proj's columns, each ffn's hidden units: compress/fuse_layout.py and
fuse_align.py) and the two are averaged, B weighted `other_weight`. Fusing a model with
itself returns it exactly. `width` / `fused_heads` / `ffn_hidden` below the anchor's make
a narrower model (heterogeneous fusion, the paper's compression): the maps are then
non-square, the target is the anchor's most important channels, and the new sizes are
recorded in the config (model.dim, per-layer overrides of heads / head_dim and ffn hidden,
as prune records them), so catalog.load_run rebuilds it. The notes compare the fused
model with vanilla averaging (no alignment) and each parent, before and after the same
short fine-tune on the calibration batches."""
from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from anyformer import catalog, rundir
from anyformer.compress import prune
from anyformer.compress.data import Judged
from anyformer.compress import fuse_align
from anyformer.compress.fuse_align import ALIGNMENTS, carry
from anyformer.compress.fuse_layout import RESIDUAL, Layout, layout
from anyformer.compress.prune_heads import Objective
from anyformer.compress.transport import SOLVERS, is_permutation
from anyformer.errors import ConfigError, unknown

PAPER = "Transformer Fusion with Optimal Transport (Imfeld et al. 2024)"
# Model fields that are sizes (heterogeneous fusion may change them), and a component spec's.
SIZES = ("dim", "heads")
SPEC_SIZES = ("heads", "head_dim", "hidden", "ratio")


def _count(value: Any, option: str, least: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{option} must be an integer >= {least}, got {value!r}")
    return value


def check_options(other: Any, align: Any, solver: Any, reg: Any, other_weight: Any, width: Any, fused_heads: Any,
                  ffn_hidden: Any, finetune_steps: Any, finetune_lr: Any) -> None:
    """Every option checked before any work."""
    if other is None:
        raise ConfigError("fuse needs --other RUN2: the run to fuse into this one (the same config trained from another seed, say)")
    if align not in ALIGNMENTS:
        raise unknown("--align", str(align), ALIGNMENTS)
    if solver not in SOLVERS:
        raise unknown("--solver", str(solver), SOLVERS)
    if isinstance(reg, bool) or not isinstance(reg, (int, float)) or not reg > 0:
        raise ConfigError(f"--reg must be a number > 0 (sinkhorn's entropic regularisation on the cost scaled to max 1), got {reg!r}")
    if isinstance(other_weight, bool) or not isinstance(other_weight, (int, float)) or not 0 <= other_weight <= 1:
        raise ConfigError(f"--other-weight must be in [0, 1] (the share of --other in the average), got {other_weight!r}")
    for value, option in ((width, "--width"), (fused_heads, "--fused-heads"), (ffn_hidden, "--ffn-hidden")):
        _count(value, option, 1)
    _count(finetune_steps, "--finetune-steps", 0)
    if isinstance(finetune_lr, bool) or not isinstance(finetune_lr, (int, float)) or not 0 < finetune_lr < 1:
        raise ConfigError(f"--finetune-lr must be a number in (0, 1), got {finetune_lr!r}")


def _strip_sizes(spec: Any) -> Any:
    if not isinstance(spec, dict):
        return spec
    return {k: v for k, v in spec.items() if k not in SPEC_SIZES}


def _design(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The model config without its sizes (and the informational preset)."""
    cfg = {k: v for k, v in copy.deepcopy(model_cfg).items() if k not in SIZES and k != "preset"}
    for kind in ("mixer", "ffn"):
        cfg[kind] = _strip_sizes(cfg.get(kind))
    schedule = cfg.get("schedule") or {}
    schedule["overrides"] = [{k: _strip_sizes(v) for k, v in ov.items()} for ov in schedule.get("overrides") or []]
    cfg["schedule"] = schedule
    return cfg


def _difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    """The first path where `a` and `b` differ, with both values; None when equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = _difference(a.get(key), b.get(key), f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            found = _difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else (path, a, b)


def check_same_design(mine: dict[str, Any], theirs: dict[str, Any], other: str, heterogeneous: bool) -> None:
    """A one-line ConfigError unless the two model configs are one design (equal, or equal
    but for sizes when fusing into given sizes)."""
    found = _difference(_design(mine), _design(theirs), "model")
    if found:
        path, a, b = found
        raise ConfigError(f"fuse: --other {other} differs from the run in {path} ({b!r} there, {a!r} here); "
                          "fuse runs of one model config (trained from different seeds, say)")
    found = _difference({**mine, "preset": None}, {**theirs, "preset": None}, "model")
    if found and not heterogeneous:
        path, a, b = found
        raise ConfigError(f"fuse: --other {other} differs from the run in {path} ({b!r} there, {a!r} here); fuse runs of one "
                          "config, or give --width / --fused-heads / --ffn-hidden to fuse into a model of those sizes (heterogeneous fusion)")


def check_same_task(run: Path | None, data: Judged, other_config: dict[str, Any], other: str) -> None:
    mine = (rundir.read_config(run).get("task") if run is not None else None)
    theirs = other_config.get("task")
    if run is None and data.task is not None:  # called without the run: its task by name
        mine, theirs = {"name": data.task.name}, {"name": (theirs or {}).get("name")}
    found = _difference(mine, theirs, "task")
    if found:
        path, a, b = found
        raise ConfigError(f"fuse: --other {other} was trained with {path} {b!r}, the run with {a!r}; fuse runs of one task")


def target_config(config: dict[str, Any], stack: nn.Module, lay: Layout, width: int | None, fused_heads: int | None,
                  ffn_hidden: int | None) -> dict[str, Any]:
    """The fused model's config: the anchor's, or with the given sizes (each at most the
    anchor's), recorded as model.dim and per-layer overrides of the mixer's heads (head_dim
    kept) and the ffn's hidden units."""
    if width is None and fused_heads is None and ffn_hidden is None:
        return copy.deepcopy(config)
    dim = int(config["dim"])
    if width is not None and width > dim:
        raise ConfigError(f"--width {width} is wider than the run's model.dim {dim}; the fused model keeps a subset of the anchor's "
                          f"channels: give --width in 1..{dim}")
    heads = {b: g[2] for b, g in lay.groups.items()}
    if fused_heads is not None and heads and fused_heads > min(heads.values()):
        least = min(heads.values())
        raise ConfigError(f"--fused-heads {fused_heads} exceeds the {least} heads of layers "
                          f"{[stack.layers_of(b) for b, h in heads.items() if h == least]}; give --fused-heads in 1..{least}")
    hidden = {int(s.split(".")[0]): n for s, n in lay.sizes.items() if s.endswith(".hidden")}
    if ffn_hidden is not None and hidden and ffn_hidden > min(hidden.values()):
        raise ConfigError(f"--ffn-hidden {ffn_hidden} exceeds the run's {min(hidden.values())} ffn hidden units; "
                          f"give --ffn-hidden in 1..{min(hidden.values())}")
    new_dim, model_heads = width or dim, fused_heads or int(config["heads"])
    if new_dim % model_heads:
        raise ConfigError(f"--width {new_dim} is not divisible by the {model_heads} heads (model.heads, or --fused-heads); "
                          f"give a multiple of {model_heads}")
    new = {**copy.deepcopy(config), "dim": new_dim, "heads": model_heads}
    mixers = {b: SimpleNamespace(heads=fused_heads or g[2], head_dim=g[3]) for b, g in lay.groups.items()}
    return prune.record(new, stack, mixers, {b: ffn_hidden or n for b, n in hidden.items()})


def _combine(target: nn.Module, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], weight: float) -> nn.Module:
    """`target` loaded with (1 - weight) * a + weight * b (integer buffers: a's)."""
    fused = {}
    for key, ref in target.state_dict().items():
        x, y = a[key], b[key]
        if x.shape != ref.shape or y.shape != ref.shape:
            raise ValueError(f"fused {key}: {tuple(x.shape)} / {tuple(y.shape)} for a target of {tuple(ref.shape)}")
        fused[key] = ((1 - weight) * x + weight * y if x.is_floating_point() else x).to(ref.dtype)
    target.load_state_dict(fused, strict=True)
    return target.eval()


def _map_notes(alignment: Any, lay_b: Layout, lay_t: Layout, stack: nn.Module) -> dict[str, Any]:
    maps = {space: {"from": lay_b.sizes[space], "to": lay_t.sizes[space], "permutation": is_permutation(plan),
                    "cost": round(alignment.costs[space], 6)} for space, plan in alignment.other.items()}
    heads = {",".join(map(str, stack.layers_of(b))): {"from": int(p.shape[0]), "to": int(p.shape[1]), "permutation": is_permutation(p),
                                                      "assignment": [int(i) for i in p.argmax(1)]}
             for b, p in alignment.other_heads.items()}
    return {"maps": maps, "heads": heads}


def _score(model: nn.Module, data: Judged, objective: Objective, device: torch.device) -> dict[str, float]:
    quality = data.quality(model, device)
    return {data.metric: round(float(quality[data.metric]), 6), "loss": round(objective.mean(model), 6)}


def compare(models: dict[str, nn.Module | None], data: Judged, objective: Objective, device: torch.device,
            steps: int, lr: float) -> dict[str, Any]:
    """Each model's metric and calibration loss, before and after `steps` fine-tuning steps
    (copies, except the last model's, which is tuned in place: the method's result)."""
    rows: dict[str, Any] = {}
    names = list(models)
    for name, model in models.items():
        if model is None:
            rows[name] = None
            continue
        rows[name] = {"before": _score(model, data, objective, device)}
        if steps:
            tuned = model if name == names[-1] else copy.deepcopy(model)
            tune = prune.finetune(tuned, objective, steps, lr)
            rows[name]["after"] = _score(tuned, data, objective, device)
            rows[name]["finetune"] = tune
    return rows


def apply(model: nn.Module, config: dict[str, Any], data: Judged, device: torch.device, run: Path | None = None,
          other: str | Path | None = None, align: str = "activations", solver: str = "emd", reg: float = 0.08,
          other_weight: float = 0.5, width: int | None = None, fused_heads: int | None = None, ffn_hidden: int | None = None,
          finetune_steps: int = 0, finetune_lr: float = 1e-4,
          baselines: bool = True) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(model A fused with run `other` by OT, its model config, notes: the maps, and the
    fused / vanilla / parents comparison, `baselines` False: the fused model's alone).
    Neither input is changed."""
    check_options(other, align, solver, reg, other_weight, width, fused_heads, ffn_hidden, finetune_steps, finetune_lr)
    if not isinstance(baselines, bool):
        raise ConfigError(f"--baselines must be true or false, got {baselines!r}")
    heterogeneous = any(v is not None for v in (width, fused_heads, ffn_hidden))
    other_config = rundir.read_config(other)
    check_same_design(config, other_config["model"], str(other), heterogeneous)
    check_same_task(run, data, other_config, str(other))
    lay_a = layout(model)
    target_cfg = target_config(config, model.stack, lay_a, width, fused_heads, ffn_hidden)
    other_model, _ = catalog.load_run(other)
    other_model.to(device)
    lay_b = layout(other_model)

    def make() -> nn.Module:  # a fresh model of the target's shapes
        return catalog.create(copy.deepcopy(target_cfg)).to(device)

    target = make()
    lay_t = layout(target)
    alignment = fuse_align.align(model, other_model, (lay_a, lay_b, lay_t), data.calibration, device, align, solver, reg)
    anchor_state = carry(model.state_dict(), lay_a, alignment.anchor)
    fused = _combine(target, anchor_state, carry(other_model.state_dict(), lay_b, alignment.other), other_weight)

    candidates: dict[str, nn.Module | None] = {}
    if baselines:
        same_shapes = all(t.shape == o.shape for t, o in zip(model.state_dict().values(), other_model.state_dict().values()))
        candidates = {"anchor": model, "other": other_model, "vanilla": (
            _combine(make(), model.state_dict(), other_model.state_dict(), other_weight) if same_shapes and target_cfg == config else None)}
        if target_cfg != config:  # the anchor alone carried onto the narrower target: what fusing B adds to it
            candidates["anchor_only"] = _combine(make(), anchor_state, anchor_state, 0.0)
    rows = compare({**candidates, "fused": fused}, data, Objective(model, data, device), device, finetune_steps, finetune_lr)
    if baselines and rows["vanilla"] is None:
        rows["vanilla"] = "not defined: the parents' or the fused model's shapes differ"
    notes: dict[str, Any] = {
        "paper": PAPER, "other": str(Path(other).resolve()), "anchor": "the run (model A): --other (model B) is transported onto it",
        "align": align, "solver": solver, **({"reg": reg} if solver == "sinkhorn" else {}), "other_weight": other_weight,
        "residual": "one transport map for the whole residual path (embedding, every block's outputs and norms, final norm, head)",
        **_map_notes(alignment, lay_b, lay_t, model.stack),
        "compare": {"metric": data.metric, "finetune_steps": finetune_steps, "finetune_lr": finetune_lr, "models": rows},
    }
    if heterogeneous:
        notes["fused_sizes"] = {"dim": lay_t.sizes[RESIDUAL], "heads_per_layer": {
            str(layer): g[2] for b, g in lay_t.groups.items() for layer in model.stack.layers_of(b)},
            "hidden_per_layer": {f"{layer}.{s.split('.')[1]}": n for s, n in lay_t.sizes.items() if s.endswith(".hidden")
                                 for layer in model.stack.layers_of(int(s.split(".")[0]))}}
    return fused, target_cfg, notes
