"""The numbers behind the figures: seed bands, interval error bars, axis scales, the
constraint region and the reading of older or partial results."""
import math

import pytest

from anyformer.report import points as P
from anyformer.report import results as R
from anyformer.report.curves import band, curve_bands


def test_seed_band_is_mean_and_min_max_of_the_seeds_that_logged_the_step():
    runs = [[{"step": 10, "loss": 1.0}, {"step": 20, "loss": 0.5}, {"step": 20, "split": "val", "accuracy": 0.8}],
            [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 1.5}, {"step": 30, "loss": 0.9}],
            [{"step": 10, "loss": 2.0}]]
    b = band(runs, "loss")
    assert b.steps == [10, 20, 30] and b.seeds == [3, 2, 1]
    assert b.mean == [2.0, 1.0, 0.9] and b.low == [1.0, 0.5, 0.9] and b.high == [3.0, 1.5, 0.9]
    val = band(runs, "accuracy", "val")
    assert val.steps == [20] and val.mean == [0.8]


def test_a_resumed_run_logging_a_step_twice_counts_it_once():
    b = band([[{"step": 5, "loss": 9.0}, {"step": 5, "loss": 1.0}]], "loss")
    assert b.mean == [1.0]


def test_curves_of_one_run_per_model_are_one_seed():
    single = {"vit": [{"step": 1, "loss": 2.0}]}
    assert R.per_seed(single) == {"vit": [[{"step": 1, "loss": 2.0}]]}
    seeds = {"vit": [[{"step": 1, "loss": 2.0}], [{"step": 1, "loss": 4.0}], []]}
    assert R.per_seed(seeds) == {"vit": [[{"step": 1, "loss": 2.0}], [{"step": 1, "loss": 4.0}]]}
    assert curve_bands(R.per_seed(seeds), "accuracy")["vit"][0].mean == [3.0]
    assert curve_bands({"empty": [[{"step": 1, "lr": 0.1}]]}, "accuracy") == {}


@pytest.mark.parametrize("values, log", [([1.3, 7.5], False), ([1.0, 10.0], False), ([12_000, 420_000], True),
                                         ([0.5, 5.1], True), ([], False)])
def test_log_axis_only_beyond_one_decade(values, log):
    assert P.log_axis(values) is log


def test_log_ticks_are_one_two_five_per_decade():
    assert P.log_ticks(9_000, 420_000) == [10_000, 20_000, 50_000, 100_000, 200_000]
    assert [P.compact(t) for t in (0.5, 20_000, 1.5e6)] == ["0.5", "20k", "1.5M"]


def test_points_carry_the_interval_as_error_bars_and_skip_what_cannot_be_drawn():
    res = R.normalize({"task": "t", "metric": "accuracy", "rows": [
        {"model": "a", "quality": 0.9, "quality_low": 0.85, "quality_high": 0.92, "latency_ms": 2.0,
         "latency_ms_low": 1.5, "latency_ms_high": 3.0, "params": 10, "pareto_latency": True},
        {"model": "no score", "quality": None, "latency_ms": 1.0, "params": 5},
        {"model": "no cost", "quality": 0.5},
        {"model": "baseline", "quality": 0.1, "baseline": True},
    ]})
    pts = P.points(res, "latency_ms", R.colours(["a"]))
    assert [p.model for p in pts] == ["a"]
    assert pts[0].y_err == pytest.approx((0.05, 0.02)) and pts[0].x_err == pytest.approx((0.5, 1.0))
    assert pts[0].on_front and P.points(res, "params", {})[0].x_err is None
    assert "accuracy 0.9000 \u00b1 0.0500 [0.8500, 0.9200]" in pts[0].hover


def test_constraints_are_read_loosely_and_clipped_to_the_axes():
    bounds = R.limits({"max_latency_ms": 6, "min_accuracy": 0.9, "max_params": 1e6, "note": "x", "max_memory_mb": 10},
                      "accuracy")
    assert bounds == {"latency_ms": (None, 6.0), "quality": (0.9, None), "params": (None, 1e6)}
    assert R.limits({"max_mse": 0.3}, "mse") == {"quality": (None, 0.3)}
    res = {"constraints": {"max_latency_ms": 6, "min_accuracy": 0.9}, "metric": "accuracy"}
    assert P.region(res, "latency_ms", (1.0, 8.0), (0.8, 1.0)) == (1.0, 6.0, 0.9, 1.0)
    assert P.region(res, "params", (1.0, 8.0), (0.8, 1.0)) == (1.0, 8.0, 0.9, 1.0)
    assert P.region(res, "latency_ms", (7.0, 8.0), (0.8, 1.0)) is None  # nothing plotted meets it
    assert P.region({"constraints": {}, "metric": "accuracy"}, "params", (1, 2), (0, 1)) is None


def test_a_far_baseline_is_kept_off_the_quality_axis_and_a_near_one_on_it():
    pts = [P.Point("a", 1.0, 0.90, (0.01, 0.01), None, "#000", False, True, False, ""),
           P.Point("b", 2.0, 0.95, None, None, "#000", False, True, False, "")]
    far = P.y_range(pts, [0.1])
    assert far[0] > 0.8 and P.off_axis(0.1, far) == "below"
    near = P.y_range(pts, [0.85])
    assert near[0] < 0.85 and P.off_axis(0.85, near) is None


def test_old_results_get_metric_direction_and_recommended_from_what_they_hold():
    res = R.normalize({"task": "digits", "rows": [{"model": "m", "quality": float("nan"), "metric": "mse",
                                                   "higher_is_better": False}]})
    assert res["metric"] == "mse" and res["higher_is_better"] is False and res["constraints"] == {}
    assert res["rows"][0]["quality"] is None and res["rows"][0]["recommended"] is False and res["recommendation"] is None
    rec = R.normalize({"task": "t", "recommendation": {"model": "m", "reason": "r"}, "rows": [{"model": "m", "quality": 1}]})
    assert rec["rows"][0]["recommended"] is True and R.flags(rec["rows"][0]) == ["recommended"]


def test_sorting_puts_the_best_first_and_unscored_rows_last():
    rows = [{"quality": 0.2}, {"quality": None}, {"quality": 0.9}]
    assert [r["quality"] for r in R.sort_rows(rows, True)] == [0.9, 0.2, None]
    assert [r["quality"] for r in R.sort_rows(rows, False)] == [0.2, 0.9, None]
    assert R.num(float("inf")) is None and R.num(True) is None and math.isclose(R.num(3), 3.0)


def test_the_test_set_size_names_its_units():
    assert R.describe_test_set({"n_test": 359, "test_unit": "example", "n_test_units": 359}) == "359 examples"
    assert R.describe_test_set({"n_test": 64, "test_unit": "token", "n_test_units": 3968}) == "64 (3,968 tokens scored)"
    assert R.describe_test_set({"n_test": 1}) == "1 example" and R.describe_test_set({}) == "-"
