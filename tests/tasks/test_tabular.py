"""Tabular CSV: type inference, overrides, train-only scaling and codes, network-flow quirks,
errors; pyarrow's read against the csv module's row pass; the cache of parsed arrays."""
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anyformer.errors import ConfigError, DataError
from anyformer.tasks import files, table_cache
from anyformer.tasks.tabular import TabularCSVTask

from .helpers import check_model_fits, write_csv


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(table_cache.CACHE_ENV, str(tmp_path / "cache"))


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


def assert_same_read(a, b):
    """Two reading passes returned the same columns (kind, numbers or codes and their
    spellings, in order), labels and row count."""
    (ca, la, na), (cb, lb, nb) = a, b
    assert na == nb and la == lb and list(ca) == list(cb)
    for name in ca:
        x, y = ca[name], cb[name]
        assert (x.numbers is None) == (y.numbers is None), name
        if x.numbers is not None:
            assert np.array_equal(np.frombuffer(x.numbers), np.frombuffer(y.numbers), equal_nan=True), name
        else:
            assert np.array_equal(np.frombuffer(x.codes, np.int32), np.frombuffer(y.codes, np.int32)), name
            assert x.values == y.values, name


def test_pyarrow_read_matches_the_row_pass(tmp_path, monkeypatch):
    # Small blocks: pyarrow guesses types from the first block, so later text must still win.
    monkeypatch.setattr(files, "BLOCK_SIZE", 256)
    header = [" n ", "ws", "miss", "hex", "under", "nan", "late", "forced", "dup", "dup", "cat", " y "]
    spellings = ["NA", "none", "NULL", "?", "", "N/A", "nAn"]
    rows = [(i * 1.5, f" {i} ", spellings[i % 7] if i % 3 == 0 else i, "0x10" if i == 40 else i,
             "1_000" if i == 7 else i, "-nan" if i == 9 else i, "text" if i == 55 else i, i % 4, i, -i,
             ["tcp", " udp", "icmp "][i % 3], ["None", "NA", "a"][i % 3]) for i in range(60)]
    path = Path(write_csv(tmp_path / "t.csv", header, rows))
    task = TabularCSVTask(path=str(path), target="y", categorical=["forced"])
    fast = task._read_arrow(path)
    assert_same_read(fast, task._read_rows(path))
    columns, labels, n = fast
    kinds = {c: "numbers" if col.numbers is not None else "codes" for c, col in columns.items()}
    # float() reads ' 5 ', '1_000' and '-nan'; not '0x10'; 'text' turns a column categorical part-way
    assert kinds == {"n": "numbers", "ws": "numbers", "miss": "numbers", "hex": "codes", "under": "numbers",
                     "nan": "numbers", "late": "codes", "forced": "codes", "dup": "numbers", "dup.1": "numbers",
                     "cat": "codes"}
    assert np.isnan(np.frombuffer(columns["miss"].numbers)[::3]).all() and n == 60
    assert set(labels.values) == {"None", "NA", "a"}  # a label spelled like a missing value is a label
    assert columns["cat"].values == {"tcp": 0, "udp": 1, "icmp": 2}
    assert list(columns["late"].values)[:2] == ["0.0", "1.0"] and columns["late"].values["text"] == 55


TOKENS = st.sampled_from(["1", "2.5", " 3 ", "-0", "1e3", "Infinity", "-inf", "NaN", "nan", "NA", "none", "?", "",
                          "0x1A", "1_0", "-nan", "a", " b ", "c d", "1.0", "1,5"])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cols=st.lists(st.lists(TOKENS, min_size=6, max_size=6), min_size=1, max_size=4),
       labels=st.lists(st.sampled_from(["x", "y", "None", " z ", "1", "1.0"]), min_size=6, max_size=6),
       forced=st.sampled_from([{}, {"categorical": ["c0"]}, {"numeric": ["c0"]}]))
def test_pyarrow_read_agrees_with_the_row_pass_on_any_table(tmp_path, cols, labels, forced):
    path = Path(write_csv(tmp_path / "h.csv", [f"c{k}" for k in range(len(cols))] + ["label"],
                          [row + (y,) for row, y in zip(zip(*cols), labels)]))
    task = TabularCSVTask(path=str(path), **forced)
    try:
        slow = task._read_rows(path)
    except DataError as err:
        slow = str(err)
    try:
        fast = task._read_arrow(path)
    except files.Unreadable:
        return  # _read then takes the row pass
    except DataError as err:
        assert str(err) == slow
        return
    assert not isinstance(slow, str), slow
    assert_same_read(fast, slow)


