"""Text classification from CSV / JSONL: tokenizers, train-only vocabulary, labels, splits, errors."""
import json

import pytest
import torch

from anyformer.errors import ConfigError, DataError
from anyformer.tasks.text import TextCSVTask, TextJSONLTask

from .helpers import check_model_fits, write_csv



def test_bytes_tokenizer_and_seeded_split(tmp_path):
    rows = [(f"review {i} é", "pos" if i % 3 else "neg") for i in range(40)]
    task = TextCSVTask(path=write_csv(tmp_path / "t.csv", ["text", "label"], rows), max_len=9)
    s = task.splits()
    assert [len(s[k]) for k in ("train", "val", "test")] == [32, 4, 4]
    assert task.classes == ["neg", "pos"] and not task.multi_label
    b = s["train"].batch(torch.arange(len(s["train"])))
    assert b.inputs.dtype == torch.long and b.inputs.shape[1] <= 9
    texts = {bytes(r[m].tolist()).decode("utf-8", "ignore") for r, m in zip(b.inputs, b.mask)}
    assert {r[0].encode()[:9].decode("utf-8", "ignore") for r in rows} >= texts
    # Each text's label follows it into whichever split it lands in.
    label_of = {r[0].encode()[:9]: r[1] for r in rows}
    for r, m, y in zip(b.inputs, b.mask, b.target):
        assert task.classes[int(y)] == label_of[bytes(r[m].tolist())]
    check_model_fits(task)
    check_model_fits(task, "bert")


