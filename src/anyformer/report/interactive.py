"""The report's interactive figures (plotly), as HTML fragments that expect plotly.js to be
inlined once in the page. Names are shown on hover and in the legend, never as fixed
labels, so crowded points stay readable; clicking a legend entry hides that model."""
from __future__ import annotations

import html
import math
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline
from plotly.subplots import make_subplots

from anyformer.report import points as P
from anyformer.report.curves import Band

CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": False}
FONT = dict(family="system-ui, -apple-system, Segoe UI, sans-serif", size=13)


def plotly_js() -> str:
    """plotly.js itself, to inline in a <script>: the page must open with no network."""
    return plotly.offline.get_plotlyjs()


def _div(fig: go.Figure, div_id: str, height: int, bottom: int = 60) -> str:
    fig.update_layout(height=height, font=FONT, template="plotly_white", margin=dict(l=70, r=20, t=50, b=bottom),
                      hoverlabel=dict(align="left"))
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=CONFIG,
                       default_width="100%", default_height=f"{height}px")


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    return f"rgba({int(h[0:2], 16)}, {int(h[2:4], 16)}, {int(h[4:6], 16)}, {alpha})"


def _hover(text: str) -> str:
    """Plain lines as plotly hover markup, the first (the model's name) in bold."""
    first, *rest = [html.escape(line) for line in text.split("\n")]
    return "<br>".join([f"<b>{first}</b>", *rest])


def scatter(results: dict[str, Any], cost_key: str, colours: dict[str, str], div_id: str) -> str | None:
    """Quality against one cost: a point per model with its interval as error bars, the
    Pareto front dashed, the baseline as a horizontal line, the region that meets the
    constraints shaded, the recommended model drawn as a star."""
    f = P.frame(results, cost_key, colours)
    if f is None:
        return None
    pts, log, bases, xr, yr = f.points, f.log, f.baselines, f.x_range, f.y_range
    fig = go.Figure()
    for p in pts:
        symbol = "star" if p.recommended else ("circle-open" if not p.feasible else "circle")
        fig.add_trace(go.Scatter(
            x=[p.x], y=[p.y], mode="markers", name=p.model, legendgroup=p.model,
            marker=dict(color=p.colour, size=20 if p.recommended else 12, symbol=symbol,
                        line=dict(color="#222" if p.on_front else "white", width=2 if p.on_front else 1)),
            error_y=dict(type="data", symmetric=False, array=[p.y_err[1]], arrayminus=[p.y_err[0]],
                         color=p.colour, thickness=1.5, width=5) if p.y_err else None,
            error_x=dict(type="data", symmetric=False, array=[p.x_err[1]], arrayminus=[p.x_err[0]],
                         color=p.colour, thickness=1, width=3) if p.x_err else None,
            hovertext=[_hover(p.hover)], hoverinfo="text",
        ))
    line = P.front(pts)
    if len(line) > 1:
        fig.add_trace(go.Scatter(x=[p.x for p in line], y=[p.y for p in line], mode="lines", name="Pareto front",
                                 line=dict(color="#444", dash="dash", width=1.5), hoverinfo="skip"))
    for b in bases:
        label = html.escape(f"baseline {b['model']}: {P.fmt(b['quality'])}")
        side = P.off_axis(b["quality"], yr)
        if side is None:
            fig.add_hline(y=b["quality"], line=dict(color="#888", dash="dot", width=1.5),
                          annotation=dict(text=label, font=dict(size=11, color="#666")),
                          annotation_position="bottom left")
        else:
            arrow = "\u25bc" if side == "below" else "\u25b2"
            fig.add_annotation(text=f"{arrow} {label} ({side} this range)",
                               xref="paper", yref="paper", x=0.01, y=0.0 if side == "below" else 1.0,
                               xanchor="left", yanchor="bottom" if side == "below" else "top", showarrow=False,
                               font=dict(size=11, color="#666"))
    box = P.region(results, cost_key, xr, yr)
    if box:
        fig.add_shape(type="rect", x0=box[0], x1=box[1], y0=box[2], y1=box[3], layer="below", line_width=0,
                      fillcolor="rgba(46, 160, 67, 0.10)", name="meets the constraints", showlegend=True)
    title = f"quality vs {P.COSTS[cost_key][0]}"
    # Explicit ranges: the shaded region must not stretch the axes, and a log axis's range
    # is given in powers of ten.
    ticks = dict(tickvals=P.log_ticks(*xr), ticktext=[P.compact(t) for t in P.log_ticks(*xr)]) if log else {}
    fig.update_xaxes(title=P.axis_title(results, cost_key, log), type="log" if log else "linear",
                     range=[math.log10(xr[0]), math.log10(xr[1])] if log else list(xr), **ticks)
    fig.update_yaxes(title=P.quality_title(results), range=list(yr))
    # The legend goes under the plot: beside it, it would take a third of a half-width figure.
    fig.update_layout(title=dict(text=title, font=dict(size=15)),
                      legend=dict(itemclick="toggle", orientation="h", x=0, y=-0.22, yanchor="top"))
    return _div(fig, div_id, 540, bottom=150)


