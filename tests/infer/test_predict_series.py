"""predict on the series tasks: forecast windows and UCR series read raw give the run's own
test metrics back exactly, forecasts come back in the data's units, bad inputs are one line."""
from __future__ import annotations

import csv
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from anyformer.errors import DataError
from anyformer.infer.predict import predictor
from anyformer.tasks.forecast import ForecastTask
from anyformer.tasks.raw import Raw
from anyformer.tasks.ucr import UCRTask

from .helpers import final_metrics, train_tiny

INPUT_LEN, HORIZON = 16, 8


def write_rows(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def series_csv(tmp_path: Path, n: int = 200) -> tuple[Path, np.ndarray]:
    """A date column and three series, OT first (multivariate mode moves it last); the values
    [n, 3] in file order (OT, x, y)."""
    rng = np.random.default_rng(1)
    t = np.arange(n, dtype=np.float64)
    values = np.stack([10 + 3 * np.sin(t / 5), 100 + 0.5 * t, np.cos(t / 3)], 1) + 0.1 * rng.standard_normal((n, 3))
    values = values.round(4)
    start = datetime(2020, 1, 1)
    rows = [[(start + timedelta(hours=i)).isoformat(sep=" "), *v] for i, v in enumerate(values.tolist())]
    return write_rows(tmp_path / "series.csv", ["date", "OT", "x", "y"], rows), values


def test_forecast_on_synthetic_scores_the_runs_own_test_metrics(tmp_path):
    run = train_tiny({"name": "forecast", **ForecastTask.example_options}, tmp_path / "run")
    p = predictor(run)
    assert p.kind == "series" and p.task.output_names() == ["a", "b", "OT"]
    assert p.score("test") == final_metrics(run)


@pytest.mark.parametrize("mode, columns", [("multivariate", ["x", "y", "OT"]), ("univariate", ["OT"])])
def test_forecast_on_a_csv_scores_the_runs_own_test_metrics(tmp_path, mode, columns):
    path, values = series_csv(tmp_path)
    run = train_tiny({"name": "forecast", "path": str(path), "input_len": INPUT_LEN, "horizon": HORIZON,
                      "mode": mode}, tmp_path / "run")
    p = predictor(run)
    state = p.saved["state"]
    assert state["columns"] == columns and state["time_columns"] == ["date"]
    order = [["OT", "x", "y"].index(c) for c in columns]
    # Ratio protocol: the first 70% of the rows train (a C-ordered copy: numpy sums an
    # axis of another layout in another order, a last bit apart).
    train = np.ascontiguousarray(values[:, order])[:140]
    assert state["mean"] == train.mean(0).tolist() and state["std"] == train.std(0).tolist()
    assert p.score("test") == final_metrics(run)


def test_forecast_predicts_the_last_rows_in_the_datas_units(tmp_path):
    path, values = series_csv(tmp_path)
    run = train_tiny({"name": "forecast", "path": str(path), "input_len": INPUT_LEN, "horizon": HORIZON},
                     tmp_path / "run")
    p = predictor(run)
    # The last 20 rows, columns in another order, no time column, one extra column.
    tail = values[-20:]
    given = write_rows(tmp_path / "tail.csv", ["y", "extra", "OT", "x"],
                       [[v[2], 0.0, v[0], v[1]] for v in tail.tolist()])
    [result] = p.predict_files([given])
    assert result["input"] == f"{given}:6-21"  # the last 16 data rows (lines 6..21)
    forecast = result["forecast"]
    assert list(forecast) == ["x", "y", "OT"] and all(len(v) == HORIZON for v in forecast.values())
    # By hand: z-score the last input_len rows with the training rows' statistics, run the
    # model, scale the output back.
    raw = tail[-INPUT_LEN:][:, [1, 2, 0]]
    mean, std = values[:140][:, [1, 2, 0]].mean(0), values[:140][:, [1, 2, 0]].std(0)
    x = torch.tensor((raw - mean) / std, dtype=torch.float32)[None]
    with torch.no_grad():
        out = p.model.eval()(x)
    expected = (out.double() * torch.from_numpy(std) + torch.from_numpy(mean))[0]
    got = torch.tensor([forecast[c] for c in ("x", "y", "OT")], dtype=torch.float64).T
    # float32 model outputs scaled by std ~60: a last-bit difference between two forward
    # passes (thread splits) is ~1e-5 here, so the check is to float32 precision, not bits.
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-4)
    assert abs(float(got[:, 0].mean()) - 195) < 60  # x trends to ~199: in the data's units, not z-scores
    # An array [T, C] in the model's column order gives the same forecast.
    [direct] = p([tail[:, [1, 2, 0]]])
    assert direct["input"] == "input 0" and direct["forecast"] == forecast


