"""ListOps (Nangia & Bowman 2018) as generated for the Long Range Arena (Tay et al. 2021)."""
from __future__ import annotations

import random
from typing import Annotated, Any

import torch
from pydantic import Field

from anyformer.errors import ConfigError, DataError
from anyformer.registry import register
from anyformer.tasks.base import Split, Task

PAD = 0
DIGITS = [str(d) for d in range(10)]
OPERATORS = ["[MIN", "[MAX", "[MED", "[SM"]
VOCAB = ["<pad>"] + DIGITS + OPERATORS + ["]", "(", ")"]
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
LEAF_PROBABILITY = 0.75  # LRA: a node is a value unless random() <= 0.25


def apply_operator(op: str, values: list[int]) -> int:
    if op == "[MIN":
        return min(values)
    if op == "[MAX":
        return max(values)
    if op == "[MED":  # numpy's median, truncated to an int as LRA's int(np.median(...))
        s = sorted(values)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else int((s[mid - 1] + s[mid]) / 2)
    return sum(values) % 10


def generate_tree(rng: random.Random, depth: int, max_depth: int, max_args: int,
                  parentheses: bool) -> tuple[list[str], int, int]:
    """(tokens, value, length) of one random expression, drawn as LRA's generator does:
    below `max_depth` a node is an operator with 2..max_args arguments with probability
    0.25, else a digit. `length` counts digits, operators and ']' (LRA's length); with
    `parentheses` the tokens also carry the '( ... )' of LRA's left-nested string form."""
    if depth < max_depth and rng.random() <= 1 - LEAF_PROBABILITY:
        op = rng.choice(OPERATORS)
        subtrees, values, length = [], [], 2
        for _ in range(rng.randint(2, max_args)):
            sub, value, sub_len = generate_tree(rng, depth + 1, max_depth, max_args, parentheses)
            subtrees.append(sub)
            values.append(value)
            length += sub_len
        if parentheses:
            # LRA's string of ((((op, a), b), ...), ']'): one '(' per pair up front, a ')'
            # after each argument and after the ']'.
            tokens = ["("] * (len(values) + 1) + [op]
            for sub in subtrees:
                tokens += sub + [")"]
            tokens += ["]", ")"]
        else:
            tokens = [op] + [t for sub in subtrees for t in sub] + ["]"]
        return tokens, apply_operator(op, values), length
    value = rng.randrange(10)
    return [str(value)], value, 1


@register("task", "listops")
class ListOpsTask(Task):
    """ListOps: evaluate a nested prefix expression of MAX / MIN / MED / SUM_MOD over digits,
    e.g. `[MAX 4 3 [MIN 2 3 ] 1 0 ]` -> 4; 10 classes. Expressions are drawn with LRA's
    generator (max_depth 10, max_args 10, LRA length in (min_length, max_length), no
    duplicates across splits) from a seeded RNG. Tokens: pad 0, digits, operators, ']'
    (and '(' ')' with `parentheses`); sequences are padded with the pad id and masked.
    The full LRA size (96k/2k/2k, lengths 500..2000) takes minutes to generate in Python."""

    problem = "classification"
    modality = "tokens"
    paper = "ListOps (Nangia & Bowman 2018); Long Range Arena (Tay et al. 2021)"
    example_options = {"max_depth": 4, "max_args": 4, "min_length": 4, "max_length": 32,
                       "num_train": 48, "num_val": 8, "num_test": 8}

    def __init__(
        self,
        max_depth: Annotated[int, Field(description="deepest nesting of operators")] = 10,
        max_args: Annotated[int, Field(description="most arguments of one operator")] = 10,
        min_length: Annotated[int, Field(description="expressions are longer than this many tokens")] = 500,
        max_length: Annotated[int, Field(description="and shorter than this many")] = 2000,
        num_train: Annotated[int, Field(description="training expressions")] = 96000,
        num_val: Annotated[int, Field(description="val expressions")] = 2000,
        num_test: Annotated[int, Field(description="test expressions")] = 2000,
        parentheses: Annotated[bool, Field(description="add '(' ')' tokens around each operator's arguments")] = False,
        seed: Annotated[int, Field(description="seed of the expression generator")] = 0,
    ) -> None:
        super().__init__()
        if max_depth < 1 or max_args < 2:
            raise ConfigError(f"task 'listops': max_depth must be >= 1 and max_args >= 2 (got {max_depth}, {max_args})")
        if not 1 <= min_length < max_length - 1:
            raise ConfigError(f"task 'listops': need 1 <= min_length < max_length - 1 (got {min_length}, {max_length})")
        if min(num_train, num_val, num_test) < 1:
            raise ConfigError("task 'listops': num_train, num_val and num_test must be >= 1")
        self.max_depth, self.max_args, self.min_length, self.max_length = max_depth, max_args, min_length, max_length
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        self.parentheses, self.seed = parentheses, seed

    @property
    def seq_len(self) -> int:
        """Longest token sequence. LRA lengths L = 2 ops + digits are < max_length; an
        operator of k arguments adds 2k + 2 parentheses, 2(ops + digits - 1) + 2 ops =
        2L - 2 in all, so at most 3L - 2 tokens."""
        L = self.max_length - 1
        return 3 * L - 2 if self.parentheses else L

    def generate(self) -> list[tuple[tuple[str, ...], int]]:
        rng = random.Random(self.seed)
        total = sum(self.counts.values())
        seen: set[tuple[str, ...]] = set()
        data: list[tuple[tuple[str, ...], int]] = []
        attempts = 0
        while len(data) < total:
            attempts += 1
            if attempts > 200 * total + 10000:
                raise DataError(
                    f"task 'listops': only {len(data)} of {total} distinct expressions with length in "
                    f"({self.min_length}, {self.max_length}) after {attempts} draws; widen the length range or raise max_depth/max_args"
                )
            tokens, value, length = generate_tree(rng, 1, self.max_depth, self.max_args, self.parentheses)
            key = tuple(tokens)
            if self.min_length < length < self.max_length and key not in seen:
                seen.add(key)
                data.append((key, value))
        return data

    def build_splits(self) -> dict[str, Split]:
        data = self.generate()
        L = self.seq_len
        ids = torch.full((len(data), L), PAD, dtype=torch.uint8)  # uint8: the full set is 200 MB, not 1.6 GB
        for i, (tokens, _) in enumerate(data):
            ids[i, :len(tokens)] = torch.tensor([TOKEN_ID[t] for t in tokens], dtype=torch.uint8)
        target = torch.tensor([v for _, v in data], dtype=torch.long)
        mask = ids != PAD
        splits, start = {}, 0
        for name in ("train", "val", "test"):
            part = slice(start, start + self.counts[name])
            splits[name] = Split(ids[part], target[part], mask[part], transform=lambda x: x.long())
            start = part.stop
        return splits

    def model_defaults(self) -> dict[str, Any]:
        return {"encoder": {"name": "tokens", "vocab_size": len(VOCAB), "pad_id": PAD},
                "head": {"name": "mean", "num_classes": 10}, "max_len": self.seq_len}

    def required_options(self) -> dict[str, dict[str, Any]]:
        return {"encoder": {"vocab_size": len(VOCAB), "pad_id": PAD}, "head": {"num_classes": 10, "multi_label": False}}
