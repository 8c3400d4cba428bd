"""Generated click logs with a planted structure DIN's activation unit can use and sum
pooling cannot: users hold several interests, and a click depends on the behaviours of
the candidate's interest only."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ClickLog:
    """Impressions in time order. user: [N] user index; fields: [N, U] user feature values
    (strings, as a CSV holds them); history: per impression the item ids before it (oldest
    first); candidate: [N] item id; category: item id -> category; click: [N] 0/1;
    probability: [N] the true click probability where the log was generated (else None)."""

    user: list[str]
    fields: list[list[str]]
    field_names: list[str]
    history: list[list[str]]
    candidate: list[str]
    category: dict[str, str]
    click: np.ndarray
    probability: np.ndarray | None = None


def generated_clicks(users: int, items_per_category: int, categories: int, interests: int,
                     impressions: int, history: int, seed: int) -> ClickLog:
    """Each item has a category and a style in [0, 1]; each user `interests` categories,
    with a preferred style in each. A user's behaviours are items of her interests near her
    style there. A candidate is of one of her interests (70%) or any item; it is clicked
    with probability sigmoid(3 - 12 |style - her style in its category|) when of her
    interests, else sigmoid(-3). The style she prefers for the candidate's category shows
    only in that category's behaviours: sum pooling mixes it with her other interests'."""
    rng = np.random.default_rng(seed)
    n_items = items_per_category * categories
    item_cat = np.repeat(np.arange(categories), items_per_category)
    style = rng.random(n_items)
    by_cat = [np.flatnonzero(item_cat == c) for c in range(categories)]
    out_user, out_fields, out_hist, out_cand, out_click, out_p = [], [], [], [], [], []
    for u in range(users):
        own = rng.choice(categories, size=interests, replace=False)
        taste = rng.random(interests)
        gender, age = str(rng.integers(2)), str(rng.integers(5))

        def behaviour() -> int:
            k = rng.integers(interests)
            pool = by_cat[own[k]]
            near = np.abs(style[pool] - taste[k]) + rng.normal(0, 0.05, len(pool))
            return int(pool[np.argsort(near)[rng.integers(3)]])

        past = [behaviour() for _ in range(history)]
        for _ in range(impressions):
            if rng.random() < 0.7:
                k = rng.integers(interests)
                cand = int(rng.choice(by_cat[own[k]]))
                logit = 3.0 - 12.0 * abs(style[cand] - taste[k])
            else:
                cand = int(rng.integers(n_items))
                hit = np.flatnonzero(own == item_cat[cand])
                logit = 3.0 - 12.0 * abs(style[cand] - taste[hit[0]]) if hit.size else -3.0
            p = 1 / (1 + np.exp(-logit))
            click = int(rng.random() < p)
            out_p.append(p)
            out_user.append(f"u{u}")
            out_fields.append([gender, age])
            out_hist.append([f"i{i}" for i in past[-history:]])
            out_cand.append(f"i{cand}")
            out_click.append(click)
            if click:
                past.append(cand)  # what she clicks joins her behaviours
    category = {f"i{i}": f"c{item_cat[i]}" for i in range(n_items)}
    return ClickLog(out_user, out_fields, ["gender", "age"], out_hist, out_cand, category, np.array(out_click), np.array(out_p))
