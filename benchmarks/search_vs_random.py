"""Does the search engine help? NSGA-II against random sampling over the same number of
trials, on the embedded digits, for several seeds: the hypervolume of each found front
(quality against parameters, both deterministic for a given trial, so the comparison is
not latency noise), every front normalised with the same bounds (the best and worst of all
runs pooled; parameters on a log scale). The ratio NSGA-II / random per seed is the figure
of merit (> 1: the engine finds a better front with the same trials).

    benchmarks/.venv-bench/bin/python benchmarks/search_vs_random.py [--trials 24] [--seeds 3] [--steps 60]

Writes results/search_vs_random.json and results/search_vs_random.png.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import optuna

from common import RESULTS, machine

import anyformer as af
from anyformer.bench import save_json
from anyformer.search import objectives as O
from anyformer.search.storage import open_storage

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RUNS = Path(__file__).resolve().parent / ".runs" / "search_vs_random"
SPACE = {
    "model": {
        "preset": "vit", "dim": {"choice": [8, 16, 32, 48, 64, 96]}, "depth": {"int": [1, 4]}, "heads": {"choice": [1, 2, 4]},
        "mixer": {"choice": {"softmax": {}, "linear": {}, "fnet": {}, "local": {"window": {"choice": [2, 4, 8]}}}},
        "ffn": {"choice": {"mlp": {"ratio": {"choice": [1, 2, 4]}}, "glu": {"ratio": {"choice": [1, 2, 4]}}}},
    },
    "train": {"lr": {"float": [3.0e-4, 1.0e-2], "log": True}},
}
OBJECTIVES = ["quality", "params"]
SAMPLERS = ("nsga2", "random")


def losses_of(out: Path) -> np.ndarray:
    study = optuna.load_study(study_name="search", storage=open_storage(None, out))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return O.losses(np.array([t.values for t in complete]), OBJECTIVES, ["maximize", "minimize"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    losses: dict[str, list[np.ndarray]] = {s: [] for s in SAMPLERS}
    for seed in range(args.seeds):
        for sampler in SAMPLERS:
            out = RUNS / f"{sampler}-seed{seed}"
            shutil.rmtree(out, ignore_errors=True)
            af.search("digits", SPACE, objectives=OBJECTIVES, trials=args.trials, steps=args.steps, out=out, seed=seed,
                      sampler=sampler, device="cpu", prune=False, train_overrides={"eval_every": args.steps})
            losses[sampler].append(losses_of(out))
    low, high = O.bounds([x for runs in losses.values() for x in runs])
    hv = {s: [O.hypervolume(x, low, high) for x in runs] for s, runs in losses.items()}
    hist = {s: [O.history(x, low, high) for x in runs] for s, runs in losses.items()}
    ratios = [a / b if b else None for a, b in zip(hv["nsga2"], hv["random"])]
    result = {"machine": machine(), "trials": args.trials, "seeds": args.seeds, "steps": args.steps, "objectives": OBJECTIVES,
              "space": SPACE, "hypervolume": hv, "ratio_nsga2_over_random": ratios,
              "median_ratio": float(np.median([r for r in ratios if r is not None])),
              "mean": {s: float(np.mean(v)) for s, v in hv.items()}}
    save_json(result, RESULTS / "search_vs_random.json")
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for sampler, colour in zip(SAMPLERS, ("#0969da", "#bf8700")):
        for k, h in enumerate(hist[sampler]):
            ax.plot(range(1, len(h) + 1), h, color=colour, alpha=0.8, label=sampler if k == 0 else None)
    ax.set_xlabel("complete trials")
    ax.set_ylabel("hypervolume (pooled normalisation)")
    ax.set_title(f"digits, quality vs parameters: NSGA-II vs random ({args.seeds} seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(RESULTS / "search_vs_random.png", dpi=110, bbox_inches="tight")
    print({k: result[k] for k in ("hypervolume", "ratio_nsga2_over_random", "median_ratio")})


if __name__ == "__main__":
    main()
