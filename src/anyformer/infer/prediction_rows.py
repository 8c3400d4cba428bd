"""Predictions as rows of one table, for `anyformer predict`'s table and CSV outputs: a
column per scalar field, `p(class)` per probability, labels joined by '|', and one row per
forecast step (a column per channel)."""
from __future__ import annotations

from typing import Any


def prediction_rows(predictions: list[dict[str, Any]], most_probabilities: int | None = None) -> tuple[list[str], list[list[Any]]]:
    """(column names, rows) of `predictions` (the Predictor's dicts), in their order. With
    more classes than `most_probabilities`, one 'runners-up' column names the next two
    likeliest instead of a column per class (a screen's width)."""
    columns: list[str] = []
    rows: list[dict[str, Any]] = []
    for p in predictions:
        flat: dict[str, Any] = {}
        forecast = None
        for key, value in p.items():
            if key == "probabilities" and most_probabilities is not None and len(value) > most_probabilities:
                ranked = sorted(value.items(), key=lambda kv: -kv[1])[1:3]
                flat["runners-up"] = ", ".join(f"{name} ({prob:.4f})" for name, prob in ranked)
            elif key == "probabilities":
                flat.update({f"p({name})": prob for name, prob in value.items()})
            elif key == "forecast":
                forecast = value
            elif isinstance(value, list):
                flat[key] = "|".join(map(str, value))
            else:
                flat[key] = value
        if forecast is None:
            rows.append(flat)
        else:
            steps = len(next(iter(forecast.values()), []))
            rows.extend({**flat, "step": t + 1, **{name: values[t] for name, values in forecast.items()}} for t in range(steps))
        for key in rows[-1] if rows else ():
            if key not in columns:
                columns.append(key)
    return columns, [[row.get(c, "") for c in columns] for row in rows]
