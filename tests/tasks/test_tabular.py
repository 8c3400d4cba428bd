"""Tabular CSV: type inference, overrides, train-only scaling and codes, network-flow quirks, errors."""

import pytest
import torch

from anyformer.errors import ConfigError, DataError
from anyformer.tasks.tabular import TabularCSVTask

from .helpers import check_model_fits, write_csv



def all_rows(s, key):
    return torch.cat([s[k].inputs[key] for k in ("train", "val", "test")])


def test_network_flow_csv_loads_as_is(tmp_path):
    # CIC-IDS quirks: spaces around header names, a repeated column, Infinity/NaN, string labels.
    header = [" Flow Duration", " Fwd Header Length", "Flow Bytes/s", " Fwd Header Length", "proto", " Label"]
    rows = [(i, 20 + i % 4, "Infinity" if i == 3 else "NaN" if i == 4 else i * 0.5, 7, ["tcp", "udp", "icmp"][i % 3],
             "BENIGN" if i % 2 else "DDoS") for i in range(50)]
    task = TabularCSVTask(path=write_csv(tmp_path / "f.csv", header, rows), target="Label")
    s = task.splits()
    assert task.numeric_columns == ["Flow Duration", "Fwd Header Length", "Flow Bytes/s", "Fwd Header Length.1"]
    assert task.categorical_columns == ["proto"] and task.classes == ["BENIGN", "DDoS"]
    assert sum(len(s[k]) for k in ("train", "val", "test")) == 50 and len(s["test"]) == 10
    x = all_rows(s, "numeric")
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    # z-scored with train statistics: the train rows have mean 0, std 1 per varying column.
    tr = s["train"].inputs["numeric"]
    assert torch.allclose(tr[:, 0].mean(), torch.tensor(0.0), atol=1e-5) and abs(float(tr[:, 0].std(unbiased=False)) - 1) < 1e-4
    assert torch.equal(all_rows(s, "numeric")[:, 3], torch.zeros(50))  # a constant column stays 0
    assert int(s["train"].inputs["categorical"].min()) == 1 and task.cardinalities == [4]
    check_model_fits(task)


def test_overrides_and_unseen_categories(tmp_path):
    rows = [(i % 5, f"c{i}" if i >= 27 else ["a", "b"][i % 2], i, i % 2) for i in range(30)]
    path = write_csv(tmp_path / "t.csv", ["code", "cat", "x", "y"], rows)
    task = TabularCSVTask(path=path, target="y", categorical=["code"], drop=["x"], val_fraction=0.1, test_fraction=0.1)
    s = task.splits()
    assert task.categorical_columns == ["code", "cat"] and task.numeric_columns == []
    assert task.classes == ["0", "1"] and "numeric" not in s["train"].inputs
    codes = all_rows(s, "categorical")
    # Codes are given on train (1..k); a value the train split never saw is 0 (unknown).
    assert task.cardinalities[0] == 6 and int(codes[:, 0].min()) == 1
    train_codes = s["train"].inputs["categorical"][:, 1]
    assert int(train_codes.min()) >= 1 and len(set(train_codes.tolist())) == task.cardinalities[1] - 1
    # 'a', 'b' and the rare values c27..c29 the train split holds get codes; the rest are 0.
    rare_in_train = task.cardinalities[1] - 3
    zeros = sum(int((s[k].inputs["categorical"][:, 1] == 0).sum()) for k in ("val", "test"))
    assert zeros == 3 - rare_in_train
    check_model_fits(task)
    task = TabularCSVTask(path=path, target="cat", numeric=["code", "x", "y"])
    task.splits()
    assert task.numeric_columns == ["code", "x", "y"]


def test_a_column_with_text_after_numbers_turns_categorical(tmp_path):
    rows = [("1" if i < 20 else "1.0" if i < 25 else "other", i, i % 2) for i in range(40)]
    task = TabularCSVTask(path=write_csv(tmp_path / "t.csv", ["v", "x", "label"], rows))
    s = task.splits()
    assert task.categorical_columns == ["v"]
    # '1' and '1.0' are one category, 'other' another.
    assert len(set(all_rows(s, "categorical")[:, 0].tolist())) == 2


def test_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        TabularCSVTask(path=str(tmp_path / "none.csv")).splits()
    path = write_csv(tmp_path / "t.csv", ["a", "label"], [(1, "x"), ("two", "y")])
    with pytest.raises(DataError, match=r"t.csv:3: column 'a' holds 'two', not a number"):
        TabularCSVTask(path=path, numeric=["a"]).splits()
    with pytest.raises(DataError, match=r"no column 'lable' .*\(option target\)"):
        TabularCSVTask(path=path, target="lable").splits()
    with pytest.raises(DataError, match=r"no column 'b' \(option categorical\)"):
        TabularCSVTask(path=path, categorical=["b"]).splits()
    (tmp_path / "r.csv").write_text("a,label\n1,x\n2\n")
    with pytest.raises(DataError, match=r"r.csv:3: 1 fields, the header has 2"):
        TabularCSVTask(path=str(tmp_path / "r.csv")).splits()
    with pytest.raises(ConfigError, match="both categorical and numeric"):
        TabularCSVTask(path=path, categorical=["a"], numeric=["a"])
