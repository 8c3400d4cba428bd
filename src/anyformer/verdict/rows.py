"""The rows of results.json: a trained model's (means over its seeds, its measured cost) and
a trivial baseline's (scored like a model, no cost). The verdict adds its fields to both."""
from __future__ import annotations

import math
from typing import Any

COST_KEYS = ("params", "params_non_embedding", "flops_per_sample", "latency_ms", "latency_ms_low", "latency_ms_high",
             "latency_ms_q1", "latency_ms_q3",
             "latency_batch", "train_step_ms", "peak_memory_bytes")


def seed_record(seed: int, summary: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    metric, final = summary["metric"], summary["final"]
    return {"seed": seed, "quality": final.get("test", {}).get(metric, math.nan),
            "val": final.get("val", {}).get(metric, math.nan), "steps": summary["steps"],
            "planned_steps": plan["planned_steps"], "train_seconds": summary["train_seconds"]}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def mean_metrics(finals: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each split's each metric averaged over the seeds."""
    return {split: {m: _mean([f.get(split, {}).get(m, math.nan) for f in finals]) for m in finals[0][split]}
            for split in finals[0]}


def model_row(name: str, summaries: list[dict[str, Any]], seeds: list[dict[str, Any]], cost: dict[str, Any],
              n_test: int) -> dict[str, Any]:
    """A model's row: quality and val are means over its seeds; steps the fewest any seed
    ran; train_seconds the mean per seed."""
    fwd = cost.get("forward", {})
    return {
        "model": name, "baseline": False, "quality": _mean([s["quality"] for s in seeds]),
        "val": _mean([s["val"] for s in seeds]), "metric": summaries[0]["metric"],
        "higher_is_better": summaries[0]["higher_is_better"], "n_test": n_test, "seeds": seeds,
        "params": cost["params"]["total"], "params_non_embedding": cost["params"].get("non_embedding"),
        "flops_per_sample": cost.get("flops", {}).get("forward_per_sample"), "latency_ms": fwd.get("median_ms"),
        "latency_ms_low": fwd.get("min_ms"), "latency_ms_high": fwd.get("max_ms"),
        "latency_ms_q1": fwd.get("q1_ms"), "latency_ms_q3": fwd.get("q3_ms"), "latency_batch": cost.get("batch"),
        "train_step_ms": cost.get("forward_backward", {}).get("median_ms"),
        "peak_memory_bytes": cost.get("memory", {}).get("forward_peak_bytes"),
        "steps": min(s["steps"] for s in seeds), "train_seconds": _mean([s["train_seconds"] for s in seeds]),
        "all_metrics": mean_metrics([s["final"] for s in summaries]),
    }


def baseline_row(name: str, metric: str, higher: bool, val: dict[str, float], test: dict[str, float],
                 n_test: int) -> dict[str, Any]:
    """A trivial baseline's row: its val and test metrics, and no cost or training fields."""
    return {"model": name, "baseline": True, "quality": test.get(metric, math.nan), "val": val.get(metric, math.nan),
            "metric": metric, "higher_is_better": higher, "n_test": n_test, "seeds": [],
            **{k: None for k in COST_KEYS}, "steps": None, "train_seconds": None, "all_metrics": {"val": val, "test": test}}
