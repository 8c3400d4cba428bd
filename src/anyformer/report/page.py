"""The report page's fixed parts: its style, the table's script (plain JS, no library: the
page is read offline) and the sections that state what was measured and how."""
from __future__ import annotations

from html import escape
from typing import Any

from anyformer.report import results as R

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1400px;
       padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6em; margin: 0 0 .2em; } h2 { font-size: 1.2em; margin: 1.6em 0 .5em; }
.lede { color: #57606a; margin: 0 0 1em; }
#recommendation { border-left: 5px solid #2ea043; background: #f0fff4; padding: .7em 1em; font-size: 1.1em; }
#recommendation.none { border-color: #bf8700; background: #fff8e5; }
#recommendation .reason { display: block; font-size: .85em; color: #57606a; margin-top: .2em; }
dl.plan { display: grid; grid-template-columns: max-content 1fr; gap: .15em 1.2em; margin: 0; font-size: 14px; }
dl.plan dt { color: #57606a; } dl.plan dd { margin: 0; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 1.5em; }
@media (max-width: 900px) { .cols { grid-template-columns: 1fr; } }
.tools { display: flex; align-items: center; gap: 1em; margin: .4em 0; }
#filter { font: inherit; padding: .3em .6em; width: 22em; border: 1px solid #d0d7de; border-radius: 6px; }
#shown { color: #57606a; font-size: 14px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13.5px; white-space: nowrap; }
th, td { border-bottom: 1px solid #d8dee4; padding: 4px 7px; text-align: right; }
th:nth-child(-n+2), td:nth-child(-n+2) { text-align: left; }
td:nth-child(2) { white-space: normal; min-width: 16em; max-width: 22em; }
th { cursor: pointer; user-select: none; background: #f6f8fa; position: sticky; top: 0; }
th:hover { background: #eaeef2; }
th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: .75em; }
th[aria-sort="descending"]::after { content: " \\25BC"; font-size: .75em; }
tr.recommended td { background: #f0fff4; font-weight: 600; }
tr.baseline td { color: #6e7781; font-style: italic; }
tr.infeasible td { color: #8c959f; }
td[title] { text-decoration: underline dotted #8c959f; }
.chip { display: inline-block; font-size: 11.5px; padding: 0 .5em; border-radius: 1em; margin: 1px 0;
        background: #eaeef2; color: #24292f; font-weight: normal; font-style: normal; }
.chip.rec { background: #2ea043; color: white; } .chip.tie { background: #ddf4ff; color: #0550ae; }
.chip.base { background: #eaeef2; } .chip.bad { background: #ffebe9; color: #a40e26; }
.chip.front { background: #fbefff; color: #8250df; } .chip.warn { background: #fff8c5; color: #7d4e00; }
figure { margin: 0; } figure img { max-width: 100%; } details { margin-top: 2em; }
.note { color: #57606a; font-size: 13px; }
"""

# Sorting keeps rows without a value last in either direction, and toggles on a second
# click; the filter keeps rows whose text holds every word typed (model names, flags).
SCRIPT = """
(function () {
  const table = document.getElementById("results");
  const body = table.tBodies[0];
  const heads = Array.from(table.tHead.rows[0].cells);
  let state = {col: -1, dir: 1};
  function key(td) {
    const v = td.dataset.v;
    if (v === undefined || v === "") return null;
    const n = Number(v);
    return Number.isNaN(n) ? v.toLowerCase() : n;
  }
  function sortBy(col) {
    const dir = state.col === col ? -state.dir : 1;
    const rows = Array.from(body.rows);
    rows.sort(function (a, b) {
      const x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === null || y === null) return (x === null) - (y === null);
      if (typeof x === "number" && typeof y === "number") return dir * (x - y);
      return dir * String(x).localeCompare(String(y));
    });
    rows.forEach(function (r) { body.appendChild(r); });
    heads.forEach(function (th) { th.removeAttribute("aria-sort"); });
    heads[col].setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    state = {col: col, dir: dir};
  }
  heads.forEach(function (th, col) {
    th.addEventListener("click", function () { sortBy(col); });
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(col); }
    });
  });
  const filter = document.getElementById("filter");
  const shown = document.getElementById("shown");
  function apply() {
    const words = filter.value.toLowerCase().split(/\\s+/).filter(Boolean);
    let n = 0;
    Array.from(body.rows).forEach(function (row) {
      const text = row.textContent.toLowerCase();
      const keep = words.every(function (w) { return text.includes(w); });
      row.hidden = !keep;
      n += keep ? 1 : 0;
    });
    shown.textContent = words.length ? n + " of " + body.rows.length + " rows" : body.rows.length + " rows";
  }
  filter.addEventListener("input", apply);
  apply();
})();
"""

# Keys shown in the plan under their own names; any other top-level setting is listed as-is.
_KNOWN = {"task", "metric", "higher_is_better", "rows", "seeds", "n_test", "test_unit", "n_test_units", "interval_method", "tie_test",
          "constraints", "optimize", "recommendation", "recommendation_reason", "environment", "sources", "reference"}


def _seeds(value: Any) -> str:
    if isinstance(value, list):
        return f"{len(value)} ({', '.join(str(s) for s in value)})"
    return str(value)


def _constraint_text(constraints: dict[str, Any]) -> str:
    # results.json lists every limit the comparison knows, null where none was set.
    set_ = {k: v for k, v in constraints.items() if v is not None}
    return ", ".join(f"{k} = {v}" for k, v in set_.items()) if set_ else "none"


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


def plan_items(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) pairs of how the comparison was run, missing ones left out."""
    rows = R.models(results)
    items = [("task", str(results["task"])),
             ("metric", f"test {results['metric']}, {'higher' if results['higher_is_better'] else 'lower'} is better")]
    if results.get("seeds") is not None:
        items.append(("seeds per model", _seeds(results["seeds"])))
    if results.get("n_test") is not None:
        items.append(("test set", R.describe_test_set(results)))
    if results.get("interval_method"):
        items.append(("interval", str(results["interval_method"])))
    if results.get("tie_test"):
        items.append(("tie test", str(results["tie_test"])))
    items.append(("constraints", _constraint_text(results["constraints"])))
    if results.get("reference"):
        items.append(("\u0394 is against", str(results["reference"])))
    if results.get("optimize"):
        items.append(("optimize", str(results["optimize"])))
    batches = sorted({r["latency_batch"] for r in rows if r.get("latency_batch")})
    items.append(("latency measured on", ("batches of " + ", ".join(str(b) for b in batches) + " test samples"
                                          + (" (per row in the table)" if len(batches) > 1 else "")
                                          if batches else "batch size not recorded")))
    steps = sorted({int(r["steps"]) for r in rows if R.num(r.get("steps")) is not None})
    if steps:
        items.append(("steps trained", str(steps[0]) if len(steps) == 1 else f"{steps[0]} to {steps[-1]} (per row)"))
    for src in results.get("sources") or []:
        # Settings the merged comparisons did not share, stated per directory.
        own = {k: v for k, v in src.items() if k not in ("dir", "recommendation")}
        items.append((f"from {src['dir']}", "; ".join(f"{k.replace('_', ' ')}: {_text(v)}" for k, v in own.items())
                      or "settings as above"))
    for key, value in results.items():
        if key not in _KNOWN and _scalar(value) and value is not None:
            items.append((key.replace("_", " "), str(value)))
    return items


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def summary(results: dict[str, Any]) -> str:
    """One sentence of the plan for the top of the page (the full plan is further down)."""
    parts = []
    if results.get("seeds") is not None:
        n = len(results["seeds"]) if isinstance(results["seeds"], list) else results["seeds"]
        parts.append(f"{n} seed{'s' if n != 1 else ''} per model")
    if results.get("interval_method"):
        parts.append(f"intervals: {results['interval_method']}")
    batches = sorted({r["latency_batch"] for r in R.models(results) if r.get("latency_batch")})
    if batches:
        parts.append("latency on batches of " + ", ".join(str(b) for b in batches))
    if _constraint_text(results["constraints"]) != "none":
        parts.append("constraints: " + _constraint_text(results["constraints"]))
    return ("; ".join(parts) + ".") if parts else ""


def environment_items(results: dict[str, Any]) -> list[tuple[str, str]]:
    env = results.get("environment")
    if isinstance(env, dict) and env:
        return [(str(k), _text(v)) for k, v in env.items()]
    if isinstance(env, str) and env:
        return [("environment", env)]
    return [("environment", "not recorded in results.json")]


def definition_list(items: list[tuple[str, str]]) -> str:
    return '<dl class="plan">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in items) + "</dl>"


def recommendation_html(results: dict[str, Any]) -> str:
    """The verdict, first thing on the page: the recommended model and why, or why none."""
    rec = results.get("recommendation")
    if rec:
        reason = f'<span class="reason">{escape(str(rec.get("reason") or ""))}</span>' if rec.get("reason") else ""
        return f'<section id="recommendation">Recommended: <b>{escape(str(rec["model"]))}</b>{reason}</section>'
    per_source = [s for s in results.get("sources") or [] if s.get("recommendation")]
    if per_source:
        parts = "; ".join(f"{escape(str(s['dir']))}: <b>{escape(str(s['recommendation']['model']))}</b>" for s in per_source)
        return (f'<section id="recommendation" class="none">Recommended within each comparison: {parts}.'
                '<span class="reason">The merged rows ran under separate plans, so no single model is recommended '
                'across them; ties and fronts in the table are as each comparison found them.</span></section>')
    best = next((r for r in R.sort_rows(R.models(results), results["higher_is_better"]) if r.get("quality") is not None), None)
    text = (f"Best test {escape(results['metric'])}: <b>{escape(str(best['model']))}</b> ({best['quality']:.4f})"
            if best else "No model has a score")
    why = results.get("recommendation_reason")
    why = f"No recommendation: {why}" if why else "This comparison made no recommendation (an older results file)."
    return (f'<section id="recommendation" class="none">{text}.<span class="reason">{escape(str(why))}</span></section>')
