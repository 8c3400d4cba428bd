"""Synthetic sequence tasks that probe memory and retrieval: copying and associative recall."""
from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import Field

from anyformer.errors import ConfigError
from anyformer.registry import register
from anyformer.tasks.base import Split, Task


def _check_counts(task: str, **counts: int) -> None:
    bad = {k: v for k, v in counts.items() if v < 1}
    if bad:
        raise ConfigError(f"task {task!r}: {', '.join(bad)} must be >= 1, got {bad}")


def _cut(inputs: torch.Tensor, target: torch.Tensor, counts: list[int]) -> dict[str, Split]:
    splits, start = {}, 0
    for name, n in zip(("train", "val", "test"), counts):
        splits[name] = Split(inputs[start:start + n], target[start:start + n])
        start += n
    return splits


@register("task", "copy")
class CopyTask(Task):
    """Copy a random sequence after a delimiter (Graves et al. 2014's copy task, as a language
    model). Full sequence [x_1..x_n, SEP, x_1..x_n] with symbols drawn uniformly from
    `symbols` values; inputs are all but its last token [N, 2n], targets the next token,
    -100 (ignored) except where the next token is part of the copy: the loss, perplexity and
    accuracy count only the n copied tokens. Ids: 0 unused (pad), 1 SEP, symbols 2..S+1."""

    problem = "lm"
    modality = "tokens"
    primary_metric = "accuracy"
    paper = "Neural Turing Machines (Graves et al. 2014): copy task"
    example_options = {"length": 6, "symbols": 4, "num_train": 16, "num_val": 4, "num_test": 4}

    def __init__(
        self,
        length: Annotated[int, Field(description="symbols to copy (the sequence is twice as long plus a delimiter)")] = 64,
        symbols: Annotated[int, Field(description="alphabet size")] = 8,
        num_train: Annotated[int, Field(description="training sequences")] = 10000,
        num_val: Annotated[int, Field(description="val sequences")] = 500,
        num_test: Annotated[int, Field(description="test sequences")] = 1000,
        seed: Annotated[int, Field(description="seed of the sequences")] = 0,
    ) -> None:
        super().__init__()
        _check_counts("copy", length=length, symbols=symbols, num_train=num_train, num_val=num_val, num_test=num_test)
        self.length, self.symbols, self.seed = length, symbols, seed
        self.counts = [num_train, num_val, num_test]

    @property
    def vocab_size(self) -> int:
        return self.symbols + 2

    def build_splits(self) -> dict[str, Split]:
        n = self.length
        gen = torch.Generator().manual_seed(self.seed)
        x = torch.randint(2, self.symbols + 2, (sum(self.counts), n), generator=gen)
        full = torch.cat([x, torch.ones(len(x), 1, dtype=torch.long), x], 1)
        inputs, target = full[:, :-1], full[:, 1:].clone()
        target[:, : n] = -100  # predicting x_2..x_n and SEP is not the task
        return _cut(inputs, target, self.counts)

    def model_defaults(self) -> dict[str, Any]:
        # Teacher forcing: a non-causal model would read the answer from the next input.
        return {"encoder": {"name": "tokens", "vocab_size": self.vocab_size}, "head": {"name": "lm", "vocab_size": self.vocab_size},
                "max_len": 2 * self.length, "causal": True}

    def required_options(self) -> dict[str, dict[str, Any]]:
        return {"encoder": {"vocab_size": self.vocab_size}, "head": {"vocab_size": self.vocab_size}}


@register("task", "associative-recall")
class AssociativeRecallTask(Task):
    """Associative recall (Ba et al. 2016; H3, Fu et al. 2023): `num_pairs` key-value pairs
    k_1 v_1 .. k_n v_n (distinct keys from `keys`, values from `values`) then a query key
    k_q, one of the n; answer its value. Ids: keys 0..K-1, values K..K+V-1; inputs [N, 2n+1].
    `as_lm` false: classification of the value (0..V-1) from the last token; true: language
    model whose targets are -100 except at the query, where the target is the value's id."""

    modality = "tokens"
    paper = "Hungry Hungry Hippos (Fu et al. 2023): associative recall"
    example_options = {"num_pairs": 4, "keys": 8, "values": 6, "num_train": 16, "num_val": 4, "num_test": 4}

    def __init__(
        self,
        num_pairs: Annotated[int, Field(description="key-value pairs before the query")] = 16,
        keys: Annotated[int, Field(description="distinct keys to draw from (>= num_pairs)")] = 32,
        values: Annotated[int, Field(description="distinct values to draw from (the classes)")] = 32,
        as_lm: Annotated[bool, Field(description="a language model scored at the query, instead of classifying the value")] = False,
        num_train: Annotated[int, Field(description="training sequences")] = 10000,
        num_val: Annotated[int, Field(description="val sequences")] = 500,
        num_test: Annotated[int, Field(description="test sequences")] = 1000,
        seed: Annotated[int, Field(description="seed of the sequences")] = 0,
    ) -> None:
        super().__init__()
        _check_counts("associative-recall", num_pairs=num_pairs, values=values, num_train=num_train, num_val=num_val, num_test=num_test)
        if keys < num_pairs:
            raise ConfigError(f"task 'associative-recall': keys ({keys}) must be >= num_pairs ({num_pairs}) so every key is distinct")
        self.num_pairs, self.keys, self.values, self.as_lm, self.seed = num_pairs, keys, values, as_lm, seed
        self.counts = [num_train, num_val, num_test]
        self.problem = "lm" if as_lm else "classification"

    @property
    def vocab_size(self) -> int:
        return self.keys + self.values

    def build_splits(self) -> dict[str, Split]:
        N, n = sum(self.counts), self.num_pairs
        gen = torch.Generator().manual_seed(self.seed)
        keys = torch.rand(N, self.keys, generator=gen).argsort(1)[:, :n]  # n distinct keys per row
        values = torch.randint(0, self.values, (N, n), generator=gen)
        which = torch.randint(0, n, (N,), generator=gen)
        rows = torch.arange(N)
        query, answer = keys[rows, which], values[rows, which]
        seq = torch.stack([keys, values + self.keys], 2).flatten(1)
        inputs = torch.cat([seq, query[:, None]], 1)
        if self.as_lm:
            target = torch.full_like(inputs, -100)
            target[:, -1] = answer + self.keys
        else:
            target = answer
        return _cut(inputs, target, self.counts)

    def model_defaults(self) -> dict[str, Any]:
        length = 2 * self.num_pairs + 1
        if self.as_lm:
            return {"encoder": {"name": "tokens", "vocab_size": self.vocab_size}, "head": {"name": "lm", "vocab_size": self.vocab_size},
                    "max_len": length, "causal": True}
        return {"encoder": {"name": "tokens", "vocab_size": self.vocab_size}, "head": {"name": "last", "num_classes": self.values},
                "max_len": length}

    def required_options(self) -> dict[str, dict[str, Any]]:
        head = {"vocab_size": self.vocab_size} if self.as_lm else {"num_classes": self.values, "multi_label": False}
        return {"encoder": {"vocab_size": self.vocab_size}, "head": head}
