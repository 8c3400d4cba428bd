"""A user's fields, behaviour history and a candidate item -> tokens, for click-through-rate
models (DIN and a Transformer over the behaviour sequence)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from anyformer.errors import ConfigError, ShapeError
from anyformer.nn.encoders.base import Encoder, expect
from anyformer.nn.ranges import Count, NonNegativeFloat, NonNegativeInt
from anyformer.registry import register


def batch_aware_l2(table: nn.Embedding, ids: torch.Tensor, counts: torch.Tensor | None) -> torch.Tensor:
    """Mini-batch aware L2 (Zhou et al. 2018, eq. 4): sum over the ids present in the batch
    (id 0, padding, excluded) of ||w_j||^2 / n_j, n_j the id's count in the training data."""
    flat = ids.reshape(-1)
    unique, inverse = torch.unique(flat, return_inverse=True)
    n = torch.ones(len(unique), dtype=table.weight.dtype, device=flat.device)
    if counts is not None:
        n = n.scatter(0, inverse, counts.reshape(-1).to(n.dtype)).clamp_min(1.0)
    real = unique != 0
    return (table.weight[unique[real]].pow(2).sum(-1) / n[real]).sum()


@register("encoder", "behaviour-fields")
class BehaviourFieldsEncoder(Encoder):
    """Embedding layer of DIN (Zhou et al. 2018): input dict {"user": [B, U] long (one id per
    user field, 0 = unknown), "history": [B, L, 2] long (item id, category id of each past
    behaviour; item 0 = padding), "candidate": [B, 2] long} and optionally the training counts
    of those ids ("user_count", "history_count", "candidate_count", same shapes, float) for
    mini-batch aware regularisation. An item is its id embedding joined with its category's
    (dim/2 each; the whole dim for the id when `categories` is 0). forward -> tokens
    [B, 1 + U + L, D] (the candidate first, as a [CLS] token, then the user fields, then the
    behaviours), mask False at padded behaviours. `split` gives DIN the parts apart.
    With `regularization` > 0, `aux_loss` after each training forward is that coefficient
    times the mini-batch aware L2 of every table."""

    paper = "Deep Interest Network for Click-Through Rate Prediction (Zhou et al. 2018)"
    modality = "ctr"
    num_prefix_tokens = 1
    may_pad = True
    example_options = {"user_vocab": [5, 3], "items": 9, "categories": 3, "regularization": 0.01}

    def __init__(self, dim: int, max_len: Count = 20, user_vocab: list[Count] | None = None, items: Count = 2,
                 categories: NonNegativeInt = 0, regularization: NonNegativeFloat = 0.0) -> None:
        super().__init__()
        self.user_vocab = list(user_vocab or [])
        if categories and dim % 2:
            raise ConfigError(f"encoder 'behaviour-fields': with categories, an item is half id and half category embedding; model.dim {dim} must be even")
        self.history_len, self.items, self.categories = max_len, items, categories
        self.num_tokens = 1 + len(self.user_vocab) + max_len
        self.regularization = regularization
        self.user = nn.ModuleList(nn.Embedding(v, dim) for v in self.user_vocab)
        self.item = nn.Embedding(items, dim // 2 if categories else dim, padding_idx=0)
        self.category = nn.Embedding(categories, dim // 2, padding_idx=0) if categories else None
        self.aux_loss = torch.zeros(())

    def _check(self, x: Any) -> None:
        if not isinstance(x, dict) or not {"user", "history", "candidate"} <= set(x):
            raise ShapeError("encoder 'behaviour-fields' expects a dict {'user': [B, U], 'history': [B, L, 2], 'candidate': [B, 2]}; "
                             f"got {type(x).__name__}")
        expect(x["user"], 2, "encoder 'behaviour-fields' user [batch, fields]", floating=False)
        expect(x["history"], 3, "encoder 'behaviour-fields' history [batch, behaviours, 2]", floating=False)
        expect(x["candidate"], 2, "encoder 'behaviour-fields' candidate [batch, 2]", floating=False)
        if x["user"].shape[1] != len(self.user_vocab) or tuple(x["history"].shape[1:]) != (self.history_len, 2) \
                or x["candidate"].shape[1] != 2:
            raise ShapeError(f"encoder 'behaviour-fields' expects user [B, {len(self.user_vocab)}], history [B, {self.history_len}, 2], "
                             f"candidate [B, 2]; got {list(x['user'].shape)}, {list(x['history'].shape)}, {list(x['candidate'].shape)}")
        if torch.compiler.is_compiling():
            return
        bounds = [(x["user"][:, k], v, f"user field {k}") for k, v in enumerate(self.user_vocab)]
        bounds += [(x["history"][..., 0], self.items, "history item"), (x["candidate"][:, 0], self.items, "candidate item")]
        if self.category is not None:
            bounds += [(x["history"][..., 1], self.categories, "history category"), (x["candidate"][:, 1], self.categories, "candidate category")]
        for ids, size, what in bounds:
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
                raise ShapeError(f"encoder 'behaviour-fields': {what} ids must lie in 0..{size - 1}, got {int(ids.min())}..{int(ids.max())}")

    def _items(self, pairs: torch.Tensor) -> torch.Tensor:
        emb = self.item(pairs[..., 0])
        return torch.cat([emb, self.category(pairs[..., 1])], -1) if self.category is not None else emb

    def split(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """forward's tokens and mask apart: (candidate [B, D], user fields [B, U, D],
        behaviours [B, L, D], their mask [B, L])."""
        u = 1 + len(self.user_vocab)
        return tokens[:, 0], tokens[:, 1:u], tokens[:, u:], mask[:, u:]

    def _batch_aware_l2(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        uc, hc, cc = x.get("user_count"), x.get("history_count"), x.get("candidate_count")
        total = sum(batch_aware_l2(emb, x["user"][:, k], None if uc is None else uc[:, k]) for k, emb in enumerate(self.user))
        # Column 0 of behaviours and candidate holds item ids, column 1 category ids.
        for column, table in enumerate((self.item, self.category)):
            if table is None:
                continue
            ids = torch.cat([x["history"][..., column].reshape(-1), x["candidate"][:, column]])
            counts = None if hc is None or cc is None else torch.cat([hc[..., column].reshape(-1), cc[:, column]])
            total = total + batch_aware_l2(table, ids, counts)
        return total

    def forward(self, x: Any, mask: torch.Tensor | None = None):
        self._check(x)
        if self.training and self.regularization > 0:
            self.aux_loss = self.regularization * self._batch_aware_l2(x)
        users = [emb(x["user"][:, k]) for k, emb in enumerate(self.user)]
        tokens = torch.cat([self._items(x["candidate"])[:, None], *(u[:, None] for u in users), self._items(x["history"])], 1)
        real = x["history"][..., 0] != 0
        return tokens, torch.cat([real.new_ones(real.shape[0], 1 + len(users)), real], 1)

    def example_input(self, batch: int = 2) -> Any:
        g = torch.Generator().manual_seed(0)
        user = torch.stack([torch.randint(0, v, (batch,), generator=g) for v in self.user_vocab], 1) if self.user_vocab \
            else torch.zeros(batch, 0, dtype=torch.long)
        cats = max(self.categories, 1)
        history = torch.stack([torch.randint(1, max(self.items, 2), (batch, self.history_len), generator=g),
                               torch.randint(0, cats, (batch, self.history_len), generator=g)], -1)
        history[0, self.history_len // 2 + 1:] = 0  # the first user has a shorter history
        candidate = torch.stack([torch.randint(1, max(self.items, 2), (batch,), generator=g), torch.randint(0, cats, (batch,), generator=g)], -1)
        return {"user": user, "history": history.clamp_max(self.items - 1), "candidate": candidate.clamp_max(self.items - 1)}