def test_words_vocab_from_train_only_and_split_column(tmp_path):
    rows = [("the cat sat", "a", "train"), ("the dog ran", "b", "train"), ("a zebra!", "a", "validation"),
            ("the cat ran", "b", "test")]
    task = TextCSVTask(path=write_csv(tmp_path / "t.csv", ["text", "label", "split"], rows), tokenizer="words")
    s = task.splits()
    assert [len(s[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    assert set(task.vocab) == {"the", "cat", "sat", "dog", "ran"} and task.vocab["the"] == 2  # most frequent first
    val = s["val"].batch(torch.arange(1))
    assert val.inputs[0, :3].tolist() == [1, 1, 1]  # 'a', 'zebra', '!' unseen in train -> unknown
    check_model_fits(task)


def test_multi_label_json_lists_and_delimiter(tmp_path):
    path = tmp_path / "t.jsonl"
    with open(path, "w") as fh:
        for i in range(20):
            fh.write(json.dumps({"text": f"doc {i}", "label": ["sports", "news"][: 1 + i % 2]}) + "\n")
    task = TextJSONLTask(path=str(path))
    s = task.splits()
    assert task.multi_label and task.classes == ["news", "sports"]
    y = torch.cat([s[k].target for k in ("train", "val", "test")])
    assert y.shape == (20, 2) and y.dtype == torch.float32 and int(y.sum()) == 30
    check_model_fits(task)
    rows = [(f"t{i}", "x|y" if i % 2 else "y") for i in range(20)]
    task = TextCSVTask(path=write_csv(tmp_path / "d.csv", ["text", "label"], rows), label_delimiter="|")
    assert task.splits() and task.multi_label and task.classes == ["x", "y"]
    assert task.model_defaults()["head"]["multi_label"] is True


def test_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        TextCSVTask(path=str(tmp_path / "none.csv")).splits()
    path = write_csv(tmp_path / "t.csv", ["body", "label"], [("x", "a")])
    with pytest.raises(DataError, match="no column 'text'.*text_column"):
        TextCSVTask(path=path).splits()
    path = write_csv(tmp_path / "t.csv", ["text", "label", "split"], [("x", "a", "train"), ("y", "b", "tset")])
    with pytest.raises(DataError, match=r"t.csv:3: split 'tset' \(did you mean 'test'\?\)"):
        TextCSVTask(path=path).splits()
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"text": "b", label: 1}\n')
    with pytest.raises(DataError, match=r"b.jsonl:2: not valid JSON"):
        TextJSONLTask(path=str(bad)).splits()
    bad.write_text('{"text": "a", "lable": "x"}\n')
    with pytest.raises(DataError, match=r"b.jsonl:1: no key 'label' \(did you mean 'lable'\?\)"):
        TextJSONLTask(path=str(bad)).splits()
    with pytest.raises(ConfigError, match="unknown tokenizer 'word'"):
        TextCSVTask(path="x", tokenizer="word")


def _jsonl(tmp_path, objects, name="t.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(o) + "\n" for o in objects))
    return str(path)


def test_a_single_class_is_refused(tmp_path):
    # Reported: a single-class file trained to accuracy 1.0 and loss 0.0.
    path = write_csv(tmp_path / "one.csv", ["text", "label"], [(f"t{i}", "a") for i in range(20)])
    with pytest.raises(DataError, match=r"one.csv: only one class 'a' in the label column 'label'; a classifier needs at least two"):
        TextCSVTask(path=path).splits()
    path = _jsonl(tmp_path, [{"text": f"t{i}", "label": ["x", "y"] if i % 2 else ["y", "x"]} for i in range(20)])
    with pytest.raises(DataError, match=r"t.jsonl: every row has the labels \['x', 'y'\] in 'label'; a classifier needs rows whose labels differ"):
        TextJSONLTask(path=path).splits()


@pytest.mark.parametrize("label, shown", [(None, "null"), ({"a": 1}, "a JSON object"), ([["x"]], "a JSON list"),
                                          (["x", None], "null"), (float("nan"), "NaN")])
def test_a_label_that_is_no_class_name_names_its_line(tmp_path, label, shown):
    # Reported: a JSON null label became a class 'None'.
    rows = [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}, {"text": "c", "label": label}]
    path = _jsonl(tmp_path, rows)
    with pytest.raises(DataError, match=rf"t.jsonl:3: the label in 'label' is {shown}; give a string or a number"):
        TextJSONLTask(path=path).splits()


def test_a_json_list_label_in_csv_is_checked_the_same_way(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["text", "label"], [("a", "x"), ("b", '["x", null]')])
    with pytest.raises(DataError, match=r"t.csv:3: the label in 'label' is null"):
        TextCSVTask(path=path).splits()


def test_numbers_and_booleans_are_class_names(tmp_path):
    rows = [{"text": f"t{i}", "label": [1, 2.5, True][i % 3]} for i in range(30)]
    task = TextJSONLTask(path=_jsonl(tmp_path, rows))
    task.splits()
    assert task.classes == ["1", "2.5", "True"] and not task.multi_label


def test_a_named_split_with_no_rows_names_the_file(tmp_path):
    rows = [(f"t{i}", "ab"[i % 2], "train" if i < 8 else "test") for i in range(10)]
    path = write_csv(tmp_path / "s.csv", ["text", "label", "split"], rows)
    with pytest.raises(DataError, match=r"s.csv: no row has split 'val' in column 'split' \(train: 8, val: 0, test: 2\); "
                                        r"give some rows split=val"):
        TextCSVTask(path=path).splits()


def test_too_few_rows_for_a_random_split_names_the_file(tmp_path):
    path = write_csv(tmp_path / "few.csv", ["text", "label"], [("a", "x"), ("b", "y"), ("c", "x"), ("d", "y")])
    with pytest.raises(DataError, match=r"few.csv: task 'text-csv': the test split is empty; give it more data"):
        TextCSVTask(path=path).splits()


def test_a_header_without_rows(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("text,label\n")
    with pytest.raises(DataError, match=r"h.csv: no data rows \(the file holds no more than a header or blank lines\)"):
        TextCSVTask(path=str(path)).splits()
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match=r"e.jsonl: no data rows"):
        TextJSONLTask(path=str(tmp_path / "e.jsonl")).splits()


def test_a_train_split_of_one_class_is_refused(tmp_path):
    rows = [(f"t{i}", "a" if i < 8 else "b", "train" if i < 8 else ["val", "test"][i % 2]) for i in range(12)]
    path = write_csv(tmp_path / "s.csv", ["text", "label", "split"], rows)
    with pytest.raises(DataError, match=r"s.csv: only one class 'a' in the train split's label column 'label'"):
        TextCSVTask(path=path).splits()
