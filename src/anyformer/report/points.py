"""What the quality-vs-cost figures draw, decided once for the interactive and the static
version: the points with their intervals, the axis scale, the front, the shaded region and
each point's hover text."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from anyformer.report import results as R

COSTS = {
    "latency_ms": ("inference latency", "ms"),
    "params": ("parameters", ""),
}


@dataclass
class Point:
    model: str
    x: float
    y: float
    y_err: tuple[float, float] | None  # (below, above) the mean, from the quality interval
    x_err: tuple[float, float] | None  # (left, right), from the latency interval
    colour: str
    recommended: bool
    feasible: bool
    on_front: bool
    hover: str
    marks: list[str] = field(default_factory=list)


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def cost_text(key: str, value: float | None, batch: Any = None) -> str:
    if value is None:
        return "-"
    if key == "params":
        return f"{int(value):,} params"
    return f"{value:.2f} ms" + (f" (batch {batch})" if batch else "")


def quality_text(row: dict[str, Any], metric: str) -> str:
    q = row.get("quality")
    text = f"{metric} {fmt(q)}"
    iv = R.interval(row)
    if iv and q is not None:
        text += f" \u00b1 {fmt(max(q - iv[0], iv[1] - q))} [{fmt(iv[0])}, {fmt(iv[1])}]"
    return text + (f" over {R.seed_count(row)} seeds" if R.seed_count(row) > 1 else "")


def hover(row: dict[str, Any], metric: str) -> str:
    """Plain lines (joined with <br> by plotly, with newlines by matplotlib users)."""
    lines = [row["model"], quality_text(row, metric),
             cost_text("latency_ms", R.num(row.get("latency_ms")), row.get("latency_batch")),
             cost_text("params", R.num(row.get("params")))]
    marks = R.flags(row)
    if marks:
        lines.append("flags: " + ", ".join(marks))
    return "\n".join(lines)


def points(results: dict[str, Any], cost_key: str, colours: dict[str, str]) -> list[Point]:
    """One point per model with a score and a positive cost, in the rows' order."""
    metric = results["metric"]
    out = []
    for r in R.models(results):
        x, y = R.num(r.get(cost_key)), r.get("quality")
        if x is None or x <= 0 or y is None:
            continue
        iv = R.interval(r)
        xiv = R.interval(r, cost_key) if cost_key == "latency_ms" else None
        out.append(Point(
            model=r["model"], x=x, y=y,
            y_err=(max(0.0, y - iv[0]), max(0.0, iv[1] - y)) if iv else None,
            x_err=(max(0.0, x - xiv[0]), max(0.0, xiv[1] - x)) if xiv else None,
            colour=colours.get(r["model"], "#1f77b4"), recommended=bool(r.get("recommended")),
            feasible=r.get("feasible") is not False,
            on_front=bool(r.get("pareto_latency" if cost_key == "latency_ms" else "pareto_params")),
            hover=hover(r, metric), marks=R.flags(r),
        ))
    return out


def compact(v: float) -> str:
    """A tick label: "0.5", "20k", "1.5M"."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks at 1, 2 and 5 of each decade within [lo, hi]: enough to read a value off a
    log axis, few enough that the labels never run into each other."""
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        ticks += [m * 10.0**e for m in (1, 2, 5) if lo <= m * 10.0**e <= hi]
    return ticks


def log_axis(values: list[float]) -> bool:
    """A log axis only when the costs span more than one decade: below that a log scale
    squeezes the points together and hides how close they are."""
    pos = [v for v in values if v > 0]
    return bool(pos) and max(pos) / min(pos) > 10.0


def x_range(pts: list[Point], log: bool) -> tuple[float, float]:
    """Padded data range of the cost axis (in data units, also on a log axis)."""
    lo = min(p.x - (p.x_err[0] if p.x_err else 0.0) for p in pts)
    hi = max(p.x + (p.x_err[1] if p.x_err else 0.0) for p in pts)
    lo = lo if lo > 0 else min(p.x for p in pts)
    if log:
        pad = max(0.08, 0.08 * math.log10(hi / lo))
        return lo / 10**pad, hi * 10**pad
    span = (hi - lo) or abs(hi) or 1.0
    return max(lo - 0.1 * span, 0.0) if lo >= 0 else lo - 0.1 * span, hi + 0.1 * span


