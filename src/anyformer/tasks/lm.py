"""Language modelling on a text: predict each next byte (or tokenizer token), scored in bits
per byte. The text is the user's file or folder, or the embedded corpus (tiny shakespeare,
shipped gzip-compressed in tasks/corpora/ and checked against its SHA-256 whenever it is read)."""
from __future__ import annotations

import codecs
import gzip
import hashlib
import math
import zlib
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from anyformer.errors import ConfigError, DataError, unknown
from anyformer.registry import register
from anyformer.tasks.base import Split, Task
from anyformer.tasks.files import check_encoding, decode_error, python_codec
from anyformer.tasks.raw import Raw, text_records
from anyformer.tasks.text import PretrainedTokenizer, load_tokenizer

CORPUS = Path(__file__).with_name("corpora") / "shakespeare.txt.gz"
# SHA-256 of the uncompressed text: karpathy/char-rnn's data/tinyshakespeare/input.txt.
CORPUS_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TEXT_SUFFIXES = (".txt", ".md")
SPLITS = ("train", "val", "test")


def load_corpus(path: str | Path | None = None, sha256: str = CORPUS_SHA256) -> bytes:
    """The embedded corpus's text (`path`, default CORPUS) as bytes, refused unless they hash
    to `sha256` (a damaged or changed copy would train and score on other text than every
    other machine's)."""
    path = Path(CORPUS if path is None else path)
    try:
        raw = gzip.decompress(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"{path}: the embedded corpus is missing; reinstall anyformer, or give a text as lm:PATH") from None
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: the embedded corpus is not a readable gzip file ({err}); reinstall anyformer") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise DataError(f"{path}: the embedded corpus has SHA-256 {digest[:16]}..., not {sha256[:16]}... "
                        "(changed or damaged); reinstall anyformer, or give a text as lm:PATH")
    return raw


def text_files(root: Path) -> list[Path]:
    """The .txt and .md files under folder `root` (subfolders too, hidden ones skipped), in
    sorted order of their paths below it."""
    found = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def read_text(path: Path, encoding: str, limit: int | None) -> str:
    """The text of `path` in `encoding` (a UTF-8 BOM dropped), at most `limit` bytes of it; a
    multi-byte character cut by the limit is left out, a byte that does not decode is a
    DataError naming its line and offset."""
    with path.open("rb") as fh:
        raw = fh.read() if limit is None else fh.read(limit)
        cut = limit is not None and bool(fh.read(1))
    decoder = codecs.getincrementaldecoder(python_codec(encoding))(errors="strict")
    try:
        return decoder.decode(raw, final=not cut)
    except UnicodeDecodeError:
        raise decode_error(path, encoding) from None


def byte_lengths(text: str) -> np.ndarray:
    """UTF-8 bytes of each character of `text` (1 to 4)."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return 1 + (points >= 0x80).astype(np.int64) + (points >= 0x800) + (points >= 0x10000)


def windows(ids: torch.Tensor, start: int, end: int, context: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets [n, context] scoring tokens start..end-1 of `ids`, each window's
    targets its inputs shifted by one (the first input is token start-1). Windows begin
    every `stride` tokens; the last one, when the tokens do not fill it, is padded (input 0,
    target -100), so every token in range is a target. Both are views of one padded copy."""
    n = end - start
    full = (n - context) // stride + 1 if n >= context else 0
    length = n if full and (full - 1) * stride + context == n else full * stride + context
    pad = length - n
    x = torch.cat([ids[start - 1:end - 1], ids.new_zeros(pad)])
    y = torch.cat([ids[start:end], ids.new_full((pad,), -100)])
    return x.unfold(0, context, stride), y.unfold(0, context, stride)


