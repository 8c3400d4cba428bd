"""Generate docs/token_filter.md and docs/figures/token_filter.png: quality and latency against
the share of tokens a learned token filter keeps ("Predicting Token Impact Towards Efficient
Vision Transformer", Wang et al. 2023), on two image tasks and a sequence task.

Run as `.venv/bin/python docs/token_filter.py` (a few minutes on 2 CPUs; Fashion-MNIST needs
`apt-get install dataset-fashion-mnist`). It trains small models (ViT on the digits in 1x1
patches: 64 tokens; ViT on Fashion-MNIST in 4x4 patches: 49 tokens; a Transformer on a text CSV
this script writes, 50..130 word tokens, padded, whose label only two keywords tell), then for each share kept runs `anyformer.compress` with
method token-filter, without and with a short fine-tune. Quality is each task's test accuracy;
latency the fastest of 30 calls on one test batch of 128 on one thread, the full and the filtered model timed in turn. As a baseline,
the same filter with its MLP left untrained (random scores) shows what the learned ranking adds.
"""
from __future__ import annotations

import csv
import json
import random
import shutil
import sys
import time
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from anyformer import catalog  # noqa: E402
from anyformer.compress import compress  # noqa: E402
from anyformer.tasks.evaluation import evaluate  # noqa: E402
from anyformer.train import train  # noqa: E402
from anyformer.train.config import run_config  # noqa: E402

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".token_filter_runs"
COMMAND = ".venv/bin/python docs/token_filter.py"
KEEPS = (1.0, 0.75, 0.5, 0.3, 0.15)
FINETUNE = {"finetune_steps": 150, "finetune_lr": 3e-4}
SMALL = {"model.dim": 64, "model.depth": 2, "model.heads": 4, "train.eval_batch_size": 128, "train.progress": False}
TOPICS = WORK / "topics.csv"


def write_topics(path: Path, rows: int = 4000, seed: int = 0) -> Path:
    """A text CSV: 48..128 filler words with two keywords of the label's topic (of 4) at
    random places; only those two words of each text tell its label."""
    rng = random.Random(seed)
    filler = [f"w{i:03d}" for i in range(300)]
    keywords = [[f"topic{c}_{i}" for i in range(8)] for c in range(4)]
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["text", "label"])
        for _ in range(rows):
            label = rng.randrange(4)
            words = [rng.choice(filler) for _ in range(rng.randint(48, 128))]
            for _ in range(2):
                words.insert(rng.randrange(len(words) + 1), rng.choice(keywords[label]))
            out.writerow([" ".join(words), f"topic{label}"])
    return path


MODELS = {
    "vit on digits (64 tokens)": ({"model": "vit", "task": "digits"},
                                  {**SMALL, "model.encoder.patch_size": 1, "train.steps": 1500, "train.max_time": 60}),
    "vit on fashion-mnist (49 tokens)": ({"model": "vit", "task": "fashion-mnist"},
                                         {**SMALL, "model.encoder.patch_size": 4, "train.steps": 1500, "train.max_time": 90,
                                          "train.eval_every": 500}),
    "transformer on topic texts (50..130 tokens)": ({"model": "transformer", "task": {"name": "text-csv", "path": str(TOPICS),
                                                                                      "tokenizer": "words", "max_len": 130}},
                                                   {**SMALL, "train.steps": 800, "train.max_time": 60, "train.lr": 1e-3}),
}


