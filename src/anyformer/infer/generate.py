"""Text in, text out for a causal language-model run: the run's own tokenizer (UTF-8 bytes
for a 256-id vocabulary, else the tokenizer.json the run records) around model.generate."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anyformer.catalog import load_run
from anyformer.errors import ConfigError
from anyformer.runtime import resolve_device
from anyformer.tasks.text import load_tokenizer

BYTES = "bytes"


@dataclass
class TextCodec:
    """encode: text -> ids; decode: ids -> text; name: what the run's text is read as."""

    name: str
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]


def run_tokenizer(config: dict[str, Any]) -> str | None:
    """The tokenizer a run records: its task's `tokenizer` option (a trained run) or the
    tokenizer.json copied in (an imported one); None when it records none."""
    task = config.get("task") or {}
    named = task.get("tokenizer") if isinstance(task, dict) else None
    return named or (config.get("imported") or {}).get("tokenizer")


def text_codec(config: dict[str, Any], run_dir: str | Path) -> TextCodec:
    """How this run turns text into ids and back."""
    vocab = (config["model"].get("encoder") or {}).get("vocab_size", 256)
    name = run_tokenizer(config)
    kept = Path(run_dir) / "tokenizer.json"  # the run's own copy: the original may be gone
    if name not in (None, BYTES) and kept.is_file():
        name = str(kept)
    if name in (None, BYTES) and vocab == 256:
        return TextCodec(BYTES, lambda text: list(text.encode("utf-8")),
                         lambda ids: bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace"))
    if name is None or not str(name).endswith(".json"):
        raise ConfigError(f"{run_dir}: the run's {vocab}-id vocabulary is not bytes and it records no tokenizer.json "
                          f"(its tokenizer: {name!r}); generation needs the tokenizer the model was trained with")
    tokenizer = load_tokenizer(str(name), 1 << 30)
    return TextCodec(str(name), tokenizer.encode, lambda ids: tokenizer.tokenizer.decode(ids))


def generate_text(run_dir: str | Path, prompt: str, max_new_tokens: int = 200, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, seed: int | None = 0,
                  device: str = "auto") -> str:
    """The prompt and its continuation, sampled from the run's model."""
    model, config = load_run(run_dir)
    codec = text_codec(config, run_dir)
    ids = codec.encode(prompt)
    if not ids:
        raise ConfigError("the prompt is empty; give at least one character to continue")
    model.to(resolve_device(device))
    out = model.generate(torch.tensor([ids]), max_new_tokens, temperature, top_k, top_p, seed)
    return codec.decode(out[0].tolist())
