"""predict on texts (text-csv, text-jsonl, lm) and on generated tasks: the run's test split
scored again from its original file gives the metrics training reported, exactly."""
import csv
import json
import shutil

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from anyformer.errors import ConfigError, DataError
from anyformer.infer.predict import predictor
from anyformer.tasks.text import TextCSVTask, TextJSONLTask
from tests.cli_run import run_cli

from .helpers import final_metrics, train_tiny


def text_csv(tmp_path, n=60, split_column=False):
    path = tmp_path / "reviews.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"] + (["split"] if split_column else []))
        for i in range(n):
            text = ("a fine, warm film " if i % 3 == 0 else "dull plot and weak cast " if i % 3 == 1 else "so-so ") * (1 + i % 4)
            w.writerow([text, ["pos", "neg", "mixed"][i % 3]] + ([["train", "train", "val", "test"][i % 4]] if split_column else []))
    return path


@pytest.mark.parametrize("tokenizer", ["bytes", "words"])
@pytest.mark.parametrize("split_column", [False, True])
def test_the_test_split_from_the_original_file_gives_the_reported_metrics(tmp_path, tokenizer, split_column):
    path = text_csv(tmp_path, split_column=split_column)
    run = train_tiny({"name": "text-csv", "path": str(path), "tokenizer": tokenizer, "max_len": 40}, tmp_path / "run", model="bert")
    model = predictor(run)
    assert model.score("test") == final_metrics(run)
    assert model.score("val") == final_metrics(run, "val")


def test_the_encoded_records_are_the_splits_tensors(tmp_path):
    path = text_csv(tmp_path)
    run = train_tiny({"name": "text-csv", "path": str(path), "tokenizer": "words", "max_len": 40}, tmp_path / "run", model="bert")
    made = predictor(run).split("test")
    own = TextCSVTask(path=str(path), tokenizer="words", max_len=40).splits()["test"]
    assert torch.equal(made.inputs, own.inputs.long()) and torch.equal(made.mask, own.mask)
    assert torch.equal(made.target, own.target)


def test_predictions_on_new_texts_from_lines_csv_jsonl_and_values(tmp_path):
    path = text_csv(tmp_path)
    run = train_tiny({"name": "text-csv", "path": str(path), "tokenizer": "words", "max_len": 40}, tmp_path / "run", model="bert")
    model = predictor(run)
    (tmp_path / "new.txt").write_text("a warm film\n\nweak cast, dull plot\n")
    (tmp_path / "new.jsonl").write_text(json.dumps({"text": "a warm film", "id": 1}) + "\n")
    (tmp_path / "new.csv").write_text("id,text\n1,a warm film\n")
    lines = model.predict_files([tmp_path / "new.txt"])
    assert [p["input"] for p in lines] == [f"{tmp_path / 'new.txt'}:1", f"{tmp_path / 'new.txt'}:3"]
    for p in lines:
        assert p["label"] in ("mixed", "neg", "pos") and p["probability"] == max(p["probabilities"].values())
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    same = [model.predict_files([tmp_path / f"new.{s}"])[0]["probabilities"] for s in ("jsonl", "csv")]
    # One text alone: the same numbers whichever file it came from (in a batch of two, the
    # same up to float rounding: the matrix products block differently).
    assert same[0] == same[1] == model(["a warm film"])[0]["probabilities"]
    assert same[0] == pytest.approx(lines[0]["probabilities"], abs=1e-6)


def test_a_multi_label_run_predicts_its_labels(tmp_path):
    opts = TextJSONLTask.write_example(tmp_path, n=40)
    run = train_tiny({"name": "text-jsonl", **opts}, tmp_path / "run", model="bert")
    model = predictor(run)
    assert model.score("test") == final_metrics(run)
    (p,) = model(["a b c a b c"])
    assert set(p["probabilities"]) == {"x", "y"}
    assert p["labels"] == [k for k, v in p["probabilities"].items() if v > 0.5]


