"""Attention dynamics figures: per layer, the attention entropy and top weights against the
training step, and the mass on a task's key groups (scan-snap's distinct and common tokens,
Tian et al. 2023), from the "attention" records `train.track: [attention]` writes into
metrics.jsonl. Several runs of one model (seeds) are drawn as the mean and the seed range."""
from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from anyformer import rundir  # noqa: E402
from anyformer.errors import DataError  # noqa: E402
from anyformer.report import page  # noqa: E402
from anyformer.report.curves import Band  # noqa: E402
from anyformer.report.figures import _draw_band, _png  # noqa: E402
from anyformer.report.results import num  # noqa: E402

ATTENTION_FILES = {"entropy": "attention_entropy.png", "top": "attention_top.png", "groups": "attention_groups.png"}
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]

# (layer, statistic) -> step -> value, one run.
Series = dict[tuple[int, str], dict[int, float]]


def attention_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("split") == "attention" and isinstance(r.get("step"), int) and isinstance(r.get("layers"), list)]


def run_series(records: list[dict[str, Any]]) -> Series:
    """One run's attention records -> (layer, statistic) -> {step: value}. Statistics:
    'entropy', 'top1', 'topk', and 'group:NAME' / 'share:NAME' for key groups."""
    out: Series = {}
    for rec in attention_records(records):
        for layer in rec["layers"]:
            if not isinstance(layer, dict) or not isinstance(layer.get("layer"), int):
                continue
            values = {k: layer.get(k) for k in ("entropy", "top1", "topk")}
            values.update({f"group:{g}": v for g, v in (layer.get("groups") or {}).items()})
            values.update({f"share:{g}": v for g, v in (layer.get("group_share") or {}).items()})
            for key, value in values.items():
                v = num(value)
                if v is not None:
                    out.setdefault((layer["layer"], key), {})[rec["step"]] = v  # a resumed step: the later one stands
    return out


def seed_band(runs: list[Series], key: tuple[int, str]) -> Band:
    """Mean and min-max over the runs that logged `key`, per step."""
    per_run = [r[key] for r in runs if key in r]
    band = Band([], [], [], [], [])
    for step in sorted({s for r in per_run for s in r}):
        values = [r[step] for r in per_run if step in r]
        band.steps.append(step)
        band.mean.append(sum(values) / len(values))
        band.low.append(min(values))
        band.high.append(max(values))
        band.seeds.append(len(values))
    return band


def _keys(runs: list[Series]) -> tuple[list[int], list[str]]:
    keys = {k for r in runs for k in r}
    return sorted({layer for layer, _ in keys}), sorted({s[len("group:"):] for _, s in keys if s.startswith("group:")})


def _finish(fig, axes, title: str) -> bytes:
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, framealpha=0.8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def entropy_figure(runs: list[Series], label: str = "") -> bytes | None:
    layers, _ = _keys(runs)
    if not layers:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, layer in enumerate(layers):
        band = seed_band(runs, (layer, "entropy"))
        if len(band):
            _draw_band(ax, band, COLOURS[i % len(COLOURS)], f"layer {layer}", None)
    ax.set_ylabel("attention entropy (nats)")
    return _finish(fig, [ax], f"{label + ': ' if label else ''}attention entropy per layer (mean over heads and queries"
                   + (f", {len(runs)} seeds: mean, range shaded)" if len(runs) > 1 else ")"))


def top_figure(runs: list[Series], label: str = "") -> bytes | None:
    layers, _ = _keys(runs)
    if not layers:
        return None
    fig, (ax1, axk) = plt.subplots(1, 2, figsize=(11.0, 4.0))
    for i, layer in enumerate(layers):
        colour = COLOURS[i % len(COLOURS)]
        for ax, stat in ((ax1, "top1"), (axk, "topk")):
            band = seed_band(runs, (layer, stat))
            if len(band):
                _draw_band(ax, band, colour, f"layer {layer}", None)
    ax1.set_ylabel("mean top-1 attention weight")
    axk.set_ylabel("mean top-k attention mass")
    return _finish(fig, [ax1, axk], f"{label + ': ' if label else ''}weight on the most attended tokens")


