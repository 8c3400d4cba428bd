"""Forecasting task: Time-Series-Library borders, train-only scaling, windows, sources, errors."""
from pathlib import Path

import numpy as np
import pytest
import torch

from anyformer.errors import ConfigError, DataError
from anyformer.tasks import files
from anyformer.tasks.forecast import ForecastTask

from .helpers import check_model_fits, write_csv

SERIES_HEADER = ("date", "x", "OT")

ETTH2 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ETT" / "ETTh2.csv"


def series_csv(tmp_path, n=100, name="data.csv"):
    rows = [(f"2020-01-01 {i}", 2.0 * i + 1, float(i % 7)) for i in range(n)]
    return write_csv(tmp_path / name, SERIES_HEADER, rows), np.array([[r[1], r[2]] for r in rows])


@pytest.mark.skipif(not ETTH2.is_file(), reason="shared ETTh2.csv not present")
def test_etth2_follows_the_tsl_hourly_protocol():
    task = ForecastTask(path=str(ETTH2))
    s = task.splits()
    # Dataset_ETT_hour with seq_len 96, pred_len 96: 8640-192+1 train windows, 2880-96+1 val/test.
    assert [len(s[k]) for k in ("train", "val", "test")] == [8449, 2785, 2785]
    assert s["train"].inputs.shape == (8449, 96, 7) and s["test"].target.shape == (2785, 96, 7)
    raw = np.genfromtxt(ETTH2, delimiter=",", skip_header=1)[:, 1:]
    mean, std = raw[:8640].mean(0), raw[:8640].std(0)
    z = (raw - mean) / std
    # First val window: input = the last 96 training rows, target = the first 96 val rows.
    assert np.allclose(s["val"].inputs[0].numpy(), z[8640 - 96:8640], atol=1e-5)
    assert np.allclose(s["val"].target[0].numpy(), z[8640:8640 + 96], atol=1e-5)
    # Last test window ends at row 14400: the tail of the file is not used (as in TSL).
    assert np.allclose(s["test"].target[-1].numpy(), z[14400 - 96:14400], atol=1e-5)
    check_model_fits(task)


def test_ratio_protocol_scaling_and_windows(tmp_path):
    path, raw = series_csv(tmp_path, 100)
    task = ForecastTask(path=path, input_len=8, horizon=4)
    s = task.splits()
    # Dataset_Custom: 70 train, 20 test, 10 val rows; val/test start input_len early.
    assert [len(s[k]) for k in ("train", "val", "test")] == [70 - 12 + 1, 18 - 12 + 1, 28 - 12 + 1]
    z = (raw - raw[:70].mean(0)) / raw[:70].std(0)
    assert np.allclose(s["train"].inputs[5].numpy(), z[5:13], atol=1e-5)
    assert np.allclose(s["train"].target[5].numpy(), z[13:17], atol=1e-5)
    assert np.allclose(s["test"].inputs[0].numpy(), z[80 - 8:80], atol=1e-5)
    train = torch.cat([s["train"].inputs[:, 0], s["train"].inputs[-1, 1:], s["train"].target[-1]])
    assert len(train) == 70
    assert abs(float(train.mean())) < 1e-5 and torch.allclose(train.std(0, unbiased=False), torch.ones(2), atol=1e-4)
    assert s["train"].inputs.dtype == torch.float32
    loss = check_model_fits(task)
    assert loss > 0


def test_univariate_target_and_stride(tmp_path):
    path, raw = series_csv(tmp_path, 100)
    task = ForecastTask(path=path, input_len=8, horizon=4, mode="univariate", stride=3)
    s = task.splits()
    assert s["train"].inputs.shape[1:] == (8, 1) and s["val"].target.shape[1:] == (4, 1)
    assert len(s["train"]) == len(range(0, 70 - 12 + 1, 3)) and len(s["val"]) == 7  # stride only on train
    z = (raw[:, 1] - raw[:70, 1].mean()) / raw[:70, 1].std()
    assert np.allclose(s["train"].inputs[2, :, 0].numpy(), z[6:14], atol=1e-5)
    cfg_model = check_model_fits(task)
    assert torch.isfinite(cfg_model)


