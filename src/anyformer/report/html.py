"""The report of a comparison: one self-contained `report.html` (plotly.js and every figure
inlined, so it opens offline, mailed or archived on its own) and the figures again as PNG
files beside it. Rows in, files out: run directories are read by the caller
(compare.py, or report/sources.py for `anyformer report`)."""
from __future__ import annotations

import base64
import datetime as _dt
from html import escape
from pathlib import Path
from typing import Any

from anyformer.report import attention, interactive, page
from anyformer.report import results as R
from anyformer.report.curves import curve_bands
from anyformer.report.figures import learning_curves, quality_vs_cost
from anyformer.report.htmltable import html_table
from anyformer.rundir import atomic_write_bytes, atomic_write_text

FIGURE_FILES = {"latency": "quality_vs_latency.png", "params": "quality_vs_params.png", "curves": "learning_curves.png"}


def write_report(out: Path, results: dict[str, Any], curves: Any = None) -> Path:
    """Write `out/report.html` and the figures as PNG files beside it; returns the page's path.

    `results` is results.json's content (any older version of it); `curves` maps each model
    to one list of metrics records per seed (as rundir.read_metrics returns them), a single
    list standing for one seed."""
    out = Path(out)
    res = R.normalize(results)
    runs = R.per_seed(curves)
    names = [r["model"] for r in R.models(res)]
    colours = R.colours(names + [n for n in runs if n not in names])
    bands = curve_bands({n: runs[n] for n in names + [n for n in runs if n not in names] if n in runs}, res["metric"])
    pngs = {
        "latency": quality_vs_cost(res, "latency_ms", colours),
        "params": quality_vs_cost(res, "params", colours),
        "curves": learning_curves(bands, res["metric"], colours),
    }
    for key, png in pngs.items():
        path = out / FIGURE_FILES[key]
        if png is None:
            path.unlink(missing_ok=True)  # a figure from an earlier build would describe other rows
        else:
            atomic_write_bytes(path, png)
    divs = {
        "latency": interactive.scatter(res, "latency_ms", colours, "fig-latency"),
        "params": interactive.scatter(res, "params", colours, "fig-params"),
        "curves": interactive.curves(bands, res["metric"], colours, "fig-curves"),
    }
    path = out / "report.html"
    atomic_write_text(path, _page(res, divs, pngs, attention.compare_section(out, runs)))
    return path


def _static(pngs: dict[str, bytes | None]) -> str:
    figures = [f'<figure><img alt="{escape(FIGURE_FILES[k])}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
               f"<figcaption>{escape(FIGURE_FILES[k])}</figcaption></figure>" for k, png in pngs.items() if png]
    if not figures:
        return ""
    return ('<details id="static"><summary>Static copies of the figures (also saved as PNG files beside this page)'
            f"</summary>{''.join(figures)}</details>")


def _page(res: dict[str, Any], divs: dict[str, str | None], pngs: dict[str, bytes | None], attention_html: str = "") -> str:
    task = escape(str(res["task"]))
    metric = escape(res["metric"])
    n = len(R.models(res))
    scatter = "".join(f"<div>{d}</div>" for d in (divs["latency"], divs["params"]) if d)
    curves = divs["curves"] or '<p class="note">No learning curves: no metrics were logged for these runs.</p>'
    better = "higher" if res["higher_is_better"] else "lower"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>anyformer compare: {task}</title>
<style>{page.STYLE}</style>
<script>{interactive.plotly_js()}</script>
</head><body>
<h1>anyformer compare: {task}</h1>
<p class="lede">{n} models trained under one budget on <b>{task}</b>, ranked by test {metric} ({better} is better).
{escape(page.summary(res))} Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}.</p>
{page.recommendation_html(res)}
<h2>Results</h2>
<div class="tools"><input id="filter" type="search" placeholder="filter rows: model, flag (tied, front, ...)"
 aria-label="filter rows"><span id="shown"></span></div>
<div class="scroll">{html_table(res)}</div>
<p class="note">Click a column header to sort (again to reverse). Test {metric} is the mean over seeds, &plusmn; the
half-width of its interval (hover a value for the bounds). <i>tied with best</i>: not distinguishable from the
best model by the comparison's tie test. <i>front</i>: on the Pareto front of quality against that cost.</p>
<h2>Quality against cost</h2>
<p class="note">Hover a point for its details; click a legend entry to hide a model. Error bars are the
intervals; the dotted line is the trivial baseline; the green area meets the constraints; the star is the
recommended model.</p>
<div class="cols">{scatter or '<p class="note">No model has both a score and a cost.</p>'}</div>
<h2>Learning curves</h2>
{curves}
{attention_html}
<div class="cols">
<section><h2>Plan</h2>{page.definition_list(page.plan_items(res))}</section>
<section><h2>Environment</h2>{page.definition_list(page.environment_items(res))}</section>
</div>
{_static(pngs)}
<script>{page.SCRIPT}</script>
</body></html>
"""