def test_blank_rows_are_skipped_and_empty_targets_named(tmp_path):
    (tmp_path / "b.csv").write_text("a,label\n1,x\n,\n   \n2,y\n")
    columns, labels, n = TabularCSVTask(path=str(tmp_path / "b.csv"))._read()
    assert n == 2 and labels.tolist() == ["x", "y"] and np.frombuffer(columns["a"].numbers).tolist() == [1.0, 2.0]
    (tmp_path / "e.csv").write_text("a,label\n1,x\n2, \n")
    with pytest.raises(DataError, match=r"e.csv:3: empty target 'label'; fill it or drop the row"):
        TabularCSVTask(path=str(tmp_path / "e.csv"))._read()
    (tmp_path / "h.csv").write_text("a,label\n")
    with pytest.raises(DataError, match=r"h.csv: no data rows below the header"):
        TabularCSVTask(path=str(tmp_path / "h.csv"))._read()


def test_a_plain_file_is_read_by_pyarrow_then_by_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(table_cache, "CACHE_MIN_BYTES", 0)
    header = [" Flow Duration", "proto", "Bytes/s", " Label"]
    rows = [(i * 3, ["tcp", "udp"][i % 2], "Infinity" if i == 5 else i / 7, ["BENIGN", "DoS"][i % 3 == 0]) for i in range(60)]
    path = write_csv(tmp_path / "f.csv", header, rows)
    monkeypatch.setattr(TabularCSVTask, "_read_rows", lambda *a: pytest.fail("the row pass ran on a plain file"))
    first = TabularCSVTask(path=path, target="Label")
    s1 = first.splits()
    [entry] = (tmp_path / "cache" / "tables").iterdir()
    fresh = first._read_arrow(Path(path))
    monkeypatch.setattr(TabularCSVTask, "_read_arrow", lambda *a: pytest.fail("read again despite the cache"))
    second = TabularCSVTask(path=path, target="Label")
    s2 = second.splits()
    assert_same_read(second._read(), fresh)
    for k in ("train", "val", "test"):
        assert torch.equal(s1[k].inputs["numeric"], s2[k].inputs["numeric"]) and torch.equal(s1[k].target, s2[k].target)
        assert torch.equal(s1[k].inputs["categorical"], s2[k].inputs["categorical"])
    assert second.classes == first.classes == ["BENIGN", "DoS"] and second.cardinalities == first.cardinalities
    # a corrupt entry is read again and rewritten
    entry.write_bytes(b"garbage")
    monkeypatch.undo()
    monkeypatch.setenv(table_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(table_cache, "CACHE_MIN_BYTES", 0)
    assert_same_read(TabularCSVTask(path=path, target="Label")._read(), TabularCSVTask(path=path, target="Label")._read())
    assert np.load(entry, allow_pickle=False)["labels"].shape == (60,)


def test_cache_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(table_cache, "CACHE_MIN_BYTES", 0)
    monkeypatch.setenv(table_cache.CACHE_ENV, "off")
    path = write_csv(tmp_path / "t.csv", ["a", "label"], [(i, i % 2) for i in range(20)])
    TabularCSVTask(path=path).splits()
    assert not (tmp_path / "cache").exists()


def test_a_cache_entry_that_does_not_fit_is_read_again(tmp_path, monkeypatch):
    monkeypatch.setattr(table_cache, "CACHE_MIN_BYTES", 0)
    path = write_csv(tmp_path / "t.csv", ["c", "label"], [("ab"[i % 2], i % 2) for i in range(20)])
    task = TabularCSVTask(path=path)
    good = task._read()
    options = task._cache_options()
    arrays = table_cache.cached_arrays("tables", Path(path), options)
    arrays["x0"] = arrays["x0"] + 5  # codes past the category spellings
    table_cache.cache_arrays("tables", Path(path), options, arrays)
    assert_same_read(task._read(), good)


def test_labels_spelled_with_spaces_are_one_class_in_both_readers(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("a,label\n" + "".join(f"{i},{[' DoS', 'DoS', 'ok ', 'ok'][i % 4]}\n" for i in range(12)))
    task = TabularCSVTask(path=str(path))
    fast, slow = task._read_arrow(path)[1], task._read_rows(path)[1]
    assert fast == slow and fast.values == ["DoS", "ok"] and fast.codes.tolist() == [0, 0, 1, 1] * 3


def test_the_stratified_split_draws_what_a_mask_per_class_drew():
    from anyformer.tasks.splits import stratified_split

    labels = torch.randint(0, 7, (500,), generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(5)
    parts = [[], [], []]
    for c in torch.unique(labels):  # the earlier implementation, class by class
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        cuts = (torch.tensor([0.0, 0.7, 0.1, 0.2]).cumsum(0) * len(idx)).round().long().tolist()
        for p in range(3):
            parts[p].append(idx[cuts[p]: cuts[p + 1]])
    expected = [torch.cat(p).sort().values for p in parts]
    got = stratified_split(labels, [0.7, 0.1, 0.2], seed=5)
    assert all(torch.equal(g, e) for g, e in zip(got, expected))
