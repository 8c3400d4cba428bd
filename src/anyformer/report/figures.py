"""Matplotlib figures of a comparison: quality against cost with the Pareto front, and
learning curves. Returned as PNG bytes (Agg backend, no display needed)."""
from __future__ import annotations

import io
import math
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def quality_vs_cost(rows: list[dict[str, Any]], cost_key: str, flag: str, xlabel: str) -> bytes | None:
    pts = [r for r in rows if r.get(cost_key) and not math.isnan(r["quality"])]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in pts:
        on = r.get(flag)
        ax.scatter(r[cost_key], r["quality"], s=60 if on else 30, c="tab:red" if on else "tab:blue", zorder=3)
        ax.annotate(r["model"], (r[cost_key], r["quality"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = sorted((r for r in pts if r.get(flag)), key=lambda r: r[cost_key])
    if len(front) > 1:
        ax.plot([r[cost_key] for r in front], [r["quality"] for r in front], "--", c="tab:red", label="Pareto front", zorder=2)
        ax.legend(loc="lower right")
    ax.set_xscale("log")
    # Plain numbers on the log axis ("4.6", "5e+03"), not 4.6x10^0 mantissa labels.
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"test {pts[0]['metric']}")
    ax.grid(True, which="both", alpha=0.3)
    return _png(fig)


def learning_curves(curves: dict[str, list[dict[str, Any]]], metric: str) -> bytes | None:
    if not curves:
        return None
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(12.5, 4.4))
    # One colour and marker per model, the same in both panels (tab20: no repeats up to 20).
    colours = plt.get_cmap("tab20").colors
    markers = "os^vDP*Xhp"
    for i, (name, records) in enumerate(curves.items()):
        style = dict(color=colours[i % len(colours)], label=name)
        train = [(m["step"], m["loss"]) for m in records if "split" not in m and "loss" in m]
        val = [(m["step"], m[metric]) for m in records if m.get("split") == "val" and metric in m]
        if train:
            ax_loss.plot(*zip(*train), **style)
        if val:
            ax_val.plot(*zip(*val), marker=markers[i % len(markers)], ms=3, **style)
    ax_loss.set_title("training loss")
    ax_loss.set_yscale("log")
    ax_val.set_title(f"val {metric}")
    for ax in (ax_loss, ax_val):
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    handles, labels = ax_val.get_legend_handles_labels() if ax_val.lines else ax_loss.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
