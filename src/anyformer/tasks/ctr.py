"""Click-through-rate prediction from a user's behaviour history (DIN's setting), with AUC
and the paper's user-weighted GAUC."""
from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from pydantic import Field

from anyformer.errors import ConfigError
from anyformer.registry import register
from anyformer.tasks import metrics as M
from anyformer.tasks.base import Split, Task
from anyformer.tasks.ctr_data import ClickLog, generated_clicks
from anyformer.tasks.ctr_files import read_click_log
from anyformer.tasks.problems import Problem

# Ids 0 (padding, an unknown user field) and 1 (an item or category never seen) are reserved.
PAD, UNSEEN = 0, 1
TRAIN_SHARE, VAL_SHARE = 0.8, 0.1


def group_auc(score: np.ndarray, label: np.ndarray, group: np.ndarray) -> float:
    """GAUC (Zhou et al. 2018, eq. 1): the mean of each user's AUC weighted by the user's
    impressions, over the users with clicks and non-clicks; NaN when no user has both."""
    order = np.argsort(group, kind="stable")
    score, label, group = score[order], label[order], group[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    total, weight = 0.0, 0
    for lo, hi in zip(starts, np.r_[starts[1:], len(group)]):
        y = label[lo:hi]
        pos = int(y.sum())
        if pos == 0 or pos == len(y):
            continue
        ranks = _average_ranks(score[lo:hi])
        auc = (ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * (len(y) - pos))
        total += auc * len(y)
        weight += len(y)
    return float(total / weight) if weight else math.nan


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (so a tie counts half in an AUC)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for lo, hi in zip(starts, ends):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2
    return ranks


class ItemClickRate(nn.Module):
    """A baseline that reads no history: each candidate item's click rate in training,
    shrunk to the overall rate by `prior_weight` pseudo-impressions (an unseen item gets
    the overall rate). inputs {'candidate': [B, 2]} -> logits [B, 2]."""

    def __init__(self, rate: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("rate", rate)  # [items]

    def forward(self, inputs: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        p = self.rate[inputs["candidate"][:, 0]]
        return torch.stack([torch.log1p(-p), torch.log(p)], -1)

    @classmethod
    def fit(cls, candidate: torch.Tensor, click: torch.Tensor, items: int, prior_weight: float = 5.0) -> "ItemClickRate":
        overall = float(click.double().mean())
        shows = torch.bincount(candidate, minlength=items).double()
        clicks = torch.bincount(candidate, weights=click.double(), minlength=items)
        rate = (clicks + prior_weight * overall) / (shows + prior_weight)
        return cls(rate.clamp(1e-6, 1 - 1e-6).float())


@register("problem", "ctr")
class ClickThrough(Problem):
    """Click-through-rate prediction (Zhou et al. 2018): output logits [N, 2] (no click,
    click), target [N, 2] long (click 0/1, the user's index, for GAUC). Loss: cross-entropy
    on the click; metrics: AUC, GAUC (user-weighted), log loss, accuracy."""

    paper = "Deep Interest Network for Click-Through Rate Prediction (Zhou et al. 2018)"
    head_family = "classification"
    primary_metric = "auc"
    metric_directions = {"auc": True, "gauc": True, "logloss": False, "accuracy": True, "loss": False}
    metric_ranges = {"auc": (0.0, 1.0), "gauc": (0.0, 1.0), "accuracy": (0.0, 1.0), "logloss": (0.0, math.inf),
                     "loss": (0.0, math.inf)}
    test_unit = "impression"

    def example_batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [40, 2] and targets of 4 users with 10 impressions each, clicks random."""
        click = torch.randint(0, 2, (40,), generator=generator)
        user = torch.arange(40) // 10
        return torch.randn(40, 2, generator=generator), torch.stack([click, user], 1)

    def trivial_baselines(self, train: Any, test: Any) -> dict[str, nn.Module]:
        """Each item's training click rate: what a model that reads no history scores."""
        if not isinstance(train.inputs, dict) or "candidate" not in train.inputs:
            return {}
        candidate = train.inputs["candidate"][:, 0]
        items = int(max(candidate.max(), test.inputs["candidate"][:, 0].max())) + 1
        return {"item click rate": ItemClickRate.fit(candidate, train.target[:, 0], items)}

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.float(), target[:, 0])

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        click = target[:, 0]
        score = (output[:, 1] - output[:, 0]).double()
        return {"auc": M.roc_auc(score, click),
                "gauc": group_auc(score.cpu().numpy(), click.cpu().numpy(), target[:, 1].cpu().numpy()),
                "logloss": float(F.cross_entropy(output.double(), click)), "accuracy": M.accuracy(output, click)}

    def per_example(self, output: torch.Tensor, target: torch.Tensor, metric: str) -> torch.Tensor | None:
        if metric in ("logloss", "loss"):
            return F.cross_entropy(output.double(), target[:, 0], reduction="none")
        if metric == "accuracy":
            return (output.argmax(-1) == target[:, 0]).double()
        return None

    def describe(self, output: torch.Tensor, names: list[str]) -> list[dict[str, Any]]:
        return [{"click_probability": round(float(p), 4)} for p in torch.softmax(output.float(), -1)[:, 1]]


@register("task", "ctr")
class ClickThroughTask(Task):
    """Predict whether a user clicks a candidate item from her fields and the items she
    interacted with before (DIN, Zhou et al. 2018). With no `path`: generated impressions
    (ctr_data.py: users of several interests whose clicks depend on the behaviours of the
    candidate's interest only). With `path`: a CSV, one impression per row in time order,
    with a user id column, user field columns (every column not named otherwise, or
    `field_columns`), a behaviour column of item ids joined by `separator` (oldest first,
    may be empty), the candidate item, optionally its category (and the behaviours'
    categories), and the click label 0/1. Splits by time within each user: her first 80%
    of impressions train, the next 10% validation, the last 10% test. The last `max_history`
    behaviours are kept. Inputs for encoder 'behaviour-fields', with the training counts of
    every id for mini-batch aware regularisation; targets [N, 2]: click, user index."""

    problem = "ctr"
    modality = "ctr"
    paper = "Deep Interest Network for Click-Through Rate Prediction (Zhou et al. 2018)"
    argument_option = "path"
    file_options = ("path",)
    example_options = {"users": 40, "impressions": 10, "history": 6, "max_history": 6, "items_per_category": 6, "categories": 4}

    def __init__(
        self,
        path: Annotated[str | None, Field(description="click log CSV, one impression per row in time order; none: generated")] = None,
        user_column: Annotated[str, Field(description="the user id column (GAUC averages over users; also a user field)")] = "user",
        field_columns: Annotated[list[str] | None, Field(description="user feature columns (default: every column not named by another option)")] = None,
        history_column: Annotated[str, Field(description="the behaviour column: item ids joined by `separator`, oldest first")] = "history",
        candidate_column: Annotated[str, Field(description="the candidate item column")] = "item",
        category_column: Annotated[str | None, Field(description="the candidate's category column (none: no categories)")] = None,
        history_category_column: Annotated[str | None, Field(description="the behaviours' categories, joined by `separator`")] = None,
        label_column: Annotated[str, Field(description="the click label column, 0 or 1")] = "click",
        separator: Annotated[str, Field(min_length=1, description="what joins the ids of the behaviour column")] = "|",
        max_history: Annotated[int, Field(ge=1, description="most recent behaviours kept per impression")] = 20,
        users: Annotated[int, Field(ge=2, description="generated users")] = 1500,
        impressions: Annotated[int, Field(ge=1, description="generated impressions per user")] = 20,
        history: Annotated[int, Field(ge=1, description="generated behaviours before a user's first impression")] = 20,
        items_per_category: Annotated[int, Field(ge=1, description="generated items per category")] = 30,
        categories: Annotated[int, Field(ge=2, description="generated categories (interests)")] = 20,
        interests: Annotated[int, Field(ge=1, description="generated interests per user")] = 3,
        seed: Annotated[int, Field(description="seed of the generated impressions")] = 0,
    ) -> None:
        super().__init__()
        if path is None and interests > categories:
            raise ConfigError(f"task 'ctr': interests {interests} exceed categories {categories}; a user's interests are distinct categories")
        self.path, self.separator, self.max_history = path, separator, max_history
        self.columns = dict(user_column=user_column, field_columns=field_columns, history_column=history_column,
                            candidate_column=candidate_column, category_column=category_column,
                            history_category_column=history_category_column, label_column=label_column)
        self.generator = dict(users=users, items_per_category=items_per_category, categories=categories,
                              interests=interests, impressions=impressions, history=history, seed=seed)
        self.user_vocab: list[int] = []
        self.num_items, self.num_categories = 2, 0

    def read(self) -> ClickLog:
        if self.path is None:
            return generated_clicks(**self.generator)
        return read_click_log(self.path, separator=self.separator, **self.columns)

    def build_splits(self) -> dict[str, Split]:
        log = self.read()
        n = len(log.candidate)
        users = {u: k for k, u in enumerate(dict.fromkeys(log.user))}
        user_index = np.array([users[u] for u in log.user])
        part = self._parts_by_user(user_index)
        # User fields: the user id first, then the others; ids from 1 (0: unknown).
        field_values = [log.user] + [[row[k] for row in log.fields] for k in range(len(log.field_names))]
        vocabs = [{v: i + 1 for i, v in enumerate(dict.fromkeys(values))} for values in field_values]
        self.user_vocab = [len(v) + 1 for v in vocabs]
        user = torch.tensor([[vocab[values[r]] for vocab, values in zip(vocabs, field_values)] for r in range(n)], dtype=torch.long)
        items = {v: i + 2 for i, v in enumerate(dict.fromkeys(log.candidate + [h for hist in log.history for h in hist]))}
        self.num_items = len(items) + 2
        cats = {v: i + 2 for i, v in enumerate(dict.fromkeys(log.category.values()))} if log.category else {}
        self.num_categories = len(cats) + 2 if cats else 0
        L = self.max_history
        history = torch.zeros(n, L, 2, dtype=torch.long)
        candidate = torch.zeros(n, 2, dtype=torch.long)
        for r in range(n):
            recent = log.history[r][-L:]
            if recent:
                history[r, :len(recent), 0] = torch.tensor([items[h] for h in recent])
                history[r, :len(recent), 1] = torch.tensor([cats.get(log.category.get(h), UNSEEN) if cats else PAD for h in recent])
            candidate[r] = torch.tensor([items[log.candidate[r]], cats.get(log.category.get(log.candidate[r]), UNSEEN) if cats else PAD])
        counts = self._training_counts(user, history, candidate, part == 0)
        target = torch.stack([torch.as_tensor(log.click, dtype=torch.long), torch.as_tensor(user_index)], 1)
        splits = {}
        for k, name in enumerate(("train", "val", "test")):
            rows = torch.as_tensor(np.flatnonzero(part == k))
            self._parts[name] = rows
            inputs = {"user": user[rows], "history": history[rows], "candidate": candidate[rows],
                      "user_count": counts["user"][rows], "history_count": counts["history"][rows],
                      "candidate_count": counts["candidate"][rows]}
            splits[name] = Split(inputs, target[rows])
        return splits

    @staticmethod
    def _parts_by_user(user_index: np.ndarray) -> np.ndarray:
        """0 / 1 / 2 (train / val / test) per impression: by its place among its user's."""
        part = np.zeros(len(user_index), dtype=np.int64)
        seen: dict[int, int] = {}
        totals = np.bincount(user_index)
        for r, u in enumerate(user_index):
            k = seen.get(u, 0)
            seen[u] = k + 1
            place = k / totals[u]
            part[r] = 0 if place < TRAIN_SHARE else 1 if place < TRAIN_SHARE + VAL_SHARE else 2
        return part

    @staticmethod
    def _training_counts(user: torch.Tensor, history: torch.Tensor, candidate: torch.Tensor,
                         train: np.ndarray) -> dict[str, torch.Tensor]:
        """How often each id occurs in the training impressions (n_j of mini-batch aware
        regularisation), looked up at every position of every split's inputs."""
        rows = torch.as_tensor(train)
        out = {}
        user_counts = [torch.bincount(user[rows, k], minlength=int(user[:, k].max()) + 1) for k in range(user.shape[1])]
        out["user"] = torch.stack([c[user[:, k]] for k, c in enumerate(user_counts)], 1).float() if user_counts \
            else torch.zeros(user.shape, dtype=torch.float32)
        per_column = []
        for k in range(2):
            seen = torch.cat([history[rows, :, k].reshape(-1), candidate[rows, k]])
            size = int(max(history[..., k].max(), candidate[:, k].max())) + 1
            per_column.append(torch.bincount(seen, minlength=size))
        out["history"] = torch.stack([per_column[k][history[..., k]] for k in range(2)], -1).float()
        out["candidate"] = torch.stack([per_column[k][candidate[:, k]] for k in range(2)], -1).float()
        return out

    def model_defaults(self) -> dict[str, Any]:
        return {"encoder": {"name": "behaviour-fields", **self._encoder_facts()},
                "head": {"name": "cls", "num_classes": 2}, "max_len": self.max_history}

    def _encoder_facts(self) -> dict[str, Any]:
        self.splits()
        return {"user_vocab": list(self.user_vocab), "items": self.num_items, "categories": self.num_categories}

    def required_options(self) -> dict[str, dict[str, Any]]:
        return {"encoder": self._encoder_facts(), "head": {"num_classes": 2}}

    def baseline_preset(self) -> str:
        return "din"

    def train_defaults(self) -> dict[str, Any]:
        return {"steps": 1500, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0, "eval_every": 250}

    def output_names(self) -> list[str]:
        return ["no click", "click"]

    def preprocessing(self) -> dict[str, Any]:
        return {"user_vocab": self.user_vocab, "items": self.num_items, "categories": self.num_categories}

    def restore(self, state: dict[str, Any]) -> None:
        self.user_vocab = [int(v) for v in state["user_vocab"]]
        self.num_items, self.num_categories = int(state["items"]), int(state["categories"])