def test_multivariate_puts_the_target_last(tmp_path):
    rows = [(i, float(i), 10.0 + (i % 3), -float(i % 5)) for i in range(60)]
    path = write_csv(tmp_path / "d.csv", ("date", "OT", "b", "c"), rows)
    s = ForecastTask(path=path, input_len=4, horizon=2).splits()
    raw = np.array(rows, dtype=float)[:, [2, 3, 1]]
    z = (raw - raw[:42].mean(0)) / raw[:42].std(0)
    assert np.allclose(s["train"].inputs[0].numpy(), z[:4], atol=1e-5)


def test_model_defaults_fit_step_and_patch_encoders(tmp_path):
    path, _ = series_csv(tmp_path, 200)
    task = ForecastTask(path=path, input_len=16, horizon=8)
    d = task.model_defaults()
    assert d["encoder"] == {"name": "series", "channels": 2, "mode": "step", "revin": True} and d["max_len"] == 16
    assert d["head"]["horizon"] == 8
    patch = {"encoder": {"name": "series", "mode": "patch", "patch_len": 4, "stride": 4}}
    check_model_fits(task, patch)


def test_statsmodels_source_reads_the_packaged_csv(tmp_path, monkeypatch):
    # A stand-in for statsmodels/datasets/co2/co2.csv with its gaps (empty values).
    rows = [(19580329 + i, "" if i in (3, 4) else 300.0 + i) for i in range(40)]
    csv_path = write_csv(tmp_path / "co2.csv", ("date", "co2"), rows)
    monkeypatch.setattr("anyformer.tasks.forecast.package_data", lambda *a, **k: Path(csv_path))
    task = ForecastTask(source="statsmodels:co2", input_len=4, horizon=2, mode="univariate")
    s = task.splits()
    raw = 300.0 + np.arange(40.0)  # linear interpolation restores the gap exactly
    z = (raw - raw[:28].mean()) / raw[:28].std()
    assert np.allclose(s["train"].inputs[1, :, 0].numpy(), z[1:5], atol=1e-5)