def test_a_tokenizer_json_travels_with_the_run(tmp_path):
    tok = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "a": 2, "fine": 3, "warm": 4, "film": 5, "dull": 6,
                                      "plot": 7, "and": 8, "weak": 9, "cast": 10, "so": 11, "-": 12, ",": 13}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.save(str(tmp_path / "tokenizer.json"))
    path = text_csv(tmp_path)
    run = train_tiny({"name": "text-csv", "path": str(path), "tokenizer": str(tmp_path / "tokenizer.json"), "max_len": 40},
                     tmp_path / "run", model="bert")
    assert (run / "tokenizer.json").read_bytes() == (tmp_path / "tokenizer.json").read_bytes()
    (tmp_path / "tokenizer.json").unlink()  # predicting needs the run's own copy only
    moved = shutil.copytree(run, tmp_path / "elsewhere")
    assert predictor(moved).score("test") == final_metrics(run)


def test_a_language_model_scores_its_test_split_and_new_texts(tmp_path):
    run = train_tiny({"name": "lm", "context": 16, "max_bytes": 4096}, tmp_path / "run", model="gpt")
    model = predictor(run)
    assert model.score("test") == final_metrics(run)
    texts = ["First Citizen:\nBefore we proceed any further", "hi"]
    out = model(texts)
    assert [p["tokens"] for p in out] == [16, 2]
    # The bits of each text's last 16 bytes under the model, computed here from its logits.
    ids = torch.tensor(list(texts[0].encode()[-16:]))
    with torch.no_grad():
        logp = model.model(ids[None])[0, :-1].log_softmax(-1)
    bits = -logp.gather(1, ids[1:, None]).sum() / torch.log(torch.tensor(2.0)) / 15
    assert out[0]["bits_per_byte"] == pytest.approx(float(bits), rel=1e-5)


@pytest.mark.parametrize("task", [{"name": "modular", "p": 11}, {"name": "copy", "length": 6, "symbols": 4,
                                                                   "num_train": 16, "num_val": 4, "num_test": 4}])
def test_a_generated_task_is_scored_from_its_options_and_takes_no_raw_input(tmp_path, task):
    run = train_tiny(task, tmp_path / "run", model="gpt" if task["name"] == "copy" else "transformer")
    model = predictor(run)
    assert model.score("test") == final_metrics(run)
    with pytest.raises(ConfigError, match="takes no raw input"):
        model(["1 2"])


def test_a_changed_data_file_is_refused_and_a_moved_one_is_taken(tmp_path):
    path = text_csv(tmp_path)
    run = train_tiny({"name": "text-csv", "path": str(path), "max_len": 40}, tmp_path / "run", model="bert")
    moved = tmp_path / "moved.csv"
    shutil.copy(path, moved)
    assert predictor(run).score("test", data=moved) == final_metrics(run)
    with path.open("a") as fh:
        fh.write("one more,pos\n")
    with pytest.raises(DataError, match="changed since the run trained"):
        predictor(run).score("test")


def test_runs_without_preprocessing_and_bad_texts_are_one_line_errors(tmp_path):
    path = text_csv(tmp_path)
    run = train_tiny({"name": "text-csv", "path": str(path), "max_len": 40}, tmp_path / "run", model="bert")
    with pytest.raises(DataError, match=r"input 1: expected a text"):
        predictor(run)(["fine", 3])
    with pytest.raises(DataError, match="no column 'text'"):
        (tmp_path / "other.csv").write_text("body\nhello\n")
        predictor(run).predict_files([tmp_path / "other.csv"])
    (run / "preprocessing.json").unlink()
    with pytest.raises(ConfigError, match="no preprocessing.json"):
        predictor(run)


def test_the_predict_command(tmp_path, capsys):
    path = text_csv(tmp_path)
    run = train_tiny({"name": "text-csv", "path": str(path), "max_len": 40}, tmp_path / "run", model="bert")
    code, out, _ = run_cli(["predict", run, "--split", "test", "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["metrics"] == final_metrics(run) == json.loads(out)["reported"]
    (tmp_path / "new.txt").write_text("a warm film\nweak cast\n")
    code, _, _ = run_cli(["predict", run, tmp_path / "new.txt", "--text", "so-so", "-o", tmp_path / "p.csv"], capsys)
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert code == 0 and [r["input"] for r in rows][2] == "'so-so'" and len(rows) == 3
    assert {"label", "probability", "p(pos)", "p(neg)", "p(mixed)"} <= set(rows[0])
    for args, says in ((["predict", run], "nothing to predict on"), (["predict", run, "--format", "xml", "--text", "a"], "xml"),
                       (["predict", run, tmp_path / "absent.txt"], "absent.txt")):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1
