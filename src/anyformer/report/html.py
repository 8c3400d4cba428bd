"""A single self-contained HTML report (figures embedded as base64 PNG)."""
from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from pathlib import Path
from typing import Any

from anyformer.report.figures import learning_curves, quality_vs_cost
from anyformer.report.table import COLUMNS, _fmt
from anyformer.rundir import atomic_write_text


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def write_report(out: Path, rows: list[dict[str, Any]], task: str,
                 curves: dict[str, list[dict[str, Any]]] | None = None) -> Path:
    """`out/report.html` from the ranked rows and each model's metrics records (by model
    name: training loss and val metric per step, as in metrics.jsonl)."""
    metric = rows[0]["metric"] if rows else "quality"
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in COLUMNS) + "<th>Pareto</th>"
    body = []
    for r in rows:
        marks = ("latency " if r.get("pareto_latency") else "") + ("params" if r.get("pareto_params") else "")
        cells = "".join(f"<td>{html.escape(_fmt(k, f, r.get(k)))}</td>" for k, _, f in COLUMNS)
        cls = ' class="front"' if marks else ""
        body.append(f"<tr{cls}>{cells}<td>{marks.strip()}</td></tr>")
    figures = [
        _img(quality_vs_cost(rows, "latency_ms", "pareto_latency", "inference latency per batch (ms, log)"), "quality vs latency, Pareto front in red"),
        _img(quality_vs_cost(rows, "params", "pareto_params", "parameters (log)"), "quality vs parameters, Pareto front in red"),
        _img(learning_curves(curves or {}, metric), "learning curves"),
    ]
    best = next((r for r in rows if not math.isnan(r["quality"])), None)
    verdict = f"Best test {metric}: <b>{html.escape(best['model'])}</b> ({best['quality']:.4f})." if best else ""
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>anyformer compare: {html.escape(task)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 14px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
tr.front td {{ background: #fff3f0; }}
figure {{ display: inline-block; margin: 1em 1em 0 0; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>anyformer compare: {html.escape(task)}</h1>
<p>{len(rows)} models, trained under the same budget, ranked by test {html.escape(metric)}. {verdict}
Latency is one forward pass on a batch of test data; rows shaded are Pareto-optimal
(no other model is both better and cheaper). Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}.</p>
<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>
{''.join(figures)}
</body></html>
"""
    path = out / "report.html"
    atomic_write_text(path, page)
    return path
