"""`anyformer report RUN_DIR`: a training run's attention dynamics as PNG figures and an
HTML page, from the attention records of its metrics.jsonl."""
import json

import pytest

from anyformer.report.attention import ATTENTION_FILES, run_series, seed_band
from tests.cli_run import run_cli


def _record(step, entropy, distinct):
    layer = {"layer": 0, "mixer": "softmax", "entropy": entropy, "top1": 0.1 + step / 100, "topk": 0.4, "k": 5,
             "heads": {"entropy": [entropy], "top1": [0.1]},
             "groups": {"distinct": distinct, "common": 1 - distinct}, "group_share": {"distinct": 0.1, "common": 0.9}}
    return {"step": step, "split": "attention", "layers": [layer]}


def _run_dir(tmp_path, records):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"step": 10, "loss": 1.0, "lr": 0.001}, {"step": 10, "split": "val", "accuracy": 0.5}, *records]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


def test_series_and_seed_bands():
    a = run_series([_record(0, 3.0, 0.1), _record(10, 2.0, 0.6)])
    assert a[(0, "entropy")] == {0: 3.0, 10: 2.0} and a[(0, "group:distinct")] == {0: 0.1, 10: 0.6}
    b = run_series([_record(0, 3.0, 0.1), _record(10, 1.0, 0.8)])
    band = seed_band([a, b], (0, "group:distinct"))
    assert band.steps == [0, 10] and band.mean == pytest.approx([0.1, 0.7]) and band.low == [0.1, 0.6] and band.high == [0.1, 0.8]


def test_report_of_a_run_writes_the_figures_and_the_page(tmp_path, capsys):
    run = _run_dir(tmp_path, [_record(s, 3.0 - s / 20, 0.1 + s / 30) for s in (0, 10, 20)])
    code, out, _ = run_cli(["report", run], capsys)
    assert code == 0 and "attention.html" in out
    for name in ATTENTION_FILES.values():
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (run / "attention.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "At step 20" in page


def test_a_run_without_groups_gets_no_group_figure(tmp_path, capsys):
    records = [_record(s, 2.0, 0.5) for s in (0, 10)]
    for r in records:
        del r["layers"][0]["groups"], r["layers"][0]["group_share"]
    run = _run_dir(tmp_path, records)
    assert run_cli(["report", run], capsys)[0] == 0
    assert (run / ATTENTION_FILES["entropy"]).exists() and not (run / ATTENTION_FILES["groups"]).exists()


def test_a_run_not_tracked_is_refused_in_one_line(tmp_path, capsys):
    code, _, err = run_cli(["report", _run_dir(tmp_path, [])], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--track attention" in err


def test_a_comparison_whose_runs_tracked_attention_shows_them(tmp_path):
    from anyformer.report.html import write_report
    from anyformer.rundir import slug
    from tests.report.synthetic import make_curves, make_results

    curves = make_curves()
    tracked = next(iter(curves))
    for seed, records in enumerate(curves[tracked]):
        records += [_record(s, 3.0 - s / 100 - seed / 10, 0.1 + s / 400) for s in (0, 100, 200)]
    page = write_report(tmp_path, make_results(), curves).read_text()
    assert "<h2>Attention dynamics</h2>" in page and page.count(f"<h3>{tracked}</h3>") == 1
    written = sorted(p.name for p in tmp_path.glob("attention-*.png"))
    assert written == sorted(f"attention-{slug(tracked)}-{k}.png" for k in ("entropy", "top", "groups"))
    assert "Attention dynamics" not in write_report(tmp_path / "plain", make_results(), make_curves()).read_text()
