"""report/ is rows in -> files out: the HTML report and the CSV from ranked rows and the
learning curves handed to it, with no run directory read behind the caller's back."""
import base64
import csv
import re

from anyformer.report.html import write_report
from anyformer.report.table import CSV_KEYS, write_csv

ROWS = [
    {"model": "vit", "quality": 0.95, "val": 0.94, "metric": "accuracy", "higher_is_better": True, "params": 2000,
     "latency_ms": 5.0, "train_step_ms": 9.0, "steps": 10, "train_seconds": 3.0, "flops_per_sample": 2e6,
     "peak_memory_bytes": 2**20, "pareto_latency": True, "pareto_params": False},
    {"model": "vit+linear", "quality": 0.90, "val": 0.91, "metric": "accuracy", "higher_is_better": True, "params": 1000,
     "latency_ms": 4.0, "train_step_ms": 8.0, "steps": 10, "train_seconds": 3.0, "flops_per_sample": 1e6,
     "peak_memory_bytes": 2**19, "pareto_latency": True, "pareto_params": True},
]
CURVES = {"vit": [{"step": 1, "loss": 2.0}, {"step": 1, "split": "val", "accuracy": 0.5}, {"step": 2, "loss": 1.0}],
          "vit+linear": [{"step": 1, "loss": 2.2}, {"step": 2, "loss": 1.5}]}


def test_report_holds_the_rows_the_fronts_and_the_figures(tmp_path):
    path = write_report(tmp_path, ROWS, "digits", CURVES)
    page = path.read_text()
    assert path == tmp_path / "report.html" and sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    assert page.count('<tr class="front">') == 2 and "vit+linear" in page
    assert "Best test accuracy: <b>vit</b> (0.9500)" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3  # latency front, parameter front, learning curves
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)


def test_report_without_curves_leaves_the_curve_figure_out(tmp_path):
    page = write_report(tmp_path, ROWS, "digits").read_text()
    assert len(re.findall(r"data:image/png", page)) == 2


def test_csv_has_one_row_per_model_in_order(tmp_path):
    write_csv(tmp_path / "r.csv", ROWS)
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [r["model"] for r in rows] == ["vit", "vit+linear"] and list(rows[0]) == CSV_KEYS
    assert rows[1]["pareto_params"] == "True" and float(rows[0]["quality"]) == 0.95
