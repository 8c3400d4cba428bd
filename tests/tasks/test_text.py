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
