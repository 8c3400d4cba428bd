"""Generate docs/attention_dynamics.md and docs/figures/attention_dynamics.png: the scan and
snap of a 1-layer Transformer's attention ("Scan and Snap: Understanding Training Dynamics
and Token Composition in 1-layer Transformer", Tian et al. 2023) on the `scan-snap` task.

Run as `.venv/bin/python docs/attention_dynamics.py [--seeds 5]` (about 6 minutes on one CPU
thread). It trains configs/scan-snap.yaml (`train.track: [attention]`) over several seeds,
and variants of it, then reads the attention records of each run's metrics.jsonl: the mass
the query (the last token, which the head reads) puts on the distinct tokens of its class
and on the common tokens, the attention entropy and the top-1 weight, per evaluation.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from anyformer import catalog, rundir  # noqa: E402
from anyformer.train import train  # noqa: E402
from anyformer.train.config import run_config  # noqa: E402

ROOT = Path(__file__).resolve().parent
CONFIG = ROOT.parent / "configs" / "scan-snap.yaml"
WORK = ROOT / ".attention_runs"
COMMAND = ".venv/bin/python docs/attention_dynamics.py"
# name -> (overrides of configs/scan-snap.yaml, what it changes)
CONDITIONS = {
    "paper setting": ({}, "configs/scan-snap.yaml as it is"),
    "skewed distinct": ({"task.distinct_skew": 1.0}, "distinct tokens Zipf-distributed (exponent 1)"),
    "constant lr": ({"train.schedule": "constant"}, "no cosine decay of the learning rate"),
    "learned positions": ({"position": "learned"}, "a learned positional embedding (breaks assumption a)"),
    "short sequences": ({"task.length": 6}, "5 contextual tokens instead of 31 (breaks assumption b)"),
    "read at token 0": ({"head": "cls"}, "the head reads the first token instead of the query (no [CLS] token: "
                        "the first contextual token), as the single-layer preset's 'cls' head would"),
}


def run(name: str, overrides: dict, seed: int) -> Path:
    out = WORK / f"{name.replace(' ', '-')}-{seed}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = run_config(str(CONFIG), {**overrides, "train.seed": seed, "train.eval_every": 10,
                                   "train.progress": False, "train.device": "cpu"})
    train(cfg, out)
    return out


def curves(out: Path) -> dict[str, list[float]]:
    """step, and per statistic its value at each attention record (layer 0)."""
    rec = [r for r in rundir.read_metrics(out) if r.get("split") == "attention"]
    c: dict[str, list[float]] = {"step": [r["step"] for r in rec]}
    for key in ("entropy", "top1"):
        c[key] = [r["layers"][0][key] for r in rec]
        c["last " + key] = [r["layers"][0]["last_query"][key] for r in rec]
    for g in rec[0]["layers"][0]["groups"]:
        c[g] = [r["layers"][0]["groups"][g] for r in rec]
        c["share:" + g] = [r["layers"][0]["group_share"][g] for r in rec]
    summary = rundir.read_json(out / "summary.json")
    c["accuracy"] = [summary["final"]["test"]["accuracy"]]
    return c


def first_step(c: dict[str, list[float]], fraction: float) -> float:
    """The first step at which the distinct mass has covered `fraction` of its rise."""
    d = c["distinct"]
    target = d[0] + fraction * (d[-1] - d[0])
    return next(s for s, v in zip(c["step"], d) if v >= target)


def measures(c: dict[str, list[float]]) -> dict[str, float]:
    half = c["step"][-1] / 2
    late = [v for s, v in zip(c["step"], c["distinct"]) if s >= half]
    m = {"uniform share": c["share:distinct"][0], "distinct at 0": c["distinct"][0], "distinct at end": c["distinct"][-1],
         "common at end": c["common"][-1], "step 50% rise": first_step(c, 0.5), "step 90% rise": first_step(c, 0.9),
         "late drift": max(late) - min(late), "entropy, all queries, at 0": c["entropy"][0],
         "entropy, all queries, at end": c["entropy"][-1], "query entropy at 0": c["last entropy"][0],
         "query entropy at end": c["last entropy"][-1], "query top-1 at end": c["last top1"][-1],
         "test accuracy": c["accuracy"][0]}
    if "frequent" in c:
        per = lambda g, i: c[g][i] / max(c["share:" + g][i], 1e-9)  # noqa: E731
        i_half = c["step"].index(first_step(c, 0.5))
        m["frequent/rare at 0"] = per("frequent", 0) / per("rare", 0)
        m["frequent/rare at 50%"] = per("frequent", i_half) / per("rare", i_half)
        m["frequent/rare at end"] = per("frequent", -1) / per("rare", -1)
    return m


def fmt(values: list[float]) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    digits = 0 if abs(mean) >= 20 else 3
    return f"{mean:.{digits}f} ± {sd:.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def band(ax, runs: list[dict[str, list[float]]], key: str, colour: str, label: str, scale: str | None = None) -> None:
    steps = runs[0]["step"]
    values = [[v / (r["share:" + scale][i] if scale else 1.0) for i, v in enumerate(r[key])] for r in runs]
    mean = [statistics.fmean(col) for col in zip(*values)]
    ax.fill_between(steps, [min(col) for col in zip(*values)], [max(col) for col in zip(*values)], color=colour, alpha=0.2, lw=0)
    ax.plot(steps, mean, color=colour, label=label)


def figure(results: dict[str, list[dict[str, list[float]]]], path: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(12.5, 8.4))
    main = results["paper setting"]
    ax = axes[0, 0]
    for g, colour in (("distinct", "#d62728"), ("common", "#1f77b4"), ("query", "#2ca02c")):
        band(ax, main, g, colour, g)
        ax.axhline(main[0]["share:" + g][0], color=colour, ls=":", lw=1)
    ax.set_ylim(0, 1)
    ax.set_title(f"(a) query's attention mass, paper setting ({len(main)} seeds; dotted: uniform)", fontsize=9)
    ax = axes[0, 1]
    band(ax, main, "last entropy", "#9467bd", "query entropy (nats)")
    band(ax, main, "entropy", "#c5b0d5", "entropy, mean over all queries")
    ax2 = ax.twinx()
    band(ax2, main, "last top1", "#ff7f0e", "query top-1 weight")
    ax2.set_ylim(0, 1)
    ax.set_title("(b) entropy (left) and top-1 weight (right) of the query", fontsize=9)
    ax.legend(loc="center right", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    ax = axes[1, 0]
    skew = results["skewed distinct"]
    band(ax, skew, "frequent", "#d62728", "most frequent distinct token", scale="frequent")
    band(ax, skew, "rare", "#1f77b4", "rarest distinct token", scale="rare")
    band(ax, skew, "common", "#7f7f7f", "common tokens", scale="common")
    ax.axhline(1.0, color="#444", ls=":", lw=1)
    ax.set_title("(c) skewed distinct tokens: mass / share of the keys (1 = uniform)", fontsize=9)
    ax = axes[1, 1]
    for (name, runs), colour in zip(results.items(), ["#d62728", "#9467bd", "#2ca02c", "#ff7f0e", "#1f77b4", "#7f7f7f"]):
        band(ax, runs, "distinct", colour, name)
    ax.set_ylim(0, 1)
    ax.set_title("(d) mass on the distinct tokens, every condition", fontsize=9)
    for ax in axes.flat:
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    for ax in (axes[0, 0], axes[1, 0], axes[1, 1]):
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: dict[str, list[dict[str, list[float]]]]) -> str:
    rows = {name: [measures(c) for c in runs] for name, runs in results.items()}
    keys = list(dict.fromkeys(k for ms in rows.values() for m in ms for k in m))
    lines = ["| measure | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(fmt([m[k] for m in ms]) if k in ms[0] else "" for ms in rows.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the paper setting (3 for each variant)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for name, (overrides, _) in CONDITIONS.items():
        seeds = range(args.seeds if name == "paper setting" else min(args.seeds, 3))
        results[name] = [curves(run(name, overrides, s)) for s in seeds]
    figure(results, ROOT / "figures" / "attention_dynamics.png")
    text = (ROOT / "attention_dynamics.template.md").read_text()
    task = catalog.build_task(run_config(str(CONFIG)).task)
    val = task.splits()["val"].inputs[:64, :-1]
    per_sequence = (val < task.first_common).sum(-1).float()
    present = per_sequence[per_sequence > 0]
    conditions = "\n".join(f"- **{name}**: {what}; {len(results[name])} seeds." for name, (_, what) in CONDITIONS.items())
    (ROOT / "attention_dynamics.md").write_text(text.format(
        command=COMMAND, conditions=conditions, table=table(results), distinct_per_sequence=f"{float(present.mean()):.1f}",
        without_distinct=int((per_sequence == 0).sum()), uniform_top1=f"{float((1 / present).mean()):.2f}"))
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
