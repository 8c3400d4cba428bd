"""report/ is rows in -> files out: the HTML report, its figure files and the CSV from the
results and the learning curves handed to it, with no run directory read behind the
caller's back. These tests read the written files; test_browser.py runs the page."""
import base64
import csv
import re
from html.parser import HTMLParser

from anyformer.report.html import FIGURE_FILES, write_report
from tests.report.synthetic import MODELS, RECOMMENDED

PNG = b"\x89PNG\r\n\x1a\n"
ROWS = [
    {"model": "vit", "quality": 0.95, "val": 0.94, "metric": "accuracy", "higher_is_better": True, "params": 2000,
     "latency_ms": 5.0, "train_step_ms": 9.0, "steps": 10, "train_seconds": 3.0, "flops_per_sample": 2e6,
     "peak_memory_bytes": 2**20, "pareto_latency": True, "pareto_params": False, "latency_batch": 32},
    {"model": "vit+linear", "quality": 0.90, "val": 0.91, "metric": "accuracy", "higher_is_better": True, "params": 1000,
     "latency_ms": 4.0, "train_step_ms": 8.0, "steps": 10, "train_seconds": 3.0, "flops_per_sample": 1e6,
     "peak_memory_bytes": 2**19, "pareto_latency": True, "pareto_params": True, "latency_batch": 32},
]
CURVES = {"vit": [{"step": 1, "loss": 2.0}, {"step": 1, "split": "val", "accuracy": 0.5}, {"step": 2, "loss": 1.0}],
          "vit+linear": [{"step": 1, "loss": 2.2}, {"step": 2, "loss": 1.5}]}


class Table(HTMLParser):
    """The results table's rows: (data-model, class, first cell's text, flag chips)."""

    def __init__(self):
        super().__init__()
        self.rows, self.cell, self.in_body = [], None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows.append({"model": attrs.get("data-model"), "class": attrs.get("class", ""), "cells": [], "chips": []})
        elif tag == "td" and self.in_body:
            self.cell = []
        elif tag == "span" and "chip" in (attrs.get("class") or "") and self.in_body:
            self.rows[-1]["chips"].append(None)

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)
            if self.rows[-1]["chips"] and self.rows[-1]["chips"][-1] is None:
                self.rows[-1]["chips"][-1] = data

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.rows[-1]["cells"].append("".join(self.cell))
            self.cell = None
        elif tag == "tbody":
            self.in_body = False


def table_rows(page: str) -> list[dict]:
    parser = Table()
    parser.feed(page)
    return parser.rows


def test_the_page_is_self_contained(tmp_path, results, curves):
    page = write_report(tmp_path, results, curves).read_text()
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", page)
    assert tags and not [t for t in tags if re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", t)]
    assert not re.search(r"<script\b[^>]*\bsrc=", page)  # every script inlined
    assert "Plotly.newPlot" in page and len(page) > 3_000_000  # plotly.js itself is in the page


def test_table_rows_are_the_models_in_rank_order_with_flags_and_ties(tmp_path, results, curves):
    rows = table_rows(write_report(tmp_path, results, curves).read_text())
    assert [r["model"] for r in rows] == [r["model"] for r in results["rows"]]
    assert [r["cells"][0] for r in rows] == [r["model"] for r in results["rows"]]
    by = {r["model"]: r for r in rows}
    assert by[RECOMMENDED]["chips"][:2] == ["recommended", "tied with best"] and "recommended" in by[RECOMMENDED]["class"]
    assert "tied with best" in by["vit"]["chips"] and "violates constraints" in by["vit"]["chips"]
    assert "tied with best" not in by["vit+performer"]["chips"]
    assert "undertrained 180/200 steps" in by["vit+performer"]["chips"]
    assert by["majority class"]["chips"] == ["baseline"] and "baseline" in by["majority class"]["class"]
    # Quality with its interval; the steps of a model that stopped early against its plan.
    assert "0.9550 \u00b1 0.0110" in by[RECOMMENDED]["cells"]
    assert "180 of 200" in by["vit+performer"]["cells"]


def test_the_verdict_plan_and_environment_are_stated(tmp_path, results, curves):
    page = write_report(tmp_path, results, curves).read_text()
    verdict = re.search(r'<section id="recommendation">(.*?)</section>', page).group(1)
    assert f"<b>{RECOMMENDED}</b>" in verdict and "meets max_latency_ms" in verdict
    for text in ("<dt>seeds per model</dt><dd>3</dd>", "t interval, 95%, over seeds", "Welch t-test",
                 "<dd>max_latency_ms = 6.0</dd>", "batches of 64 test samples", "<dt>torch</dt><dd>2.13.0</dd>",
                 "180 to 200 (per row)", "\u0394 vs vit</th>"):
        assert text in page, text


def test_the_figures_are_also_image_files(tmp_path, results, curves):
    write_report(tmp_path, results, curves)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["report.html", *FIGURE_FILES.values()])
    assert all((tmp_path / name).read_bytes()[:8] == PNG for name in FIGURE_FILES.values())
    # A rebuild without curves drops the stale curve image rather than leaving it beside the page.
    write_report(tmp_path, results, {})
    assert not (tmp_path / FIGURE_FILES["curves"]).exists() and (tmp_path / FIGURE_FILES["latency"]).exists()