def _band_traces(fig: go.Figure, band: Band, name: str, colour: str, col: int, label: str, markers: bool,
                 legend: bool) -> None:
    if len(band) > 1 and any(hi > lo for lo, hi in zip(band.low, band.high)):
        fig.add_trace(go.Scatter(
            x=band.steps + band.steps[::-1], y=band.high + band.low[::-1], fill="toself", mode="lines",
            line=dict(width=0), fillcolor=_rgba(colour, 0.18), hoverinfo="skip", legendgroup=name,
            showlegend=False, name=f"{name} seed range"), row=1, col=col)
    text = [html.escape(f"{name}, step {s}: {label} {m:.4g}" + (f" (min {lo:.4g}, max {hi:.4g}, {n} seeds)" if n > 1 else ""))
            for s, m, lo, hi, n in zip(band.steps, band.mean, band.low, band.high, band.seeds)]
    # A model that logged a point or two still shows: markers whenever lines would be too short to see.
    few = len(band) <= 3
    single_spread = len(band) == 1 and band.high[0] > band.low[0]
    fig.add_trace(go.Scatter(
        x=band.steps, y=band.mean, mode="lines+markers" if (markers or few) else "lines", name=name,
        legendgroup=name, showlegend=legend, line=dict(color=colour, width=2),
        marker=dict(color=colour, size=7 if few else 5),
        error_y=dict(type="data", symmetric=False, array=[band.high[0] - band.mean[0]],
                     arrayminus=[band.mean[0] - band.low[0]], color=colour) if single_spread else None,
        hovertext=text, hoverinfo="text"), row=1, col=col)


def curves(bands: dict[str, tuple[Band, Band]], metric: str, colours: dict[str, str], div_id: str) -> str | None:
    """Training loss and validation metric per step, each model's mean across seeds with
    the min-max range of its seeds shaded."""
    if not bands:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss (mean, seed range shaded)",
                                                        f"validation {metric} (mean, seed range shaded)"))
    losses = []
    for name, (loss, val) in bands.items():
        colour = colours.get(name, "#1f77b4")
        if len(loss):
            _band_traces(fig, loss, name, colour, 1, "loss", markers=False, legend=True)
            losses += loss.low + loss.high
        if len(val):
            # Evaluations are few and each one matters: always drawn as markers.
            _band_traces(fig, val, name, colour, 2, metric, markers=True, legend=not len(loss))
    positive = [v for v in losses if v > 0]
    if positive and len(positive) == len(losses) and P.log_axis(positive):
        fig.update_yaxes(type="log", dtick="D2", row=1, col=1)  # minor labels at 2 and 5 only
    fig.update_xaxes(title="step")
    fig.update_layout(legend=dict(itemclick="toggle"))
    return _div(fig, div_id, 430)
