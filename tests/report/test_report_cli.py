"""`anyformer report DIR [DIR ...]`: rebuilds the report from finished compare directories
(results.json and each model's per-seed metrics.jsonl), merges several of one task, and
refuses what it cannot read with one line naming the file (exit 2)."""
import json

import pytest

from anyformer.cli import main
from anyformer.report.html import FIGURE_FILES
from anyformer.report.sources import read_compare_dir
from tests.report.synthetic import MODELS, make_curves, make_results, write_compare_dir
from tests.report.test_html import table_rows


def _split(tmp_path):
    """Two compare directories of one task: two models each (and the same baseline), the
    first with one folder per seed, the second in the older single-run layout."""
    results, curves = make_results(), make_curves()
    names = list(MODELS)
    dirs = []
    for label, part, per_seed in (("a", names[:2], True), ("b", names[2:], False)):
        res = dict(results, rows=[r for r in results["rows"] if r["model"] in part or r.get("baseline")])
        if label == "b":
            res["recommendation"] = {"model": part[0], "reason": "best of b"}
            for r in res["rows"]:
                r["recommended"] = r["model"] == part[0]
        dirs.append(write_compare_dir(tmp_path / label, res, {m: curves[m] for m in part}, per_seed_folders=per_seed))
    return dirs


def _fails(args, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_reading_a_compare_dir_finds_every_seed(tmp_path):
    a, b = _split(tmp_path)
    _, curves = read_compare_dir(a)
    assert sorted(curves) == sorted(list(MODELS)[:2]) and all(len(runs) == 3 for runs in curves.values())
    assert curves["vit"] == make_curves()["vit"]  # seed-0, seed-1, seed-2 in order
    _, old = read_compare_dir(b)
    assert all(len(runs) == 1 for runs in old.values())


def test_report_merges_two_compare_dirs(tmp_path, capsys):
    a, b = _split(tmp_path)
    out = tmp_path / "merged"
    main(["report", str(a), str(b), "--out", str(out)])
    assert "4 models from 2 comparisons" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    rows = table_rows(page)
    assert sorted(r["model"] for r in rows) == sorted([*MODELS, "majority class"])  # the shared baseline once
    assert [r["model"] for r in rows][:4] == list(MODELS)  # ranked across both directories
    assert {r["cells"][-1] for r in rows} == {"a", "b"}  # the source column
    assert "Recommended within each comparison" in page and "<b>vit+performer</b>" in page
    assert all((out / name).exists() for name in FIGURE_FILES.values())
    assert all(f'"name":"{m}"' in page.split('id="fig-curves"')[1] for m in MODELS)  # every model's curves
    merged = json.loads((out / "merged.json").read_text())  # the merged rows, machine-readable too
    assert [r["model"] for r in merged["rows"]] == [r["model"] for r in rows]
    assert [s["dir"] for s in merged["sources"]] == ["a", "b"] and not (out / "results.json").exists()
    with open(out / "merged.csv") as fh:
        assert [line.split(",")[0] for line in fh.read().splitlines()[1:]] == [r["model"] for r in rows]


def test_the_same_model_in_two_dirs_is_named_by_its_dir(tmp_path):
    results, curves = make_results(), make_curves()
    a = write_compare_dir(tmp_path / "a", results, curves)
    b = write_compare_dir(tmp_path / "b", results, curves)
    main(["report", str(a), str(b), "--out", str(tmp_path / "m")])
    models = [r["model"] for r in table_rows((tmp_path / "m" / "report.html").read_text())]
    assert "vit [a]" in models and "vit [b]" in models and len(models) == 2 * len(MODELS) + 1


def test_one_dir_is_rebuilt_in_place(tmp_path, capsys):
    (a, _) = _split(tmp_path)
    before = (a / "results.json").read_text()
    main(["report", str(a)])
    assert (a / "report.html").exists() and (a / "results.json").read_text() == before
    assert f"report: {a / 'report.html'}" in capsys.readouterr().out


def test_mismatched_tasks_are_refused(tmp_path, capsys):
    a, b = _split(tmp_path)
    data = json.loads((b / "results.json").read_text())
    (b / "results.json").write_text(json.dumps(dict(data, task="forecast")))
    err = _fails(["report", str(a), str(b), "--out", str(tmp_path / "m")], capsys)
    assert "task 'forecast'" in err and "task 'digits'" in err and str(b / "results.json") in err
    assert not (tmp_path / "m").exists()


def test_a_missing_or_corrupt_results_file_is_named(tmp_path, capsys):
    a, b = _split(tmp_path)
    (b / "results.json").unlink()
    err = _fails(["report", str(a), str(b)], capsys)
    assert str(b / "results.json") in err and "does not exist" in err
    (b / "results.json").write_text('{"task": "digits", "rows": [')
    err = _fails(["report", str(b)], capsys)
    assert str(b / "results.json") in err and "not valid JSON" in err
    (b / "results.json").write_text('{"rows": 3}')
    assert str(b / "results.json") in _fails(["report", str(b)], capsys)
    err = _fails(["report", str(tmp_path / "nowhere")], capsys)
    assert "nowhere" in err and "not a directory" in err


def test_a_corrupt_metrics_file_is_named(tmp_path, capsys):
    a, _ = _split(tmp_path)
    bad = a / "vit" / "seed-1" / "metrics.jsonl"
    bad.write_text(bad.read_text() + '{"step": 3, "lo\n')
    assert str(bad) in _fails(["report", str(a)], capsys)