def trained(name: str, config: dict, overrides: dict) -> Path:
    out = WORK / name.split(" (")[0].replace(" ", "-")
    if not (out / "summary.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        train(run_config(config, overrides), out)
    return out


def untrained_filter(out: Path) -> float:
    """Test accuracy of the filtered run with its MLP re-drawn at random (random scores)."""
    model, config = catalog.load_run(out)
    torch.manual_seed(0)
    for layer in model.token_filter.net:
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    task = catalog.build_task(config["task"])
    return evaluate(model, task, "test", 128, torch.device("cpu"), "fp32")["accuracy"]


@torch.no_grad()
def latencies(full: Path, filtered: Path, repeats: int = 30) -> tuple[float, float]:
    """(full, filtered) ms of one test batch of 128 on one thread: the fastest of `repeats`
    calls each, the two models called in turn, so both see the same load of a shared machine."""
    models = [catalog.load_run(run)[0] for run in (full, filtered)]
    config = catalog.load_run(full)[1]
    batch = catalog.build_task(config["task"]).splits()["test"].batch(torch.arange(128))
    kwargs = {"mask": batch.mask} if batch.mask is not None else {}
    best = [float("inf"), float("inf")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: what other work on a shared machine disturbs least
    try:
        for _ in range(repeats):
            for i, model in enumerate(models):
                start = time.perf_counter()
                model(batch.inputs, **kwargs)
                best[i] = min(best[i], (time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(threads)
    return best[0], best[1]


def compressed(run: Path, out: Path, **options) -> dict:
    """compress's result, from out/compress.json when an earlier run of this script wrote it."""
    if not (out / "compress.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        compress(run, "token-filter", out, device="cpu", **options)
    return json.loads((out / "compress.json").read_text())


def curve(name: str, run: Path) -> list[dict]:
    rows = []
    for keep in KEEPS:
        out = WORK / f"{run.name}-keep{keep}"
        result = compressed(run, out, keep=keep)
        before, after, notes = result["before"], result["after"], result["notes"]
        tuned = compressed(run, WORK / f"{run.name}-keep{keep}_ft", keep=keep, **FINETUNE)["after"] if keep < 1 else after
        full_ms, ms = latencies(run, out)
        rows.append({"model": name, "keep": keep, "accuracy": after["accuracy"], "accuracy_ft": tuned["accuracy"],
                     "accuracy_full": before["accuracy"], "latency_ms": ms, "latency_full_ms": full_ms,
                     "kept_share": notes["kept_share"], "masking": notes["masking"],
                     "spearman": notes["filter"]["held_out"]["spearman"],
                     "top_recall": notes["filter"]["held_out"].get("top_recall", 1.0),
                     "random": untrained_filter(out) if keep < 1 else after["accuracy"]})
        r = rows[-1]
        print(f"{name} keep={keep}: accuracy {r['accuracy']:.4f} / fine-tuned {r['accuracy_ft']:.4f} / untrained filter "
              f"{r['random']:.4f} (full {r['accuracy_full']:.4f}); {r['latency_ms']:.1f} ms (full {r['latency_full_ms']:.1f})",
              flush=True)
    return rows


def main() -> None:
    WORK.mkdir(exist_ok=True)
    if not TOPICS.exists():
        write_topics(TOPICS)
    rows = [r for name, (config, overrides) in MODELS.items() for r in curve(name, trained(name, config, overrides))]
    figure(rows)
    write_table(rows)


def figure(rows: list[dict]) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, name in enumerate(dict.fromkeys(r["model"] for r in rows)):
        part = [r for r in rows if r["model"] == name]
        color = f"C{i}"
        keep = [r["keep"] for r in part]
        left.plot(keep, [r["accuracy_ft"] for r in part], marker="o", color=color, label=f"{name}, fine-tuned")
        left.plot(keep, [r["accuracy"] for r in part], marker="o", color=color, linestyle="--", label=f"{name}, no fine-tune")
        left.plot(keep, [r["random"] for r in part], marker="x", color=color, linestyle=":", label=f"{name}, untrained filter")
        right.plot(keep, [r["latency_ms"] / r["latency_full_ms"] for r in part], marker="o", color=color, label=name)
    right.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="proportional to tokens")
    left.set(xlabel="share of tokens kept", ylabel="test accuracy", title="quality")
    right.set(xlabel="share of tokens kept", ylabel="latency (after / before)", title="latency of a test batch of 128 (1 thread, fastest of 30)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.invert_xaxis()
    left.legend(fontsize=6)
    right.legend(fontsize=7)
    fig.tight_layout()
    (ROOT / "figures").mkdir(exist_ok=True)
    fig.savefig(ROOT / "figures" / "token_filter.png", dpi=120)


def write_table(rows: list[dict]) -> None:
    lines = ["# Token filtering by predicted token impact", "",
             f"Generated by `{COMMAND}` (training and compression on {torch.get_num_threads()} CPU threads, latency on 1). `anyformer compress RUN --method "
             "token-filter --keep F [--finetune-steps N]`: each token's importance is the loss increase when it alone is "
             f"masked ({rows[0]['masking']}) on 8 calibration batches of training data, an MLP learns to predict it from the "
             "token (after input positions), and the model keeps the share F of each sample's tokens it scores highest "
             "([CLS] always) before its first layer. 'fine-tuned': then "
             f"{FINETUNE['finetune_steps']} AdamW steps (lr {FINETUNE['finetune_lr']}) on the calibration batches, filter in place. "
             "'untrained filter': the same model with the MLP re-drawn at random, no fine-tune. "
             "keep 1 is the model itself (nothing filtered, not fine-tuned).", "",
             "![accuracy and latency against the share of tokens kept](figures/token_filter.png)", "",
             "| model | keep | tokens kept | accuracy | fine-tuned | untrained filter | full model | latency ms | full ms | "
             "filter rank corr. | top-k recall |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['keep']:.2f} | {r['kept_share']:.3f} | {r['accuracy']:.4f} | {r['accuracy_ft']:.4f} | "
                     f"{r['random']:.4f} | {r['accuracy_full']:.4f} | {r['latency_ms']:.1f} | {r['latency_full_ms']:.1f} | "
                     f"{r['spearman']:.3f} | {r['top_recall']:.3f} |")
    lines += ["", "'filter rank corr.': Spearman correlation between the filter's predicted and the measured importance on a "
              "held-out calibration batch; 'top-k recall': the share of each held-out sample's truly most important "
              "ceil(keep * n) tokens the filter also keeps (chance: about keep). Both are measured against single-sample "
              "importances, which are noisy (one removal moves one sample's loss a little); the filter predicts their "
              "expectation given the token, so both stay low even where its ranking is what keeps the accuracy: compare "
              "the 'untrained filter' column.", "", "## What it shows", ""]
    for name in dict.fromkeys(r["model"] for r in rows):
        part = {r["keep"]: r for r in rows if r["model"] == name}
        half = part[0.5]
        lines.append(f"- {name}: keeping half the tokens, accuracy {half['accuracy_full']:.4f} -> {half['accuracy']:.4f} "
                     f"({half['accuracy_ft']:.4f} fine-tuned, {half['random']:.4f} with an untrained filter) at "
                     f"{half['latency_ms'] / half['latency_full_ms']:.2f}x the latency.")
    lines += ["", "The filter acts once, before the first layer, so every layer (attention and FFN alike) runs on the kept "
              "tokens: latency falls roughly in proportion to the tokens kept, less the filter's own MLP and sort, which "
              "weigh more the smaller the model. Latencies are the fastest of 30 single-thread calls on a shared 2-core CPU.", "",
              "Differences from the paper: the MLP regresses the measured loss increase (mean squared error) instead of "
              "classifying tokens labelled relevant above a loss-change threshold; a token is masked through the key mask "
              "(its exact removal) rather than replaced by zeros; 8 calibration batches stand in for the training set; "
              "the fine-tune is a few steps on those batches."]
    (ROOT / "token_filter.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
