"""A synthetic comparison in results.json's schema: four models over three seeds, a trivial
baseline row, a constraint, a recommendation, ties and flags; and per-seed learning curves
(one model logged only a few points). Built by hand so every expected value is known."""
from __future__ import annotations

import json
import random
from pathlib import Path

SEEDS = [0, 1, 2]
# model: (quality, half-width, params, latency_ms, pareto_latency, pareto_params, tied, feasible, flags)
MODELS = {
    "vit": (0.962, 0.011, 210_000, 7.5, True, False, True, False, []),
    "vit+linear": (0.955, 0.011, 150_000, 4.2, True, True, True, True, []),
    "vit+performer": (0.931, 0.016, 420_000, 5.5, False, False, False, True, ["undertrained 180/200 steps"]),
    "vit+fnet": (0.902, 0.022, 12_000, 1.3, True, True, False, True, ["noisy latency 1.6x"]),
}
RECOMMENDED = "vit+linear"
BY_PARAMS = sorted(MODELS, key=lambda m: MODELS[m][2])  # ascending parameter count


def _row(name: str) -> dict:
    q, half, params, lat, pl, pp, tied, feasible, flags = MODELS[name]
    seeds = [{"seed": s, "quality": q + (s - 1) * half / 2, "val": q - 0.01, "steps": 200 if "performer" not in name else 180,
              "planned_steps": 200, "train_seconds": 12.0} for s in SEEDS]
    return {
        "model": name, "quality": q, "val": q - 0.01, "metric": "accuracy", "higher_is_better": True,
        "params": params, "params_non_embedding": params - 1000, "flops_per_sample": params * 130.0,
        "latency_ms": lat, "latency_ms_low": lat * 0.95, "latency_ms_high": lat * 1.05, "latency_batch": 64,
        "train_step_ms": lat * 3, "peak_memory_bytes": params * 40, "steps": seeds[0]["steps"], "train_seconds": 12.0,
        "all_metrics": {"test": {"accuracy": q}}, "pareto_latency": pl, "pareto_params": pp,
        "seeds": seeds, "quality_low": q - half, "quality_high": q + half, "n_test": 360,
        "tied_with_best": tied, "flags": flags, "baseline": False, "delta": q - MODELS["vit"][0],
        "recommended": name == RECOMMENDED, "feasible": feasible,
    }


def make_results() -> dict:
    baseline = {"model": "majority class", "quality": 0.101, "val": 0.1, "metric": "accuracy", "higher_is_better": True,
                "baseline": True, "flags": [], "n_test": 360, "delta": 0.101 - MODELS["vit"][0], "seeds": [],
                "params": None, "latency_ms": None, "tied_with_best": False, "feasible": False, "recommended": False}
    return {
        "task": "digits", "metric": "accuracy", "higher_is_better": True, "n_test": 360, "seeds": len(SEEDS),
        "reference": "vit", "interval_method": "t interval, 95%, over seeds",
        "tie_test": "Welch t-test against the best, p > 0.05",
        "constraints": {"max_latency_ms": 6.0, "max_params": None, "max_memory_mb": None}, "optimize": "latency",
        "recommendation": {"model": RECOMMENDED, "reason": "tied with the best test accuracy and meets max_latency_ms = 6"},
        "recommendation_reason": "tied with the best test accuracy and meets max_latency_ms = 6",
        "environment": {"device": "cpu", "torch": "2.13.0", "threads": 2},
        "rows": [_row(m) for m in MODELS] + [baseline],
    }


def make_curves() -> dict[str, list[list[dict]]]:
    """model -> one metrics-record list per seed, as rundir.read_metrics returns them."""
    curves = {}
    for i, name in enumerate(MODELS):
        runs = []
        for seed in SEEDS:
            rng = random.Random(100 * i + seed)
            few = name == "vit+fnet"  # logged only a few points: must still be drawn
            steps = [100, 200] if few else list(range(10, 201, 10))
            records = [{"step": s, "loss": 2.3 * (0.985 ** s) + 0.05 * rng.random(), "lr": 1e-3} for s in steps]
            for s in ([200] if few else [50, 100, 150, 200]):
                records.append({"step": s, "split": "val", "accuracy": MODELS[name][0] - 0.3 * (200 - s) / 200 + 0.01 * rng.random(), "loss": 0.3})
            runs.append(sorted(records, key=lambda r: (r["step"], "split" in r)))
        curves[name] = runs
    return curves


def write_compare_dir(path: Path, results: dict, curves: dict, per_seed_folders: bool = True) -> Path:
    """A compare directory on disk: results.json and each model's metrics.jsonl, one
    folder per seed (or the older single-run layout)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(results))
    for name, runs in curves.items():
        model_dir = path / name  # these names are already file-system safe
        for seed, records in zip(SEEDS, runs):
            run_dir = model_dir / f"seed-{seed}" if per_seed_folders else model_dir
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            if not per_seed_folders:
                break
    return path

