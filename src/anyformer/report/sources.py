"""Reading finished compare directories back for `anyformer report`, and merging several
into one set of rows. Only files a compare run writes are read: its results.json and each
model's metrics.jsonl (one per seed), through rundir's readers."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from anyformer import rundir
from anyformer.errors import DataError
from anyformer.report import results as R
from anyformer.stats import pareto_front


def _seed_order(path: Path) -> tuple:
    # seed-2 before seed-10: compare digit runs as numbers.
    digits = "".join(c for c in path.name if c.isdigit())
    return (int(digits) if digits else -1, path.name)


def seed_runs(model_dir: Path) -> list[list[dict[str, Any]]]:
    """Every seed's metrics records of one model. A run is any folder under the model's
    folder holding a metrics.jsonl: the model folder itself (one seed, older layout) or one
    sub-folder per seed."""
    found = sorted({p.parent for p in model_dir.rglob("metrics.jsonl")}, key=lambda d: (d != model_dir, _seed_order(d)))
    if model_dir in found and len(found) > 1:
        found.remove(model_dir)  # per-seed folders hold the runs; a file beside them is not another seed
    runs = []
    for run_dir in found:
        try:
            records = rundir.read_metrics(run_dir)
        except ValueError as err:  # a truncated or hand-edited line
            raise DataError(f"{run_dir / 'metrics.jsonl'} is not valid JSON lines ({err}); restore it or rerun that model") from None
        if records:
            runs.append(records)
    return runs


def read_compare_dir(path: str | Path) -> tuple[dict[str, Any], R.Curves]:
    """(results, curves) of one finished compare directory."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path} is not a directory; pass folders written by `anyformer compare`")
    file = path / "results.json"
    if not file.exists():
        raise DataError(f"{file} does not exist; pass a folder written by `anyformer compare` (is the run finished?)")
    results = rundir.read_json(file)
    if not isinstance(results, dict) or not isinstance(results.get("rows"), list) or not results.get("task"):
        raise DataError(f"{file} is not a compare results file (it needs 'task' and 'rows'); restore it or rerun the comparison")
    curves = {r["model"]: seed_runs(path / rundir.slug(r["model"]))
              for r in results["rows"] if isinstance(r, dict) and r.get("model") and not r.get("baseline")}
    bad = [i for i, r in enumerate(results["rows"]) if not isinstance(r, dict) or not r.get("model")]
    if bad:
        raise DataError(f"{file}: row {bad[0]} has no model name; restore the file or rerun the comparison")
    return results, {k: v for k, v in curves.items() if v}


_PLAN = ("seeds", "n_test", "test_unit", "n_test_units", "reference", "interval_method", "tie_test", "constraints", "optimize", "environment")


def _check_same(sources: list[tuple[Path, dict[str, Any]]], key: str, what: str) -> None:
    first_path, first = sources[0]
    for path, res in sources[1:]:
        a, b = first.get(key), res.get(key)
        if a is not None and b is not None and a != b:
            raise DataError(f"{path / 'results.json'} is {what} {b!r} but {first_path / 'results.json'} is {what} {a!r}; "
                            f"merge comparisons of one {what} only")


def _mark_fronts(rows: list[dict[str, Any]], higher: bool) -> None:
    """The fronts of the merged rows: a model on its own comparison's front may be beaten
    by a row of another."""
    rows = [r for r in rows if not r.get("baseline")]
    sign = 1.0 if higher else -1.0
    for cost_key, flag in (("latency_ms", "pareto_latency"), ("params", "pareto_params")):
        pts = [(sign * q if (q := R.num(r.get("quality"))) is not None else -math.inf, R.num(r.get(cost_key)) or math.inf)
               for r in rows]
        for r, on in zip(rows, pareto_front(pts)):
            r[flag] = on and R.num(r.get("quality")) is not None


def merge(sources: list[tuple[Path, dict[str, Any], R.Curves]]) -> tuple[dict[str, Any], R.Curves]:
    """One results dict and one curves dict from several compare directories. The task (and
    metric) must agree. A model name found in two directories is suffixed with its
    directory's name; the same baseline found twice is kept once."""
    if len(sources) == 1:
        return sources[0][1], sources[0][2]
    pairs = [(p, R.normalize(res)) for p, res, _ in sources]
    _check_same(pairs, "task", "task")
    _check_same(pairs, "metric", "metric")
    counts: dict[str, int] = {}
    for _, res in pairs:
        for r in res["rows"]:
            counts[r["model"]] = counts.get(r["model"], 0) + 1
    labels = [p.name or str(p) for p, _ in pairs]
    if len(set(labels)) < len(labels):
        labels = [str(p) for p, _ in pairs]
    rows, curves, baselines = [], {}, set()
    for (path, res), label, (_, _, runs) in zip(pairs, labels, sources):
        for r in res["rows"]:
            if r.get("baseline"):
                key = (r["model"], r.get("quality"))
                if key in baselines:
                    continue
                baselines.add(key)
            name = r["model"] if counts[r["model"]] == 1 or r.get("baseline") else f"{r['model']} [{label}]"
            rows.append({**r, "model": name, "source": label})
            if r["model"] in runs:
                curves[name] = runs[r["model"]]
    first = pairs[0][1]
    merged: dict[str, Any] = {"task": first["task"], "metric": first["metric"], "higher_is_better": first["higher_is_better"]}
    for key in _PLAN:  # a setting all comparisons share is stated once; one they differ on, per source
        values = [res.get(key) for _, res in pairs]
        if all(v == values[0] for v in values) and values[0] is not None:
            merged[key] = values[0]
    merged["sources"] = [{"dir": label, "recommendation": res.get("recommendation"),
                          **{k: res.get(k) for k in _PLAN if k not in merged and res.get(k) is not None}}
                         for label, (_, res) in zip(labels, pairs)]
    merged["recommendation"] = None
    _mark_fronts(rows, merged["higher_is_better"])
    merged["rows"] = R.sort_rows(rows, merged["higher_is_better"])
    return merged, curves


def read_compare_dirs(paths: list[str | Path]) -> tuple[dict[str, Any], R.Curves]:
    if not paths:
        raise DataError("no compare directory given; pass one or more folders written by `anyformer compare`")
    return merge([(Path(p), *read_compare_dir(p)) for p in paths])