def test_package_data_finds_files_without_importing(tmp_path, monkeypatch):
    pkg = tmp_path / "fakepkg_data" / "datasets" / "x"
    pkg.mkdir(parents=True)
    (tmp_path / "fakepkg_data" / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "x.csv").write_text("a\n1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert files.package_data("fakepkg_data", "datasets", "x", "x.csv", extra="fakepkg").read_text() == "a\n1\n"
    with pytest.raises(DataError, match="pip install nosuchpkg"):
        files.package_data("nosuchpkg_anyformer", "a.csv", extra="nosuchpkg")


def test_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ForecastTask(path=str(tmp_path / "missing.csv")).splits()
    bad = tmp_path / "bad.csv"
    bad.write_text("date,x,OT\n1,2,3\n2,3\n")
    with pytest.raises(DataError, match=r"bad.csv:3: 2 fields, the header has 3"):
        ForecastTask(path=str(bad)).splits()
    bad.write_text("date,x,OT\n1,2,3\n2,abc,3\n")
    with pytest.raises(DataError, match=r"bad.csv:3: column 'x' holds 'abc'"):
        ForecastTask(path=str(bad)).splits()
    path, _ = series_csv(tmp_path, 100)
    with pytest.raises(DataError, match=r"no column 'OTT' \(did you mean 'OT'\?\)"):
        ForecastTask(path=path, target="OTT", mode="univariate").splits()
    with pytest.raises(DataError, match="val split has 18 steps, fewer than input_len \\+ horizon = 20"):
        ForecastTask(path=path, input_len=8, horizon=12).splits()
    with pytest.raises(DataError, match="needs 14400 rows"):
        ForecastTask(path=path, protocol="ett_hour").splits()
    with pytest.raises(ConfigError, match="exactly one of path"):
        ForecastTask()
    with pytest.raises(ConfigError, match="must be >= 1"):
        ForecastTask(path=path, horizon=0)


def _floats_csv(tmp_path, header, first_cells=None, n=60):
    rows = [([first_cells(i)] if first_cells else []) + [float(i % 5), float(i % 3), float(i % 7)] for i in range(n)]
    return write_csv(tmp_path / "f.csv", header, rows), np.array([r[-3:] for r in rows])


def test_a_csv_without_a_time_column_keeps_every_column(tmp_path):
    # Reported: header a,b,OT of floats trained with 2 channels (column 'a' taken as the date).
    path, raw = _floats_csv(tmp_path, ("a", "b", "OT"))
    task = ForecastTask(path=path, input_len=4, horizon=2)
    s = task.splits()
    assert task.channels() == 3 and s["train"].inputs.shape[1:] == (4, 3)
    z = (raw - raw[:42].mean(0)) / raw[:42].std(0)
    assert np.allclose(s["train"].inputs[0].numpy(), z[:4], atol=1e-5)


@pytest.mark.parametrize("header, stamp", [
    (("Date Time", "a", "b", "OT"), lambda i: f"01.01.2009 00:{i % 60:02d}:00"),  # Jena climate's name
    (("TIMESTAMP", "a", "b", "OT"), lambda i: str(i)),                             # found by name, any case
    (("ds", "a", "b", "OT"), lambda i: f"day {i}"),                                # Prophet's name
    (("when", "a", "b", "OT"), lambda i: f"2020-01-01 {i % 24:02d}:00:00"),        # ISO values
    (("month", "a", "b", "OT"), lambda i: f"{1949 + i // 12}-{1 + i % 12:02d}"),    # AirPassengers' 1949-01
    (("stamp", "a", "b", "OT"), lambda i: f"{1 + i % 12}/{1 + i % 28}/2020 10:00"),  # US spelling
])
def test_the_time_column_is_found_by_name_or_by_its_values(tmp_path, header, stamp):
    path, raw = _floats_csv(tmp_path, header, stamp)
    task = ForecastTask(path=path, input_len=4, horizon=2)
    s = task.splits()
    assert task.channels() == 3
    z = (raw - raw[:42].mean(0)) / raw[:42].std(0)
    assert np.allclose(s["train"].inputs[0].numpy(), z[:4], atol=1e-5)


def test_a_text_column_that_is_not_time_is_named(tmp_path):
    path, _ = _floats_csv(tmp_path, ("city", "a", "b", "OT"), lambda i: "Paris")
    with pytest.raises(DataError, match=r"f.csv:2: column 'city' holds 'Paris', not a number \(no column is named date"):
        ForecastTask(path=path).splits()
    rows = [(f"2020-01-01 {i % 24:02d}:00:00", "x", float(i)) for i in range(30)]
    path = write_csv(tmp_path / "g.csv", ("date", "station", "OT"), rows)
    with pytest.raises(DataError, match=r"g.csv:2: column 'station' holds 'x', not a number \(the time column is 'date'\)"):
        ForecastTask(path=path).splits()


def test_a_header_without_rows_or_only_a_time_column(tmp_path):
    bad = tmp_path / "h.csv"
    bad.write_text("date,a,OT\n")
    with pytest.raises(DataError, match=r"h.csv: no data rows below the header"):
        ForecastTask(path=str(bad)).splits()
    bad.write_text("date\n2020-01-01\n2020-01-02\n")
    with pytest.raises(DataError, match=r"h.csv: only a time column \('date'\); add numeric columns"):
        ForecastTask(path=str(bad)).splits()
    bad.write_text("date,a,OT\n2020-01-01,1,nan\n")
    with pytest.raises(DataError, match=r"h.csv:2: column 'OT' holds 'nan', not a finite number"):
        ForecastTask(path=str(bad)).splits()
