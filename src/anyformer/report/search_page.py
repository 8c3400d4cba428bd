"""The report page of a search: `search.html` in the search directory, self-contained like
the comparison's (plotly.js and every figure inlined): the Pareto front's table with each
trial's runnable config, the hypervolume, and the search engine's own figures (Pareto front,
parameter importances, history), interactive and again as PNG files beside it. Rows and
figures in, a file out: the search package makes them."""
from __future__ import annotations

import base64
import datetime as _dt
from html import escape
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from anyformer.report import interactive, page
from anyformer.rundir import atomic_write_text

# The table's columns: (header, row key, format).
COLUMNS = [("trial", "number", "{}"), ("state", "state", "{}"), ("quality (val)", "quality", "{:.4f}"),
           ("test", "test", "{:.4f}"), ("latency ms", "latency_ms", "{:.3f}"), ("params", "params", "{:,.0f}"),
           ("memory MiB", "memory_mb", "{:.2f}"), ("size MiB", "size_mb", "{:.3f}"), ("steps", "steps", "{}"),
           ("design", "design", "{}"), ("config", "config", "{}")]


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None or value == "":
        return "<td></td>"
    if key == "config":
        return f'<td><a href="{escape(str(value))}">{escape(str(value))}</a></td>'
    try:
        text = fmt.format(value)
    except (ValueError, TypeError):
        text = str(value)
    return f"<td>{escape(text)}</td>"


def table(rows: list[dict[str, Any]], table_id: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h, _, _ in COLUMNS)
    body = "".join(f'<tr class="{"recommended" if r.get("pareto") else ""}">'
                   + "".join(_cell(r, k, f) for _, k, f in COLUMNS) + "</tr>" for r in rows)
    return f'<div class="scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def figure_div(fig: go.Figure, div_id: str, height: int = 460) -> str:
    return interactive._div(fig, div_id, height)


def write_search_report(out: Path, summary: dict[str, Any], rows: list[dict[str, Any]], front: list[dict[str, Any]],
                        divs: dict[str, str | None], pngs: dict[str, bytes | None]) -> Path:
    """out/search.html; `summary`: the search's settings and counts (search_results.json),
    `divs`: plotly figures as HTML, `pngs`: their static copies by file name."""
    counts = summary["counts"]
    better = "higher" if summary["higher_is_better"] else "lower"
    items = [("task", summary["task"]), ("objectives", ", ".join(summary["directions_text"])),
             ("trials", f"{counts['finished']} finished ({counts['complete']} complete, {counts['pruned']} pruned), "
                        f"{counts['fail']} failed, {counts['running']} running"),
             ("sampler", summary["sampler"]), ("pruning", summary["pruning"]), ("storage", summary["storage"]),
             ("budget", summary["budget"]), ("latency", summary["timing"]),
             ("hypervolume", f"{summary['hypervolume']:.4f} (objectives normalised to [0, 1] over the complete "
                             f"trials, costs on a log scale; reference point {summary['reference']} in each)")]
    figures = "".join(f"<div>{d}</div>" for d in divs.values() if d)
    static = "".join(f'<figure><img alt="{escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                     f"<figcaption>{escape(name)}</figcaption></figure>" for name, png in pngs.items() if png)
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>anyformer search: {escape(str(summary['task']))}</title>
<style>{page.STYLE}</style>
<script>{interactive.plotly_js()}</script>
</head><body>
<h1>anyformer search: {escape(str(summary['task']))}</h1>
<p class="lede">{counts['finished']} trials over the space of {escape(str(summary['space_file']))}; quality is the
validation {escape(summary['metric'])} ({better} is better), the test split reported beside it and used for no
decision. Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}.</p>
<h2>Pareto front</h2>
{table(front, "front")}
<p class="note">Each trial's config runs as it is: <code>anyformer train CONFIG --out DIR</code> (a quantized
candidate's config ends in a <code>compress:</code> step).</p>
<h2>Figures</h2>
<div class="cols">{figures or '<p class="note">Too few complete trials for figures.</p>'}</div>
<h2>Every trial</h2>
{table(rows, "trials")}
<section><h2>Search</h2>{page.definition_list([(k, str(v)) for k, v in items])}</section>
{f'<details id="static"><summary>Static copies of the figures (PNG files beside this page)</summary>{static}</details>' if static else ''}
</body></html>
"""
    path = Path(out) / "search.html"
    atomic_write_text(path, html)
    return path
