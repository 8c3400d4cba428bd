"""Modular arithmetic a op b mod p: the grokking task, with optional training-label noise."""
from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import Field

from anyformer.errors import ConfigError, unknown
from anyformer.registry import register
from anyformer.tasks.base import Split, Task

OPS = ("+", "-", "*", "/")


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def modular_table(p: int, op: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every equation of the operation: (a, b, a op b mod p). Division is multiplication by
    b's inverse (Fermat: b^(p-2)), so b runs over 1..p-1 for '/' (Power et al. 2022)."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(1 if op == "/" else 0, p), indexing="ij")
    a, b = a.flatten(), b.flatten()
    if op == "+":
        c = (a + b) % p
    elif op == "-":
        c = (a - b) % p
    elif op == "*":
        c = (a * b) % p
    else:
        inverse = torch.tensor([pow(int(v), p - 2, p) for v in range(p)])
        c = (a * inverse[b]) % p
    return a, b, c


@register("task", "modular")
class ModularArithmeticTask(Task):
    """Binary operation table a op b (mod p), ops + - * / (Power et al. 2022). Each example is
    the token sequence [a, OP, b, =] (ids 0..p-1 for numbers, p for the operator, p+1 for
    '='; vocabulary p + 2) -> the class c in 0..p-1, read from the last token.

    Splits: a seeded `train_fraction` of all equations trains; the held-out rest is cut into
    'val' (its first `val_fraction`) and 'test'. `label_noise` xi replaces round(xi * n_train)
    training labels by uniformly random WRONG labels ("To grok or not to grok", Doshi et al.
    2023). Two more splits report how the model treats the training examples, always scored
    against the TRUE answer:
      train_clean     — training equations whose label was left correct;
      train_corrupted — training equations whose label was corrupted (present when xi > 0):
                        accuracy here is the share of corrupted examples for which the model
                        predicts the true answer instead of the memorised wrong label.
    """

    problem = "classification"
    modality = "tokens"
    paper = "Grokking: Generalization Beyond Overfitting on Small Algorithmic Datasets (Power et al. 2022)"
    example_options = {"p": 11}

    def __init__(
        self,
        p: Annotated[int, Field(description="the modulus (prime for '/')")] = 97,
        op: Annotated[str, Field(description="the operation: '+', '-', '*' or '/'")] = "+",
        train_fraction: Annotated[float, Field(description="share of all equations that trains")] = 0.5,
        val_fraction: Annotated[float, Field(description="share of the held-out equations that is val (the rest is test)")] = 0.5,
        label_noise: Annotated[float, Field(description="share of training labels replaced by random wrong ones")] = 0.0,
        seed: Annotated[int, Field(description="seed of the split and of the label noise")] = 0,
    ) -> None:
        super().__init__()
        if op not in OPS:
            raise unknown("modular op", op, OPS)
        if p < 2 or (op == "/" and not is_prime(p)):
            raise ConfigError(f"task 'modular': p must be >= 2{' and prime for division' if op == '/' else ''}, got {p}")
        for name, v in (("train_fraction", train_fraction), ("val_fraction", val_fraction)):
            if not 0.0 < v < 1.0:
                raise ConfigError(f"task 'modular': {name} must be in (0, 1), got {v}")
        if not 0.0 <= label_noise <= 1.0:
            raise ConfigError(f"task 'modular': label_noise must be in [0, 1], got {label_noise}")
        self.p, self.op, self.train_fraction, self.val_fraction = p, op, train_fraction, val_fraction
        self.label_noise, self.seed = label_noise, seed

    @property
    def vocab_size(self) -> int:
        return self.p + 2

    def build_splits(self) -> dict[str, Split]:
        p = self.p
        a, b, c = modular_table(p, self.op)
        tokens = torch.stack([a, torch.full_like(a, p), b, torch.full_like(a, p + 1)], 1)
        gen = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(len(c), generator=gen)
        n_train = round(self.train_fraction * len(c))
        train, held = perm[:n_train], perm[n_train:]
        n_val = round(self.val_fraction * len(held))
        val, test = held[:n_val], held[n_val:]
        # Corrupt a seeded subset of the training labels: adding 1..p-1 mod p gives every
        # wrong label with equal probability and never the right one.
        noisy = c[train].clone()
        n_bad = round(self.label_noise * n_train)
        bad = torch.randperm(n_train, generator=gen)[:n_bad]
        noisy[bad] = (noisy[bad] + torch.randint(1, p, (n_bad,), generator=gen)) % p
        corrupted = torch.zeros(n_train, dtype=torch.bool)
        corrupted[bad] = True
        splits = {
            "train": Split(tokens[train], noisy),
            "val": Split(tokens[val], c[val]),
            "test": Split(tokens[test], c[test]),
        }
        # With every label corrupted there is no clean split to evaluate (an empty one broke evaluation).
        if n_bad < n_train:
            splits["train_clean"] = Split(tokens[train[~corrupted]], c[train[~corrupted]])
        if n_bad:
            splits["train_corrupted"] = Split(tokens[train[corrupted]], c[train[corrupted]])
        return splits

    def operand_grid(self) -> tuple[torch.Tensor, tuple[int, int]]:
        """Every equation's tokens [A * B, 4], a-major, and the grid (A, B) of its operands
        (B = p - 1 for '/', whose b starts at 1): what a Fourier view of a neuron reads."""
        a, b, _ = modular_table(self.p, self.op)
        tokens = torch.stack([a, torch.full_like(a, self.p), b, torch.full_like(a, self.p + 1)], 1)
        return tokens, (self.p, len(a) // self.p)

    def eval_splits(self) -> list[str]:
        n_train = round(self.train_fraction * self._pairs())
        n_bad = round(self.label_noise * n_train)
        return ["val", "test"] + (["train_clean"] if n_bad < n_train else []) + (["train_corrupted"] if n_bad else [])

    def _pairs(self) -> int:
        return self.p * (self.p - 1 if self.op == "/" else self.p)

    def model_defaults(self) -> dict[str, Any]:
        # Power et al. train a causal decoder and read the answer after '=': the last token.
        return {"encoder": {"name": "tokens", "vocab_size": self.vocab_size},
                "head": {"name": "last", "num_classes": self.p}, "max_len": 4}

    def required_options(self) -> dict[str, dict[str, Any]]:
        return {"encoder": {"vocab_size": self.vocab_size},
                "head": {"num_classes": self.p, "multi_label": False}}