@register("task", "lm")
class LanguageModelTask(Task):
    """Next-byte (or tokenizer-token) prediction on a text: `path`, a text file or a folder of
    .txt / .md files (read in sorted order, subfolders too, joined by `separator`), or by
    default the embedded corpus, tiny shakespeare (1.1 MB of Shakespeare's plays, public
    domain; no download, the same bytes on every machine). tokenizer 'bytes': the text's
    UTF-8 bytes (vocabulary 256); a tokenizer.json path: that tokenizer's ids, no special
    tokens added. The token stream is split BY POSITION: the first 1 - val_fraction -
    test_fraction of it trains, the next val_fraction validates, the last test_fraction
    tests; every token after the first is the target of exactly one split. Each split is
    cut into windows of `context` tokens whose targets are the inputs shifted by one (the
    last window of a split padded, its padding ignored); val and test windows do not
    overlap, training windows start every `stride` tokens. Scored by bits per byte (the
    total loss in bits over the UTF-8 bytes of the text the scored tokens cover; for
    bytes, loss / ln 2), with loss, perplexity and next-token accuracy."""

    problem = "lm"
    modality = "tokens"
    primary_metric = "bits_per_byte"
    paper = "Bits per byte on text, as in char-rnn (Karpathy 2015) and The Pile (Gao et al. 2020)"
    argument_option = "path"
    file_options = ("path",)
    raw_input = "text"
    bundled_options = ("tokenizer",)
    example_options = {"context": 16, "max_bytes": 4096}

    def __init__(
        self,
        path: Annotated[str | None, Field(description="a text file, or a folder of .txt / .md files; "
                                                      "null: the embedded corpus (tiny shakespeare)")] = None,
        tokenizer: Annotated[str, Field(description="'bytes' (UTF-8 bytes, vocabulary 256) or the path of a "
                                                    "tokenizer.json (a Hugging Face tokenizer)")] = "bytes",
        context: Annotated[int, Field(description="tokens per window: the model's sequence length")] = 128,
        stride: Annotated[int | None, Field(description="training windows start every this many tokens "
                                                        "(1..context; null: context, no overlap); val and test never overlap")] = None,
        val_fraction: Annotated[float, Field(description="share of the token stream, after the training part, that validates")] = 0.05,
        test_fraction: Annotated[float, Field(description="share of the token stream, at its end, that tests")] = 0.05,
        max_bytes: Annotated[int | None, Field(description="read at most this many bytes of text (of a folder: "
                                                           "in all); null: all of it")] = None,
        encoding: Annotated[str, Field(description="the files' text encoding, a Python codec name (utf-8, latin-1, cp1252, ...)")] = "utf-8",
        separator: Annotated[str, Field(description="text put between the files of a folder")] = "\n\n",
    ) -> None:
        super().__init__()
        if context < 1:
            raise ConfigError(f"task 'lm': context must be >= 1, got {context}")
        if stride is not None and not 1 <= stride <= context:
            raise ConfigError(f"task 'lm': stride must be between 1 and context ({context}), got {stride}; "
                              "a larger one would skip tokens")
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ConfigError("task 'lm': val_fraction and test_fraction must be in (0, 1) with a sum below 1 "
                              f"(got {val_fraction}, {test_fraction})")
        if max_bytes is not None and max_bytes < 1:
            raise ConfigError(f"task 'lm': max_bytes must be >= 1 (or null: all of the text), got {max_bytes}")
        self.encoding = check_encoding(encoding, "lm")
        self.path, self.tokenizer, self.context = path, tokenizer, context
        self.stride = context if stride is None else stride
        self.fractions = (1 - val_fraction - test_fraction, val_fraction, test_fraction)
        self.max_bytes, self.separator = max_bytes, separator
        self.pretrained = self._load_tokenizer(tokenizer, context)
        self.bytes_per_token: dict[str, float] = {}
        self._mean_bytes_per_token = 1.0

    @staticmethod
    def _load_tokenizer(name: str, context: int) -> PretrainedTokenizer | None:
        if name == "bytes":
            return None
        if not name.endswith(".json") and "/" not in name:
            raise unknown("tokenizer of task 'lm'", name, ("bytes", "PATH/tokenizer.json"))
        pretrained = load_tokenizer(name, context)
        pretrained.tokenizer.no_truncation()  # the whole text is one stream, cut into windows here
        return pretrained

    @property
    def vocab_size(self) -> int:
        return 256 if self.pretrained is None else self.pretrained.vocab_size

    @property
    def source(self) -> str:
        """What the text is, for messages: the file or folder, or the embedded corpus."""
        return str(CORPUS) if self.path is None else str(self.path)

    # -- reading
    def read(self) -> str:
        """The whole text: the embedded corpus, the file, or the folder's files joined."""
        if self.path is None:
            raw = load_corpus()
            return raw[: self.max_bytes].decode("utf-8", "ignore") if self.max_bytes else raw.decode("utf-8")
        root = Path(self.path).expanduser()
        if root.is_file():
            text = read_text(root, self.encoding, self.max_bytes)
            if not text.strip():
                raise DataError(f"{root}: the file is empty (no text to model); give a text file with some text in it")
            return text
        if not root.exists():
            raise DataError(f"text {str(root)!r} does not exist; give a text file, or a folder of .txt / .md files, as lm:PATH")
        files = text_files(root)
        if not files:
            raise DataError(f"{root}: no .txt or .md file in this folder or its subfolders; put the text in such files, "
                            "or give one file as lm:FILE")
        texts, left = [], self.max_bytes
        for file in files:
            if left is not None and left <= 0:
                break
            text = read_text(file, self.encoding, left)
            if left is not None:
                left -= min(file.stat().st_size, left)  # the bytes read of it
            if text.strip():
                texts.append(text)
        if not texts:
            raise DataError(f"{root}: its {len(files)} .txt / .md files hold no text; give files with some text in them")
        return self.separator.join(texts)

    def tokenize(self, text: str) -> tuple[torch.Tensor, np.ndarray | None]:
        """(token ids [T], the UTF-8 bytes of text each token stands for [T], or None for
        bytes, one each). A token stands for the text from its start to the next token's,
        so the counts add up to the text's bytes, spaces and dropped characters included."""
        if self.pretrained is None:
            return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long(), None
        encoding = self.pretrained.tokenizer.encode(text, add_special_tokens=False)
        ids = torch.tensor(encoding.ids, dtype=torch.long)
        if len(ids) == 0:
            return ids, np.zeros(0, dtype=np.int64)
        starts = np.array([start for start, _ in encoding.offsets], dtype=np.int64)
        starts[0] = 0  # text before the first token (leading spaces) is the first token's
        starts = np.maximum.accumulate(starts)  # offsets of tokens of one character may repeat
        at = np.concatenate([[0], np.cumsum(byte_lengths(text))])  # byte offset of each character
        bounds = np.append(starts, len(text))
        return ids, at[bounds[1:]] - at[bounds[:-1]]

    def bounds(self, total: int) -> list[tuple[int, int]]:
        """(start, end) of the targets of train, val and test in a stream of `total` tokens:
        by position, train from token 1 (token 0 has no previous one to predict it from)."""
        train_end = round(total * self.fractions[0])
        val_end = round(total * (self.fractions[0] + self.fractions[1]))
        return [(1, train_end), (train_end, val_end), (val_end, total)]

    def build_splits(self) -> dict[str, Split]:
        text = self.read()
        ids, nbytes = self.tokenize(text)
        total = len(ids)
        what = "bytes" if self.pretrained is None else "tokens"
        if total == 0:
            raise DataError(f"{self.source}: the tokenizer makes no tokens of this text; give other text or task.tokenizer=bytes")
        splits, counts = {}, {}
        for name, (start, end), share in zip(SPLITS, self.bounds(total), self.fractions):
            if end - start < self.context:
                need = math.ceil((self.context + 1) / min(self.fractions))
                raise DataError(f"{self.source}: {total} {what} of text are too few for train, val and test splits of one "
                                f"context ({self.context}) each: the {name} split ({share:.0%}) gets {max(end - start, 0)}; "
                                f"give at least {need} {what} of text, or a smaller task.context")
            stride = self.stride if name == "train" else self.context
            inputs, target = windows(ids, start, end, self.context, stride)
            splits[name] = Split(inputs, target)
            counts[name] = (end - start, end - start if nbytes is None else int(nbytes[start:end].sum()))
        self.bytes_per_token = {name: b / n for name, (n, b) in counts.items()}
        scored = sum(n for n, _ in counts.values())
        self._mean_bytes_per_token = sum(b for _, b in counts.values()) / scored
        return splits

    # -- model
    def model_defaults(self) -> dict[str, Any]:
        return {"encoder": {"name": "tokens", "vocab_size": self.vocab_size}, "head": {"name": "lm", "vocab_size": self.vocab_size},
                "max_len": self.context, "causal": True}

    def required_options(self) -> dict[str, dict[str, Any]]:
        return {"encoder": {"vocab_size": self.vocab_size}, "head": {"vocab_size": self.vocab_size}}

    # -- objective: the lm problem's, with each token's bytes for bits per byte
    def compact(self, output: torch.Tensor, target: torch.Tensor, split: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The lm problem's [n, 2] rows (loss, hit) with a third column: the bytes of text
        a token of `split` stands for on average (1 for bytes; for a tokenizer, the split's
        bytes over its tokens, so the split's bits per byte is its total loss in bits over
        its bytes). A batch of no named split takes the whole text's average."""
        stats, kept = self.strategy.compact(output, target)
        if self.pretrained is None:
            per = 1.0
        else:
            self.splits()
            per = self.bytes_per_token.get(split, self._mean_bytes_per_token)
        return torch.cat([stats, stats.new_full((len(stats), 1), per)], 1), kept

    # -- predict: a text's bits per byte and the model's next token
    def preprocessing(self) -> dict[str, Any]:
        self.splits()
        return {"bytes_per_token": self.bytes_per_token, "mean_bytes_per_token": self._mean_bytes_per_token}

    def restore(self, state: dict[str, Any]) -> None:
        self.bytes_per_token = {k: float(v) for k, v in state["bytes_per_token"].items()}
        self._mean_bytes_per_token = float(state["mean_bytes_per_token"])

    def read_inputs(self, path: Path) -> list[Raw]:
        return text_records(path, "text", self.encoding)

    def _read_tail(self, record: Raw) -> tuple[torch.Tensor, int]:
        """(the last `context` token ids of the record's text, the UTF-8 bytes those after the first stand for)."""
        if not isinstance(record.value, str) or not record.value:
            raise DataError(f"{record.where}: expected a non-empty text, got {record.value!r}")
        ids, nbytes = self.tokenize(record.value)
        if len(ids) == 0:
            raise DataError(f"{record.where}: the tokenizer makes no tokens of this text; give other text")
        ids = ids[-self.context:]
        return ids, len(ids) - 1 if nbytes is None else int(nbytes[-len(ids):][1:].sum())

    def encode(self, records: list[Raw]) -> tuple[torch.Tensor, None]:
        """Token ids [N, L] of each text's last `context` tokens (L: the longest), padded at
        the end: a causal model's outputs before the padding do not see it."""
        tails = [self._read_tail(r)[0] for r in records]
        inputs = torch.zeros(len(tails), max(len(t) for t in tails), dtype=torch.long)
        for i, t in enumerate(tails):
            inputs[i, :len(t)] = t
        return inputs, None

    def describe(self, output: torch.Tensor, records: list[Raw]) -> list[dict[str, Any]]:
        """{tokens, bits_per_byte (of the text read: its last `context` tokens, the first
        scored by none), next (the most likely next token, as text)} per text; output [N, L, V]."""
        out = []
        for o, record in zip(output.float(), records):
            ids, nbytes = self._read_tail(record)
            n = len(ids)
            nll = -o[: n - 1].log_softmax(-1).gather(1, ids[1:, None]).sum()
            best = int(o[n - 1].argmax())
            following = (bytes([best]).decode("utf-8", "replace") if self.pretrained is None
                         else self.pretrained.tokenizer.decode([best]))
            out.append({"tokens": n, "bits_per_byte": float(nll) / math.log(2) / nbytes if nbytes else float("nan"),
                        "next": following})
        return out
