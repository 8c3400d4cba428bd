"""The results table of the HTML report. Each cell carries its raw value in `data-v` so the
page's script sorts numbers as numbers (missing values last); the flags column makes the
comparison's conclusions (recommended, tied with best, baseline, fronts, constraint
violations) and each row's warnings visible without reading results.json."""
from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

from anyformer.report import results as R

Cell = tuple[str, Any, str]  # (text shown, sort value, tooltip)


def _number(key: str, fmt: str, scale: float = 1.0) -> Callable[[dict[str, Any]], Cell]:
    def cell(row: dict[str, Any]) -> Cell:
        v = R.num(row.get(key))
        return ("-", None, "") if v is None else (fmt.format(v / scale), v, "")
    return cell


def _quality(row: dict[str, Any]) -> Cell:
    q = row.get("quality")
    if q is None:
        return "-", None, "no score: the model diverged or was not evaluated"
    iv = R.interval(row)
    if not iv:
        return f"{q:.4f}", q, ""
    half = max(q - iv[0], iv[1] - q)
    return f"{q:.4f} \u00b1 {half:.4f}", q, f"interval [{iv[0]:.4f}, {iv[1]:.4f}] over {R.seed_count(row)} seeds"


def _latency(row: dict[str, Any]) -> Cell:
    text, v, _ = _number("latency_ms", "{:.2f}")(row)
    iv = R.interval(row, "latency_ms")
    tip = f"interval [{iv[0]:.2f}, {iv[1]:.2f}] ms" if iv else ""
    if row.get("latency_batch"):
        tip = (tip + "; " if tip else "") + f"one forward pass on a batch of {row['latency_batch']}"
    return text, v, tip


def _steps(row: dict[str, Any]) -> Cell:
    steps = R.num(row.get("steps"))
    seeds = row.get("seeds") if isinstance(row.get("seeds"), list) else []
    planned = [R.num(s.get("planned_steps")) for s in seeds if isinstance(s, dict)]
    planned = [p for p in planned if p is not None]
    if steps is None:
        return "-", None, ""
    if planned and max(planned) != steps:
        return f"{int(steps)} of {int(max(planned))}", steps, "steps trained (mean over seeds) of the steps planned"
    return f"{int(steps)}", steps, ""


def _flags(row: dict[str, Any]) -> Cell:
    marks = R.flags(row)
    chips = " ".join(f'<span class="chip {escape(_chip_class(m))}">{escape(m)}</span>' for m in marks)
    return chips, " ".join(marks), ""


def _chip_class(mark: str) -> str:
    return {"recommended": "rec", "tied with best": "tie", "baseline": "base",
            "violates constraints": "bad"}.get(mark, "front" if mark.startswith("front") else "warn")


def columns(results: dict[str, Any]) -> list[tuple[str, str, Callable[[dict[str, Any]], Cell]]]:
    """(header, header tooltip, cell function) for every column worth showing."""
    metric = results["metric"]
    rows = results["rows"]
    method = results.get("interval_method")
    batches = sorted({r.get("latency_batch") for r in R.models(results) if r.get("latency_batch")})
    latency_tip = "median of repeated forward passes" + (f" on a batch of {batches[0]}" if len(batches) == 1 else "")
    cols = [
        ("model", "", lambda r: (escape(str(r["model"])), str(r["model"]).lower(), "")),
        ("flags", "what the comparison concluded about the row, then the row's own warnings", _flags),
        (f"test {metric}", f"mean over seeds \u00b1 half-width of the interval ({method})" if method else "", _quality),
    ]
    # The seed count is in the plan; a column only when models differ in it.
    if len({R.seed_count(r) for r in R.models(results)}) > 1:
        cols.append(("seeds", "", lambda r: (str(R.seed_count(r)), R.seed_count(r), "")))
    cols.append((f"val {metric}", "", _number("val", "{:.4f}")))
    if any(R.num(r.get("delta")) is not None for r in rows):
        ref = results.get("reference")
        cols.append((f"\u0394 vs {ref}" if ref else "\u0394",
                     f"mean test {metric} minus {ref}'s" if ref else "the row's delta as the comparison reports it",
                     _number("delta", "{:+.4f}")))
    cols += [
        ("params", "", _number("params", "{:,.0f}")),
        ("MFLOP", "forward pass, per sample", _number("flops_per_sample", "{:.2f}", 1e6)),
        ("latency ms", latency_tip, _latency),
    ]
    if len({r.get("latency_batch") for r in R.models(results)}) > 1:
        cols.append(("batch", "latency batch size", _number("latency_batch", "{:.0f}")))
    cols += [
        ("train step ms", "forward + backward, median", _number("train_step_ms", "{:.2f}")),
        ("peak MiB", "forward pass", _number("peak_memory_bytes", "{:.2f}", 2**20)),
        ("steps", "", _steps),
        ("train s", "", _number("train_seconds", "{:.0f}")),
    ]
    if any(r.get("source") for r in rows):
        cols.append(("source", "the compare directory the row comes from",
                     lambda r: (escape(str(r.get("source", ""))), str(r.get("source", "")), "")))
    return cols


def _row_class(row: dict[str, Any]) -> str:
    names = [("recommended", row.get("recommended")), ("tied", row.get("tied_with_best")),
             ("baseline", row.get("baseline")), ("infeasible", row.get("feasible") is False and not row.get("baseline")),
             ("front", row.get("pareto_latency") or row.get("pareto_params"))]
    return " ".join(n for n, on in names if on)


def html_table(results: dict[str, Any]) -> str:
    cols = columns(results)
    head = "".join(f'<th data-col="{i}" title="{escape(tip)}" tabindex="0">{escape(label)}</th>'
                   for i, (label, tip, _) in enumerate(cols))
    body = []
    for row in results["rows"]:
        cells = []
        for _, _, cell in cols:
            text, value, tip = cell(row)
            sort = "" if value is None else escape(str(value))
            cells.append(f'<td data-v="{sort}"' + (f' title="{escape(tip)}"' if tip else "") + f">{text}</td>")
        body.append(f'<tr class="{_row_class(row)}" data-model="{escape(str(row["model"]))}">{"".join(cells)}</tr>')
    return (f'<table id="results"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')