def y_range(pts: list[Point], extra: list[float]) -> tuple[float, float]:
    """Padded range of the quality axis, covering the error bars, and the baselines and
    bounds in `extra` when they lie near the models. One far off (a trivial baseline at
    chance level, say) would squeeze the models into a line and hide their intervals, so it
    is left off the axis and noted at the edge instead (see `off_axis`)."""
    values = [p.y - (p.y_err[0] if p.y_err else 0.0) for p in pts] + [p.y + (p.y_err[1] if p.y_err else 0.0) for p in pts]
    lo, hi = min(values), max(values)
    span = (hi - lo) or abs(hi) * 0.1 or 0.1
    near = [v for v in extra if lo - 2 * span <= v <= hi + 2 * span]
    lo, hi = min([lo, *near]), max([hi, *near])
    span = (hi - lo) or span
    return lo - 0.08 * span, hi + 0.08 * span


def off_axis(value: float, yr: tuple[float, float]) -> str | None:
    """"below" or "above" for a reference line outside the quality axis, else None."""
    return "below" if value < yr[0] else ("above" if value > yr[1] else None)


def region(results: dict[str, Any], cost_key: str, xr: tuple[float, float],
           yr: tuple[float, float]) -> tuple[float, float, float, float] | None:
    """(x0, x1, y0, y1) of the area that meets the constraints on this figure's two axes,
    clipped to the plotted ranges, or None when no constraint bears on them."""
    bounds = R.limits(results["constraints"], results["metric"])
    cost, quality = bounds.get(cost_key), bounds.get("quality")
    if cost is None and quality is None:
        return None
    x0, x1 = (cost or (None, None))
    y0, y1 = (quality or (None, None))
    box = (max(xr[0], x0) if x0 is not None else xr[0], min(xr[1], x1) if x1 is not None else xr[1],
           max(yr[0], y0) if y0 is not None else yr[0], min(yr[1], y1) if y1 is not None else yr[1])
    return box if box[0] < box[1] and box[2] < box[3] else None


def front(pts: list[Point]) -> list[Point]:
    """The points on the front, cheapest first, to draw the line through them."""
    return sorted((p for p in pts if p.on_front), key=lambda p: p.x)


def axis_title(results: dict[str, Any], cost_key: str, log: bool) -> str:
    name, unit = COSTS[cost_key]
    batches = {r.get("latency_batch") for r in R.models(results) if r.get("latency_batch")}
    if cost_key == "latency_ms":
        name += " per batch" + (f" of {batches.pop()}" if len(batches) == 1 else "")
    notes = ([unit] if unit else []) + (["log scale"] if log else [])
    return name + (f" ({', '.join(notes)})" if notes else "")


def quality_title(results: dict[str, Any]) -> str:
    better = "higher" if results["higher_is_better"] else "lower"
    return f"test {results['metric']} ({better} is better)"


@dataclass
class Frame:
    """What both renderings (plotly, matplotlib) of one quality-vs-cost figure draw."""

    points: list[Point]
    log: bool
    baselines: list[dict[str, Any]]
    x_range: tuple[float, float]
    y_range: tuple[float, float]


def frame(results: dict[str, Any], cost_key: str, colours: dict[str, str]) -> Frame | None:
    """The points, axes and baselines of quality against `cost_key`; None when no model has that cost."""
    pts = points(results, cost_key, colours)
    if not pts:
        return None
    log = log_axis([p.x for p in pts])
    bases = R.baselines(results)
    bounds = R.limits(results["constraints"], results["metric"]).get("quality", (None, None))
    yr = y_range(pts, [b["quality"] for b in bases] + [v for v in bounds if v is not None])
    return Frame(pts, log, bases, x_range(pts, log), yr)