def test_the_figures_hold_every_model_and_the_markers(tmp_path, results, curves):
    page = write_report(tmp_path, results, curves).read_text()
    for fig in ("fig-latency", "fig-params", "fig-curves"):
        assert f'id="{fig}"' in page
    assert page.count('"symbol":"star"') == 2  # the recommended model, once per scatter
    assert page.count('"name":"Pareto front"') == 2 and '"name":"meets the constraints"' in page
    assert "baseline majority class: 0.1010 (below this range)" in page  # far below the models: noted, not drawn
    assert all(page.count(f'"name":"{m}"') >= 3 for m in MODELS)  # in both scatters and the curves


def test_no_recommendation_says_why(tmp_path, results, curves):
    results["recommendation"] = None
    results["recommendation_reason"] = "no model meets latency <= 1 ms: the lowest latency is 1.3 ms (vit+fnet)"
    for r in results["rows"]:
        r["recommended"] = False
    page = write_report(tmp_path, results, curves).read_text()
    verdict = re.search(r'<section id="recommendation" class="none">(.*?)</section>', page).group(1)
    assert "Best test accuracy: <b>vit</b> (0.9620)" in verdict and "No recommendation: no model meets latency" in verdict
    assert '"symbol":"star"' not in page


def test_a_baseline_near_the_models_is_drawn_as_a_line(tmp_path, results, curves):
    results["rows"][-1]["quality"] = 0.88
    page = write_report(tmp_path, results, curves).read_text()
    assert page.count('"y0":0.88,"y1":0.88') == 2 and "below this range" not in page
    assert page.count("baseline majority class: 0.8800") == 2


def test_a_results_file_of_rows_only_still_renders(tmp_path):
    """A results.json from before verdicts: only the task and its rows."""
    path = write_report(tmp_path, {"task": "digits", "rows": ROWS}, CURVES)
    page = path.read_text()
    assert [r["model"] for r in table_rows(page)] == ["vit", "vit+linear"]
    assert "Best test accuracy: <b>vit</b> (0.9500)" in page
    images = re.findall(r'<img alt="[^"]+" src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3 and all(base64.b64decode(i)[:8] == PNG for i in images)


def test_without_curves_the_curve_figure_is_left_out(tmp_path):
    page = write_report(tmp_path, {"task": "digits", "rows": ROWS}).read_text()
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png', page)) == 2 and 'id="fig-curves"' not in page
    assert "No learning curves" in page


def test_a_row_without_a_score_is_listed_but_not_drawn(tmp_path):
    rows = [dict(ROWS[0]), dict(ROWS[1], quality=None)]
    page = write_report(tmp_path, {"task": "digits", "rows": rows}).read_text()
    assert [r["model"] for r in table_rows(page)] == ["vit", "vit+linear"]
    assert page.count('"mode":"markers","name":"vit+linear"') == 0 and page.count('"mode":"markers","name":"vit"') == 2
