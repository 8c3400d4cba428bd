"""The sequence classes of Scan and Snap (Tian et al. 2023): the next token is predicted from
contextual tokens, some of which are distinct to it and some common to every next token."""
from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import Field

from anyformer.errors import ConfigError
from anyformer.registry import register
from anyformer.tasks.base import Split, Task


@register("task", "scan-snap")
class ScanSnapTask(Task):
    """Next-token prediction on Tian et al. 2023's sequence classes ("Scan and Snap:
    Understanding Training Dynamics and Token Composition in 1-layer Transformer", Sec. 3.2).

    Each example draws its next token n uniformly from `classes`; its `length` - 1 contextual
    tokens are drawn i.i.d. from P(l | n): a common token (uniform over `common` tokens shared
    by every class) with probability `common_share`, else one of the `distinct` tokens that
    occur with class n alone (uniform, or Zipf-weighted by `distinct_skew`: the paper's
    co-occurrence order). The last token is the query m = psi(n) = n mod `queries`, so one
    query serves several next tokens. Inputs [N, length] -> the class n, read at the last token.

    Ids: distinct tokens of class n at n * distinct + j, then the common tokens, then the
    queries. `attention_groups` names those three kinds of key for attention tracking."""

    problem = "classification"
    modality = "tokens"
    paper = "Scan and Snap: Understanding Training Dynamics and Token Composition in 1-layer Transformer (Tian et al. 2023)"
    example_options = {"classes": 4, "queries": 2, "distinct": 2, "common": 3, "length": 8,
                       "num_train": 32, "num_val": 8, "num_test": 8}

    def __init__(
        self,
        classes: Annotated[int, Field(description="next tokens K (the classes)")] = 8,
        queries: Annotated[int, Field(description="query tokens M; class n ends with query n mod M")] = 2,
        distinct: Annotated[int, Field(description="distinct tokens per class (they occur with that class only)")] = 5,
        common: Annotated[int, Field(description="common tokens, shared by every class")] = 10,
        common_share: Annotated[float, Field(description="chance that a contextual token is a common one")] = 0.9,
        distinct_skew: Annotated[float, Field(description="Zipf exponent of the distinct tokens' frequencies (0: uniform)")] = 0.0,
        length: Annotated[int, Field(description="tokens per sequence: length - 1 contextual tokens, then the query")] = 32,
        num_train: Annotated[int, Field(description="training sequences")] = 4000,
        num_val: Annotated[int, Field(description="val sequences")] = 256,
        num_test: Annotated[int, Field(description="test sequences")] = 1000,
        seed: Annotated[int, Field(description="seed of the sequences")] = 0,
    ) -> None:
        super().__init__()
        counts = {"classes": classes, "queries": queries, "distinct": distinct, "common": common,
                  "num_train": num_train, "num_val": num_val, "num_test": num_test}
        bad = {k: v for k, v in counts.items() if v < 1}
        if bad:
            raise ConfigError(f"task 'scan-snap': {', '.join(bad)} must be >= 1, got {bad}")
        if classes < 2:
            raise ConfigError(f"task 'scan-snap': classes must be >= 2 (one next token is nothing to predict), got {classes}")
        if queries > classes:
            raise ConfigError(f"task 'scan-snap': queries {queries} must be at most classes {classes} (each query serves a class)")
        if length < 2:
            raise ConfigError(f"task 'scan-snap': length must be >= 2 (a contextual token and the query), got {length}")
        if not 0.0 <= common_share < 1.0:
            raise ConfigError(f"task 'scan-snap': common_share must be in [0, 1), got {common_share} (at 1 no token tells the classes apart)")
        if distinct_skew < 0.0:
            raise ConfigError(f"task 'scan-snap': distinct_skew must be >= 0, got {distinct_skew}")
        self.classes, self.queries, self.distinct, self.common = classes, queries, distinct, common
        self.common_share, self.distinct_skew, self.length, self.seed = common_share, distinct_skew, length, seed
        self.counts = [num_train, num_val, num_test]

    @property
    def vocab_size(self) -> int:
        return self.classes * self.distinct + self.common + self.queries

    @property
    def first_common(self) -> int:
        return self.classes * self.distinct

    @property
    def first_query(self) -> int:
        return self.first_common + self.common

    def distinct_weights(self) -> torch.Tensor:
        """P(the j-th distinct token of a class | that class, a distinct token): Zipf 1 / (j+1)^s."""
        w = (torch.arange(self.distinct, dtype=torch.float64) + 1.0) ** -self.distinct_skew
        return w / w.sum()

    def build_splits(self) -> dict[str, Split]:
        n, context = sum(self.counts), self.length - 1
        gen = torch.Generator().manual_seed(self.seed)
        label = torch.randint(0, self.classes, (n,), generator=gen)
        is_common = torch.rand(n, context, generator=gen, dtype=torch.float64) < self.common_share
        common = self.first_common + torch.randint(0, self.common, (n, context), generator=gen)
        j = torch.multinomial(self.distinct_weights(), n * context, replacement=True, generator=gen).view(n, context)
        distinct = label[:, None] * self.distinct + j
        tokens = torch.cat([torch.where(is_common, common, distinct), (self.first_query + label % self.queries)[:, None]], 1)
        splits, start = {}, 0
        for name, count in zip(("train", "val", "test"), self.counts):
            splits[name] = Split(tokens[start:start + count], label[start:start + count])
            start += count
        return splits

    def attention_groups(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Key positions of each kind, Bool[B, L] each: 'distinct' (tells the class),
        'common' (shared by all classes) and 'query' (the last token); under a skew also
        'frequent' and 'rare', the most and the least frequent distinct token of each class
        (the paper's order of co-occurrence, along which attention drops)."""
        distinct = inputs < self.first_common
        groups = {"distinct": distinct, "common": (inputs >= self.first_common) & (inputs < self.first_query),
                  "query": inputs >= self.first_query}
        if self.distinct_skew > 0 and self.distinct > 1:
            rank = inputs % self.distinct
            groups["frequent"] = distinct & (rank == 0)
            groups["rare"] = distinct & (rank == self.distinct - 1)
        return groups

    def model_defaults(self) -> dict[str, Any]:
        # The paper's setting: no positional encoding, the next token read at the query
        # (the last token), no [CLS] token among the keys the query attends.
        return {"encoder": {"name": "tokens", "vocab_size": self.vocab_size, "cls_token": False},
                "head": {"name": "last", "num_classes": self.classes}, "max_len": self.length,
                "position": {"name": "none"}}

    def required_options(self) -> dict[str, dict[str, Any]]:
        return {"encoder": {"vocab_size": self.vocab_size},
                "head": {"num_classes": self.classes, "multi_label": False}}

    def train_defaults(self) -> dict[str, Any]:
        return {"steps": 600, "batch_size": 64, "lr": 1e-3, "eval_every": 25, "log_every": 25}