def groups_figure(runs: list[Series], label: str = "") -> bytes | None:
    """Per layer, the last query's attention mass on each key group against the step; the
    dotted line at each group's share of the keys is what uniform attention gives it."""
    layers, groups = _keys(runs)
    layers = [layer for layer in layers if any((layer, f"group:{g}") in r for r in runs for g in groups)]
    if not layers or not groups:
        return None
    fig, axes = plt.subplots(1, len(layers), figsize=(6.0 * len(layers), 4.0), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        for i, group in enumerate(groups):
            colour = COLOURS[i % len(COLOURS)]
            band = seed_band(runs, (layer, f"group:{group}"))
            if len(band):
                _draw_band(ax, band, colour, group, None)
            share = seed_band(runs, (layer, f"share:{group}"))
            if len(share):
                ax.axhline(sum(share.mean) / len(share), color=colour, ls=":", lw=1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("attention mass of the last query")
        ax.set_title(f"layer {layer} (dotted: uniform attention)", fontsize=9)
    return _finish(fig, list(axes[0]), f"{label + ': ' if label else ''}attention mass on each kind of key")


def attention_pngs(runs: list[list[dict[str, Any]]], label: str = "") -> dict[str, bytes | None]:
    """The figures of one model's runs (one metrics-record list per seed), keyed as
    ATTENTION_FILES; None for a figure with nothing to draw."""
    series = [s for s in (run_series(r) for r in runs) if s]
    return {"entropy": entropy_figure(series, label), "top": top_figure(series, label), "groups": groups_figure(series, label)}


def has_attention(runs: list[list[dict[str, Any]]]) -> bool:
    return any(attention_records(r) for r in runs)


def figures_html(pngs: dict[str, bytes | None], names: dict[str, str] = ATTENTION_FILES) -> str:
    return "".join(f'<figure><img alt="{escape(names[k])}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                   f"<figcaption>{escape(names[k])}</figcaption></figure>" for k, png in pngs.items() if png)


def is_run_dir(path: str | Path) -> bool:
    """A training run directory (metrics.jsonl, no compare results.json)."""
    path = Path(path)
    return (path / "metrics.jsonl").exists() and not (path / "results.json").exists()


def write_run_report(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, list[str]]:
    """`anyformer report RUN_DIR`: out/attention.html (figures inlined) and the figures as
    PNG files beside it (out defaults to the run directory) -> (page, PNG files written)."""
    run_dir = Path(run_dir)
    target = Path(out) if out is not None else run_dir
    try:
        records = rundir.read_metrics(run_dir)
    except ValueError as err:
        raise DataError(f"{run_dir / 'metrics.jsonl'} is not valid JSON lines ({err}); restore it or train the run again") from None
    if not attention_records(records):
        raise DataError(f"{run_dir / 'metrics.jsonl'} holds no attention records; train the run with --track attention "
                        "(or train.track: [attention] in its config) to plot its attention dynamics")
    pngs = attention_pngs([records])
    written = []
    for key, png in pngs.items():
        path = target / ATTENTION_FILES[key]
        if png is None:
            path.unlink(missing_ok=True)
        else:
            rundir.atomic_write_bytes(path, png)
            written.append(path.name)
    last = attention_records(records)[-1]
    table = "".join(f"<tr><td>{layer.get('layer')}</td><td>{escape(str(layer.get('mixer', '')))}</td>"
                    f"<td>{num(layer.get('entropy'))}</td><td>{num(layer.get('top1'))}</td><td>{num(layer.get('topk'))}</td>"
                    f"<td>{num((layer.get('last_query') or {}).get('entropy'))}</td><td>{num((layer.get('last_query') or {}).get('top1'))}</td>"
                    f"<td>{escape(json.dumps(layer.get('groups', {})))}</td></tr>" for layer in last["layers"])
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>anyformer attention: {escape(run_dir.name)}</title>
<style>{page.STYLE}</style></head><body>
<h1>Attention dynamics of {escape(str(run_dir))}</h1>
<p class="lede">Each layer's attention on the first validation examples, at step 0 and every evaluation:
entropy and top weights are means over heads and real queries, or those of the last real query (the token a
'last' head reads); group masses are the last query's, over the examples holding that group.</p>
<h2>At step {last['step']}</h2>
<table><thead><tr><th>layer</th><th>mixer</th><th>entropy</th><th>top-1</th><th>top-k</th><th>last query entropy</th><th>last query top-1</th><th>groups (last query)</th></tr></thead>
<tbody>{table}</tbody></table>
<h2>Over training</h2>
{figures_html(pngs)}
</body></html>
"""
    path = target / "attention.html"
    rundir.atomic_write_text(path, html)
    return path, written


def compare_section(out: str | Path, runs: dict[str, list[list[dict[str, Any]]]]) -> str:
    """For a comparison whose runs tracked attention: each such model's figures written as
    attention-<model>-<figure>.png in `out`, and the report's HTML section showing them
    ("" when no run tracked attention)."""
    parts = []
    for name, model_runs in runs.items():
        if not has_attention(model_runs):
            continue
        pngs = attention_pngs(model_runs, name)
        names = {k: f"attention-{rundir.slug(name)}-{Path(f).stem.split('_', 1)[1]}.png" for k, f in ATTENTION_FILES.items()}
        for key, png in pngs.items():
            if png is not None:
                rundir.atomic_write_bytes(Path(out) / names[key], png)
        parts.append(f"<h3>{escape(name)}</h3>{figures_html(pngs, names)}")
    if not parts:
        return ""
    return ("<h2>Attention dynamics</h2><p class=\"note\">Runs trained with train.track: [attention]: each layer's "
            "attention on fixed validation examples, mean over seeds with their range shaded.</p>" + "".join(parts))
