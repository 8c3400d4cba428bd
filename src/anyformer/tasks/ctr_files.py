"""Reader of click logs: a CSV of impressions with user fields, a behaviour-sequence column,
the candidate item (and its category) and the click label."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from anyformer.errors import DataError
from anyformer.tasks.ctr_data import ClickLog
from anyformer.tasks.files import existing_file, read_csv


def read_click_log(path: str | Path, user_column: str, field_columns: list[str] | None, history_column: str,
                   candidate_column: str, category_column: str | None, history_category_column: str | None,
                   label_column: str, separator: str) -> ClickLog:
    """The impressions of a CSV, in file order (taken as time order). `field_columns` None:
    every column not named otherwise is a user field. A behaviour's category comes from
    `history_category_column` (the same separator, one per behaviour) or, failing that, from
    the category the item has as a candidate."""
    p = existing_file(path, "click log", "pass a CSV with user, history, candidate and click columns")
    header, rows = read_csv(p, what="click log")
    options = {"user_column": user_column, "history_column": history_column, "candidate_column": candidate_column,
               "label_column": label_column, "category_column": category_column, "history_category_column": history_category_column}
    checked = [(o, c) for o, c in options.items() if c is not None] + [("field_columns", f) for f in field_columns or []]
    for option, column in checked:
        if column not in header:
            raise DataError(f"{p}: no column {column!r} (columns: {', '.join(header)}); name the right one with task.{option}")
    named = [c for c in options.values() if c is not None]
    fields = list(field_columns) if field_columns is not None else [h for h in header if h not in named]
    at = {h: i for i, h in enumerate(header)}
    if not rows:
        raise DataError(f"{p}: no impressions below the header")
    log = ClickLog([], [], fields, [], [], {}, np.zeros(len(rows), dtype=np.int64))
    seen_categories: dict[str, str] = {}
    for r, (line, row) in enumerate(rows):
        label = row[at[label_column]]
        if label not in ("0", "1"):
            raise DataError(f"{p}:{line}: column {label_column!r} holds {label!r}; a click label is 0 or 1")
        candidate = row[at[candidate_column]]
        if not candidate:
            raise DataError(f"{p}:{line}: column {candidate_column!r} is empty; every impression needs its candidate item")
        history = [h for h in row[at[history_column]].split(separator) if h]
        if history_category_column is not None:
            cats = [c for c in row[at[history_category_column]].split(separator) if c]
            if len(cats) != len(history):
                raise DataError(f"{p}:{line}: {len(history)} behaviours in {history_column!r} but {len(cats)} categories in "
                                f"{history_category_column!r}; give one category per behaviour")
            seen_categories.update(zip(history, cats))
        if category_column is not None:
            seen_categories[candidate] = row[at[category_column]]
        log.user.append(row[at[user_column]])
        log.fields.append([row[at[f]] for f in fields])
        log.history.append(history)
        log.candidate.append(candidate)
        log.click[r] = int(label)
    if category_column is not None or history_category_column is not None:
        log.category = seen_categories
    if log.click.min() == log.click.max():
        raise DataError(f"{p}: every impression has {label_column} = {int(log.click[0])}; a click model needs clicks and non-clicks")
    return log

