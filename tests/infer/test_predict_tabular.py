"""predict on table rows (tabular-csv): the run's test split scored again from its original
CSV gives the metrics training reported, exactly; new rows from .csv, .jsonl and dicts;
one-line errors naming the row of what does not fit the run."""
import csv
import json
import shutil

import pytest
import torch

from anyformer.errors import DataError
from anyformer.infer.predict import predictor
from anyformer.tasks import table_cache
from anyformer.tasks.raw import Raw
from anyformer.tasks.tabular import TabularCSVTask

from .helpers import final_metrics, train_tiny

HEADER = [" size", "proto", "rate", "size", "code", "Label"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(table_cache.CACHE_ENV, str(tmp_path / "cache"))


def rich_rows(n=60):
    """Numbers (a blank, an 'Infinity', a 'NaN'), a repeated header name, text categories
    (one blank), number categories, and a class spelled with spaces around it."""
    rows = []
    for i in range(n):
        rate = "" if i == 4 else "Infinity" if i == 7 else "NaN" if i == 9 else f"{(i * 37 % 11) / 3:.6g}"
        proto = "" if i == 11 else ["tcp", "udp", "icmp"][i % 3]
        rows.append([i * 2.5, proto, rate, 100 - i, [1, 2, 3.0][i % 3], [" BENIGN", "DoS", "Scan"][i % 3 if i % 5 else 0]])
    return rows


def write_rows(path, rows, header=HEADER, blank_at=None, blank="\r\n"):
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for k, row in enumerate(rows):
            if k == blank_at:
                fh.write(blank)  # a blank row: the training read and records() both skip it
            w.writerow(row)
    return path


def rich_csv(tmp_path, blank="\r\n"):
    """The rich table, with one test row holding a category ('zeta') no other row has: the
    split depends on the labels only, so it is found on a first version of the file. A
    blank row of empty fields (`blank` ',,,,,') is a row with a blank target to pyarrow:
    training reads that file with the csv module's row pass instead."""
    rows = rich_rows()
    path = write_rows(tmp_path / "flows.csv", rows, blank_at=20, blank=blank)
    opts = {"path": str(path), "target": "Label", "categorical": ["code"]}
    test = TabularCSVTask(**opts).split_indices()["test"].tolist()
    rows[test[1]][1] = "zeta"
    write_rows(path, rows, blank_at=20, blank=blank)
    return opts, test[1]


def example(tmp_path, kind):
    if kind == "example":
        return TabularCSVTask.write_example(tmp_path)
    return rich_csv(tmp_path, ",,,,,\r\n" if kind == "rich-rows" else "\r\n")[0]


@pytest.mark.parametrize("kind", ["example", "rich", "rich-rows"])
def test_the_test_split_from_the_original_file_gives_the_reported_metrics(tmp_path, kind):
    opts = example(tmp_path, kind)
    run = train_tiny({"name": "tabular-csv", **opts}, tmp_path / "run")
    model = predictor(run)
    assert model.kind == "table"
    assert model.score("test") == final_metrics(run)
    assert model.score("val") == final_metrics(run, "val")


@pytest.mark.parametrize("kind", ["example", "rich", "rich-rows"])
def test_the_encoded_rows_are_the_splits_tensors(tmp_path, kind):
    opts = example(tmp_path, kind)
    run = train_tiny({"name": "tabular-csv", **opts}, tmp_path / "run")
    made = predictor(run).split("test")
    own = TabularCSVTask(**opts).splits()["test"]
    assert set(made.inputs) == set(own.inputs) == {"numeric", "categorical"}
    for key in own.inputs:
        assert made.inputs[key].dtype == own.inputs[key].dtype
        assert torch.equal(made.inputs[key], own.inputs[key])
    assert made.mask is None and torch.equal(made.target, own.target)


def test_the_saved_state_and_a_category_only_the_test_split_holds(tmp_path):
    opts, rare = rich_csv(tmp_path)
    task = TabularCSVTask(**opts)
    s = task.splits()
    state = task.preprocessing()
    assert state["classes"] == ["BENIGN", "DoS", "Scan"] and state["target"] == "Label"
    assert [c["name"] for c in state["numeric"]] == ["size", "rate", "size.1"]
    assert [c["name"] for c in state["categorical"]] == ["proto", "code"]
    proto, code = (c["codes"] for c in state["categorical"])
    # 'zeta' is in the file but not the train split: code 0, yet a known value; a blank is 'nan'.
    assert proto["zeta"] == 0 and sorted(v for k, v in proto.items() if k != "zeta") == [1, 2, 3, 4]
    assert "nan" in proto and set(code) == {"1.0", "2.0", "3.0"}
    position = task.split_indices()["test"].tolist().index(rare)
    assert int(s["test"].inputs["categorical"][position, 0]) == 0
    records = task.records()
    assert len(records) == 60 and records[rare].value["proto"] == "zeta"
    # The blank row after data row 20 shifts the lines below it by one.
    assert records[19].where.endswith("flows.csv:21") and records[20].where.endswith("flows.csv:23")
    assert records[0].label == "BENIGN" and records[0].value["size.1"] == "100"


def test_predictions_on_rows_from_csv_jsonl_and_dicts(tmp_path):
    opts, _ = rich_csv(tmp_path)
    run = train_tiny({"name": "tabular-csv", **opts}, tmp_path / "run")
    model = predictor(run)
    header = [" size", "proto", "rate", "size", "code", "extra"]
    new = write_rows(tmp_path / "new.csv", [[3.5, "udp", "Infinity", 7, 2, "x"], [1, "tcp", "", 9, "3", "y"],
                                            [0.25, "", "1e-3", 12, 1.0, "z"]], header=header)
    rows = model.predict_files([new])
    assert [p["input"] for p in rows] == [f"{new}:{k}" for k in (2, 3, 4)]
    for p in rows:
        assert p["label"] in ("BENIGN", "DoS", "Scan") and p["probability"] == max(p["probabilities"].values())
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    dicts = [{"size": 3.5, "proto": "udp", "rate": float("inf"), "size.1": 7, "code": 2},
             {"size": 1, "proto": " tcp ", "rate": None, "size.1": "9", "code": "3"},
             {"size": "0.25", "proto": "", "rate": 0.001, "size.1": 12, "code": 1.0, "Label": "whatever"}]
    (tmp_path / "new.jsonl").write_text("".join(json.dumps(d) + "\n" for d in dicts[1:]))
    from_dicts = model(dicts)
    assert [p["input"] for p in from_dicts] == ["input 0", "input 1", "input 2"]
    assert [p["probabilities"] for p in from_dicts] == [p["probabilities"] for p in rows]
    from_jsonl = model.predict_files([tmp_path / "new.jsonl"])
    for got, want in zip(from_jsonl, rows[1:]):  # a batch of two: the same up to float rounding
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
    inputs, mask = model.task.encode(model.task.read_inputs(tmp_path / "new.jsonl"))
    assert mask is None and torch.equal(inputs["numeric"], model.task.encode(model.task.read_inputs(new)[1:])[0]["numeric"])


def bad(model, tmp_path, header, row):
    path = write_rows(tmp_path / "bad.csv", [[3.5, "udp", 1, 7, 2], row], header=header)
    with pytest.raises(DataError) as err:
        model.predict_files([path])
    message = str(err.value)
    assert "\n" not in message and f"{path}:3" in message
    return message


def test_rows_that_do_not_fit_the_run_are_one_line_errors_naming_the_row(tmp_path):
    opts, _ = rich_csv(tmp_path)
    model = predictor(train_tiny({"name": "tabular-csv", **opts}, tmp_path / "run"))
    header = HEADER[:5]
    message = bad(model, tmp_path, header, [1, "sctp", 1, 7, 2])
    assert "'proto'" in message and "'sctp'" in message and "'tcp'" in message
    assert "'code'" in bad(model, tmp_path, header, [1, "tcp", 1, 7, 5])  # a number never a category of it
    message = bad(model, tmp_path, header, [1, "tcp", "fast", 7, 2])
    assert "'rate'" in message and "'fast'" in message and "not a number" in message
    path = write_rows(tmp_path / "short.csv", [[1, "tcp", 2, 7]], header=header[:4])
    with pytest.raises(DataError, match=f"{path}:2: no column 'code'"):
        model.predict_files([path])
    with pytest.raises(DataError, match="input 0: no column 'rate'"):
        model([{"size": 1, "proto": "tcp", "size.1": 7, "code": 2}])
    with pytest.raises(DataError, match="input 0: expected a row"):
        model(["1,tcp,2,7,2"])
    with pytest.raises(DataError, match="input 0: column 'rate' holds a list"):
        model([{"size": 1, "proto": "tcp", "rate": [1], "size.1": 7, "code": 2}])
    (tmp_path / "rows.txt").write_text("1,tcp\n")
    with pytest.raises(DataError, match="give a .csv"):
        model.predict_files([tmp_path / "rows.txt"])
    (row,) = model.task.read_inputs(write_rows(tmp_path / "ok.csv", [[1, "tcp", 2, 7, 2, "Worm"]]))
    assert model.task.targets([Raw(row.value, row.where, " DoS ")]).tolist() == [1]
    with pytest.raises(DataError, match=r"ok.csv:2: target 'Worm' in 'Label', not a class"):
        model.task.targets([Raw(row.value, row.where, row.value["Label"])])
    with pytest.raises(DataError, match=r"ok.csv:2: no target in 'Label'"):
        model.task.targets([row])


def test_a_moved_copy_scores_the_same_and_a_changed_file_is_refused(tmp_path):
    opts = TabularCSVTask.write_example(tmp_path)
    run = train_tiny({"name": "tabular-csv", **opts}, tmp_path / "run")
    (tmp_path / "moved").mkdir()
    copy = tmp_path / "moved" / "flows.csv"
    shutil.move(opts["path"], copy)
    model = predictor(run)
    assert model.score("test", data=copy) == final_metrics(run)
    with copy.open("a") as fh:
        fh.write("1,tcp,0.5,BENIGN\n")
    with pytest.raises(DataError, match="changed since the run trained on it"):
        model.score("test", data=copy)