def test_ucr_scores_its_test_split_and_labels_each_test_series(tmp_path):
    opts = UCRTask.write_example(tmp_path)
    run = train_tiny({"name": "ucr", **opts}, tmp_path / "run")
    p = predictor(run)
    assert p.saved["state"] == {"classes": ["a", "b"], "length": 8, "dims": 2, "masked": True}
    assert p.score("test") == final_metrics(run)
    results = p.predict_files([tmp_path / "Toy_TEST.ts"])
    assert len(results) == 12 and results[0]["input"] == f"{tmp_path / 'Toy_TEST.ts'}:8"
    # The labels are the model's argmax on the test split as training built it.
    test = UCRTask(**opts).splits()["test"]
    with torch.no_grad():
        best = p.model.eval()(test.inputs, mask=test.mask).argmax(-1).tolist()
    assert [r["label"] for r in results] == [["a", "b"][k] for k in best]


def test_ucr_reads_csv_rows_and_npy_arrays(tmp_path):
    task = UCRTask(**UCRTask.write_example(tmp_path))
    task.restore({"classes": ["a", "b"], "length": 8, "dims": 1, "masked": True})
    rows = tmp_path / "rows.csv"
    rows.write_text("t0,t1,t2\n1,2,3\n4,5,,\n")
    records = task.read_inputs(rows)
    assert [r.where for r in records] == [f"{rows}:2", f"{rows}:3"]
    x, mask = task.encode(records)
    assert x.shape == (2, 8, 1) and x[:, :3, 0].tolist() == [[1, 2, 3], [4, 5, 0]]
    assert mask.sum(1).tolist() == [3, 2]
    np.save(tmp_path / "s.npy", np.arange(12.0).reshape(2, 6))
    x, mask = task.encode(task.read_inputs(tmp_path / "s.npy"))
    assert x[1, :6, 0].tolist() == list(range(6, 12)) and mask.sum(1).tolist() == [6, 6]


def test_bad_forecast_inputs_are_one_line_naming_the_file_and_row(tmp_path):
    path, values = series_csv(tmp_path)
    task = ForecastTask(path=str(path), input_len=INPUT_LEN, horizon=HORIZON)
    task.splits()
    rows = [[f"2021-01-01 {i}", *v] for i, v in enumerate(values[:20].tolist())]
    missing = write_rows(tmp_path / "missing.csv", ["date", "OT", "x"], [r[:3] for r in rows])
    few = write_rows(tmp_path / "few.csv", ["date", "OT", "x", "y"], rows[:5])
    rows[10][2] = "n/a"  # column 'x' of the file's line 12
    word = write_rows(tmp_path / "word.csv", ["date", "OT", "x", "y"], rows)
    for bad, says in ((missing, f"{missing}: no column 'y'"), (few, f"{few}: 5 data rows"),
                      (word, f"{word}:12: column 'x' holds 'n/a'")):
        with pytest.raises(DataError) as err:
            task.read_inputs(bad)
        assert says in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"input 0: a series of shape \[20, 2\]; the run reads \[T, 3\]"):
        task.encode([Raw(values[:20, :2], "input 0")])


def test_bad_ucr_inputs_are_one_line_naming_the_record(tmp_path):
    opts = UCRTask.write_example(tmp_path)
    task = UCRTask(**opts)
    task.splits()
    long = tmp_path / "long.ts"
    long.write_text("@classLabel false\n@data\n" + ",".join(["1"] * 9) + ":" + ",".join(["2"] * 9) + "\n")
    with pytest.raises(DataError, match=rf"{long}:3: 9 steps, longer than the 8"):
        task.encode(task.read_inputs(long))
    flat = tmp_path / "flat.csv"
    flat.write_text("1,2,3\n")
    with pytest.raises(DataError, match=rf"{flat}:1: 1 dimensions, the run was trained on 2"):
        task.encode(task.read_inputs(flat))
    word = tmp_path / "word.csv"
    word.write_text("1,2,3\n4,x,6\n")
    with pytest.raises(DataError, match=rf"{word}:2: 'x' is not a number"):
        task.read_inputs(word)
    unseen = tmp_path / "unseen.ts"
    unseen.write_text("@classLabel true a b c\n@data\n1,2:3,4:c\n")
    with pytest.raises(DataError, match=rf"{unseen}:3: label 'c' is not one the run trained on"):
        task.targets(task.read_inputs(unseen))
