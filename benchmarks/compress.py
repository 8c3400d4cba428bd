"""Structural compression (`anyformer compress --method drop | prune`): what dropping half
the attention layers and pruning attention heads buy in latency, and what they cost in
quality, on one model in one run.

A ViT is trained on the embedded digits for `--train-s` seconds (its run kept under
benchmarks/.runs/), then compressed through `anyformer.compress`: half its attention layers
dropped by similarity, and a quarter of its heads pruned by masking loss. Quality is the
test accuracy each compressed run reports (its own test split). Latency is measured on the
same compressed models at sequence length `--length` (1024 tokens: a 128x128 image grid is
too big for digits, so the token count is set by timing the transformer preset of the same
width and depth with its schedule and head overrides copied over, on random token ids at L
1024, batch 1) and on the digits batch itself; every runner alternates in one process and
speedups are medians of per-round ratios. Writes results/compress.json.

    benchmarks/.venv-bench/bin/python benchmarks/compress.py [--rounds 7] [--train-s 60]
"""
from __future__ import annotations

import argparse
import copy
import shutil
import time
from pathlib import Path

import torch

from common import RESULTS, interleaved, machine, median, paired_ratio

import anyformer as af
from anyformer import catalog
from anyformer.bench import save_json
from anyformer.train import train
from anyformer.train.config import run_config

RUNS = Path(__file__).resolve().parent / ".runs"


def long_twin(model_cfg: dict, length: int) -> torch.nn.Module:
    """The transformer preset with this model's width, depth, heads, schedule (drops, pruned
    paths, per-layer heads) on token ids of `length`: the same layers at a long sequence."""
    keep = {k: model_cfg[k] for k in ("dim", "depth", "heads", "schedule") if k in model_cfg}
    return af.create({"preset": "transformer", **copy.deepcopy(keep)}, vocab_size=256, max_len=length, num_classes=10).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--train-s", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    base = RUNS / "vit-digits"
    if not (base / "summary.json").exists():
        shutil.rmtree(base, ignore_errors=True)
        train(run_config({"model": "vit", "task": "digits"}, {"train.max_time": args.train_s, "train.progress": False}), base)
    variants = {"drop half the attention": ("drop", {"what": "attention", "fraction": 0.5}),
                "prune a quarter of the heads": ("prune", {"heads_fraction": 0.25})}
    results = {}
    for name, (method, options) in variants.items():
        out = RUNS / f"vit-digits-{method}"
        shutil.rmtree(out, ignore_errors=True)
        results[name] = af.compress(base, method, out, device="cpu", **options)
        results[name]["run"] = out
    models = {"unchanged": catalog.load_run(base)}
    models.update({name: catalog.load_run(r["run"]) for name, r in results.items()})
    x = torch.randint(0, 256, (1, args.length), generator=torch.Generator().manual_seed(0))
    images = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    runners = {}
    for name, (model, config) in models.items():
        twin = long_twin(config["model"], args.length)
        runners[f"{name} L{args.length}"] = (lambda m: lambda: m(x))(twin)
        runners[f"{name} digits"] = (lambda m: lambda: m(images))(model)
    with torch.no_grad():
        times = interleaved(runners, rounds=args.rounds, warmup=1)
    rows = {}
    for name in models:
        row = {"long_ms": 1e3 * median(times[f"{name} L{args.length}"]), "digits_ms": 1e3 * median(times[f"{name} digits"])}
        if name != "unchanged":
            r = results[name]
            row.update({
                "speedup_long": paired_ratio(times[f"{name} L{args.length}"], times[f"unchanged L{args.length}"]),
                "speedup_digits": paired_ratio(times[f"{name} digits"], times["unchanged digits"]),
                "accuracy": r["after"]["accuracy"], "accuracy_full": r["before"]["accuracy"],
                "quality_kept": r["after"]["accuracy"] / r["before"]["accuracy"],
                "parameters": r["after"]["parameters"], "parameters_full": r["before"]["parameters"]})
        rows[name] = row
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    report = {"suite": "compress", "machine": machine(), "length": args.length, "rounds": args.rounds,
              "rows": rows, "seconds": time.time() - start}
    save_json(report, RESULTS / "compress.json")
    print(f"wrote {RESULTS / 'compress.json'} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
