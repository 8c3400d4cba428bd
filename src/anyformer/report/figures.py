"""Static copies of the report's figures (matplotlib, Agg backend: no display needed), saved
as PNG files beside report.html for slides and papers. They draw what the interactive
figures draw (points.py decides it once); names are placed as labels, moved off each
other when points crowd, since a static image has no hover."""
from __future__ import annotations

import io
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from anyformer.report import points as P  # noqa: E402
from anyformer.report.curves import Band  # noqa: E402

# Label positions tried around a point (offset in points), nearest first.
_OFFSETS = [(6, 6), (6, -12), (-6, 6), (-6, -12), (10, -3), (-10, -3), (0, 12), (0, -16), (14, 14), (-14, -18)]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _place_labels(ax, pts: list[P.Point]) -> None:
    """Greedy label placement: each name takes the first nearby position whose box overlaps
    no label already placed and no other marker, or the least crowded one."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    markers = [ax.transData.transform((p.x, p.y)) for p in pts]
    placed = []
    for i, p in enumerate(pts):
        best, best_cost = None, None
        for dx, dy in _OFFSETS:
            ann = ax.annotate(p.model, (p.x, p.y), textcoords="offset points", xytext=(dx, dy), fontsize=8,
                              ha="left" if dx >= 0 else "right", color="#222")
            box = ann.get_window_extent(renderer).expanded(1.05, 1.15)
            cost = sum(box.overlaps(b) for b in placed)
            cost += sum(box.contains(*m) for j, m in enumerate(markers) if j != i)
            cost += 0 if ax.bbox.contains(box.x0, box.y0) and ax.bbox.contains(box.x1, box.y1) else 2
            if best_cost is None or cost < best_cost:
                if best is not None:
                    best[0].remove()
                best, best_cost = (ann, box), cost
            else:
                ann.remove()
            if cost == 0:
                break
        placed.append(best[1])


def quality_vs_cost(results: dict[str, Any], cost_key: str, colours: dict[str, str]) -> bytes | None:
    f = P.frame(results, cost_key, colours)
    if f is None:
        return None
    pts, log, bases, xr, yr = f.points, f.log, f.baselines, f.x_range, f.y_range
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    for p in pts:
        err = dict(yerr=[[p.y_err[0]], [p.y_err[1]]] if p.y_err else None,
                   xerr=[[p.x_err[0]], [p.x_err[1]]] if p.x_err else None)
        ax.errorbar([p.x], [p.y], fmt="none", ecolor=p.colour, elinewidth=1.2, capsize=3, zorder=3, **err)
        ax.scatter([p.x], [p.y], s=220 if p.recommended else 55, marker="*" if p.recommended else "o",
                   facecolors="none" if not p.feasible else p.colour, edgecolors="#222" if p.on_front else p.colour,
                   linewidths=1.5 if p.on_front else 1, zorder=4)
    line = P.front(pts)
    if len(line) > 1:
        ax.plot([p.x for p in line], [p.y for p in line], "--", c="#444", lw=1, label="Pareto front", zorder=2)
    for b in bases:
        side = P.off_axis(b["quality"], yr)
        if side is None:
            ax.axhline(b["quality"], color="#888", ls=":", lw=1.5, zorder=1, label=f"baseline {b['model']}")
        else:
            arrow = "\u25bc" if side == "below" else "\u25b2"
            ax.annotate(f"{arrow} baseline {b['model']}: {P.fmt(b['quality'])} "
                        f"({side} this range)", (0.01, 0.01 if side == "below" else 0.99), xycoords="axes fraction",
                        va="bottom" if side == "below" else "top", fontsize=8, color="#666")
    box = P.region(results, cost_key, xr, yr)
    if box:
        ax.add_patch(Rectangle((box[0], box[2]), box[1] - box[0], box[3] - box[2], color="#2ea043", alpha=0.1,
                               zorder=0, label="meets the constraints"))
    if log:
        ax.set_xscale("log")
        # Compact labels at 1, 2 and 5 of each decade ("20k", "0.5"), not 10^x mantissas.
        ticks = P.log_ticks(*xr)
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FixedFormatter([P.compact(t) for t in ticks]))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlim(*xr)
    ax.set_ylim(*yr)
    ax.set_xlabel(P.axis_title(results, cost_key, log))
    ax.set_ylabel(P.quality_title(results))
    rec = next((p.model for p in pts if p.recommended), None)
    ax.set_title(f"quality vs {P.COSTS[cost_key][0]}" + (f"  (\u2605 recommended: {rec})" if rec else ""), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, framealpha=0.8)
    fig.tight_layout()
    _place_labels(ax, pts)
    return _png(fig)


def _draw_band(ax, band: Band, colour: str, name: str, marker: str | None) -> None:
    if len(band) > 1:
        ax.fill_between(band.steps, band.low, band.high, color=colour, alpha=0.18, lw=0)
    elif band.high[0] > band.low[0]:
        ax.errorbar(band.steps, band.mean, yerr=[[band.mean[0] - band.low[0]], [band.high[0] - band.mean[0]]],
                    fmt="none", ecolor=colour, capsize=3)
    few = len(band) <= 3
    ax.plot(band.steps, band.mean, color=colour, label=name, marker=marker or ("o" if few else None), ms=4 if marker else 6)


def learning_curves(bands: dict[str, tuple[Band, Band]], metric: str, colours: dict[str, str]) -> bytes | None:
    if not bands:
        return None
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(12.5, 4.4))
    losses = []
    for name, (loss, val) in bands.items():
        colour = colours.get(name, "#1f77b4")
        if len(loss):
            _draw_band(ax_loss, loss, colour, name, None)
            losses += loss.low + loss.high
        if len(val):
            _draw_band(ax_val, val, colour, name, "o")
    if losses and min(losses) > 0 and P.log_axis(losses):
        ax_loss.set_yscale("log")
    ax_loss.set_title("training loss (mean, seed range shaded)")
    ax_val.set_title(f"validation {metric} (mean, seed range shaded)")
    for ax in (ax_loss, ax_val):
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    legend = {}  # one entry per model, whichever panel it appears in
    for ax in (ax_loss, ax_val):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="center right", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    return _png(fig)
