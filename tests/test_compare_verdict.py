"""anyformer.verdict on synthetic rows and outcomes: ties with the best (Holm-corrected),
noise-aware Pareto fronts, flags, constraints and the recommendation's choice and words."""
import math

import numpy as np
import pytest

from anyformer.errors import ConfigError
from anyformer.verdict import Constraints, Evidence, Noise, judge, mark_flags, mark_pareto, recommend, ties


def hits(p, n=600, seed=0, k=1):
    return (np.random.default_rng(seed).random((k, n)) < p).astype(float)


def row(name, quality, latency=1.0, params=1000, memory=2**20, baseline=False, **extra):
    r = {"model": name, "quality": quality, "higher_is_better": True, "metric": "accuracy", "baseline": baseline,
         "latency_ms": latency, "params": params, "peak_memory_bytes": memory, "seeds": [], "flags": []}
    return {**r, **extra}


def evidence_of(outcomes):
    return {name: Evidence([float(o.mean())] * o.shape[0], o) for name, o in outcomes.items()}


class FixedNoise:
    """p-values given by hand, to test the correction apart from the test."""

    def __init__(self, p):
        self.p = p

    def pvalue(self, a, b):
        return self.p[frozenset((a, b))], "given"


def test_a_clearly_better_model_is_not_tied_and_an_identical_one_is():
    best = hits(0.9, seed=1, k=2)
    outcomes = {"best": best, "twin": best.copy(), "worse": hits(0.6, seed=2, k=2)}
    rows = [row(n, float(o.mean())) for n, o in outcomes.items()]
    top, tied, test = ties(rows, Noise(evidence_of(outcomes)))
    assert top["model"] in ("best", "twin") and tied == {"best", "twin"}
    assert "paired bootstrap over seeds and test examples" in test and "Holm" in test and "over 2 comparisons" in test


def test_holm_keeps_a_tie_that_one_uncorrected_test_would_break():
    rows = [row("a", 0.9), row("b", 0.85), row("c", 0.84), row("d", 0.5)]
    p = {frozenset(("a", "b")): 0.02, frozenset(("a", "c")): 0.03, frozenset(("a", "d")): 0.5}
    _, tied, _ = ties(rows, FixedNoise(p))
    # 0.02 < 0.05 alone, but Holm over 3 tests needs 0.02 <= 0.05 / 3: nothing is rejected.
    assert tied == {"a", "b", "c", "d"}
    p[frozenset(("a", "d"))] = 0.001
    _, tied, _ = ties(rows, FixedNoise(p))
    assert tied == {"a"}  # 0.001 <= 0.05/3, 0.02 <= 0.05/2, 0.03 <= 0.05


def test_pareto_keeps_a_cheaper_model_the_better_one_does_not_beat_beyond_the_noise():
    a = hits(0.80, seed=3)
    b = a.copy()
    b[0, np.flatnonzero(a[0] == 1)[:3]] = 0.0  # 3 of 600 examples worse: noise
    c = hits(0.50, seed=4)  # clearly worse, and costlier than a
    rows = [row("a", a.mean(), latency=5.0, params=5000), row("b", b.mean(), latency=1.0, params=9000),
            row("c", c.mean(), latency=6.0, params=6000)]
    mark_pareto(rows, Noise(evidence_of({"a": a, "b": b, "c": c})))
    flags = {r["model"]: (r["pareto_latency"], r["pareto_params"]) for r in rows}
    # b is cheaper in latency; in params a is cheaper but only 3 examples better: noise, so
    # b stays on both fronts. c is beaten beyond the noise by a, which is cheaper on both.
    assert flags == {"a": (True, True), "b": (True, True), "c": (False, False)}
    # Without a noise estimate, any better model dominates a costlier one: b is off the params front.
    plain = [dict(r) for r in rows]
    mark_pareto(plain)
    assert [(r["pareto_latency"], r["pareto_params"]) for r in plain] == [(True, True), (True, False), (False, False)]


def test_flags_untrained_noisy_and_no_better_than_baseline():
    base = row("majority class", 0.10, baseline=True, latency=None, params=None)
    untrained = row("untrained", 0.11, quality_low=0.08, quality_high=0.14, latency_ms_low=1.0, latency_ms_high=2.0,
                    seeds=[{"seed": 0, "quality": 0.11, "steps": 1, "planned_steps": 10}])
    good = row("good", 0.90, quality_low=0.87, quality_high=0.93, latency_ms_low=1.0, latency_ms_high=1.2,
               seeds=[{"seed": 0, "quality": 0.9, "steps": 10, "planned_steps": 10},
                      {"seed": 1, "quality": math.nan, "steps": 10, "planned_steps": 10}])
    rows = [base, untrained, good]
    mark_flags(rows)
    assert untrained["flags"] == ["<= baseline majority class", "undertrained 1/10 steps", "noisy latency 2.0x"]
    assert good["flags"] == ["NaN in 1/2 seeds"] and base["flags"] == []


def test_lower_is_better_baseline_flag_reads_the_upper_end():
    base = row("last value", 1.0, baseline=True, higher_is_better=False)
    close = row("close", 0.95, quality_low=0.90, quality_high=1.02, higher_is_better=False)
    clear = row("clear", 0.50, quality_low=0.45, quality_high=0.55, higher_is_better=False)
    mark_flags([base, close, clear])
    assert close["flags"] == ["<= baseline last value"] and clear["flags"] == []


# ---------------------------------------------------------------- constraints and the recommendation

def three_models():
    """A: best, slow and big; B: tied with A (same outcomes but 2 of 600), fast; C: clearly
    worse, fastest and smallest."""
    a = hits(0.95, seed=5)
    b = a.copy()
    b[0, np.flatnonzero(a[0] == 1)[:2]] = 0.0
    c = hits(0.70, seed=6)
    outcomes = {"A": a, "B": b, "C": c}
    rows = [row("A", a.mean(), latency=10.0, params=1_000_000, memory=50 * 2**20),
            row("B", b.mean(), latency=2.0, params=2_000_000, memory=40 * 2**20),
            row("C", c.mean(), latency=1.0, params=100_000, memory=None)]
    return rows, Noise(evidence_of(outcomes)), outcomes


def test_quality_recommends_the_fastest_model_tied_with_the_best():
    rows, noise, _ = three_models()
    rec, reason = recommend(rows, noise, Constraints())
    assert rec["model"] == "B" and reason == rec["reason"]
    assert [r["recommended"] for r in rows] == [False, True, False]
    assert reason.startswith("B is the fastest (2 ms) of the 2 models tied with the best, A (test accuracy ")
    assert "among all models (no constraints set)" in reason


def test_params_recommends_the_smallest_model_tied_with_the_best():
    rows, noise, _ = three_models()
    rec, reason = recommend(rows, noise, Constraints(), optimize="params")
    assert rec["model"] == "A" and "is the smallest (1,000,000 params)" in reason


def test_constraints_filter_before_the_choice():
    rows, noise, _ = three_models()
    rec, reason = recommend(rows, noise, Constraints(max_params=200_000))
    assert rec["model"] == "C" and [r["feasible"] for r in rows] == [False, False, True]
    assert reason == f"C is the only model meeting params <= 200,000 (it has 100,000 params), with test accuracy {rows[2]['quality']:.4f}."
    rec, reason = recommend(rows, noise, Constraints(max_latency_ms=5.0, max_params=5_000_000))
    assert rec["model"] == "B"  # A is too slow; C is clearly worse than B
    assert reason == (f"B has the best test accuracy ({rows[1]['quality']:.4f}) among the 2 models meeting latency <= 5 ms "
                      "and params <= 5,000,000 (it has 2 ms, 2,000,000 params), and no other is tied with it.")


def test_an_unmeasured_quantity_does_not_meet_its_limit():
    rows, noise, _ = three_models()
    rec, _ = recommend(rows, noise, Constraints(max_memory_mb=45))
    assert rec["model"] == "B" and [r["feasible"] for r in rows] == [False, True, False]  # C's memory is unknown


def test_no_model_meets_the_constraints():
    rows, noise, _ = three_models()
    rec, reason = recommend(rows, noise, Constraints(max_latency_ms=0.5))
    assert rec is None and not any(r["recommended"] or r["feasible"] for r in rows)
    assert reason == "no model meets latency <= 0.5 ms: the lowest latency is 1 ms (C)"


def test_recommend_rejects_an_unknown_objective():
    rows, noise, _ = three_models()
    with pytest.raises(ConfigError, match="valid: latency, params, quality"):
        recommend(rows, noise, Constraints(), optimize="speed")


def test_judge_sets_every_field_and_ranks_the_baseline_after_the_models():
    rows, _, outcomes = three_models()
    base = row("majority class", 0.8, baseline=True, latency=None, params=None, memory=None)
    outcomes = {**outcomes, "majority class": hits(0.8, seed=8)}
    base["quality"] = float(outcomes["majority class"].mean())
    ranked, fields = judge(rows + [base], evidence_of(outcomes), reference="C", constraints=Constraints(max_params=3_000_000))
    # Better than C, the baseline still comes after every model; C is flagged for it.
    assert [r["model"] for r in ranked] == ["A", "B", "C", "majority class"]
    assert ranked[2]["flags"] == ["<= baseline majority class"] and ranked[0]["flags"] == []
    assert fields["recommendation"]["model"] == "B" and fields["constraints"]["max_params"] == 3_000_000
    assert fields["interval_method"] == "Wilson score over test examples"
    assert fields["tie_test"] == "paired bootstrap over test examples; Holm-corrected over 2 comparisons with the best, alpha 0.05"
    assert [r["tied_with_best"] for r in ranked] == [True, True, False, False]
    for r in ranked:
        assert r["quality_low"] <= r["quality"] <= r["quality_high"]
        assert r["delta"] == pytest.approx(r["quality"] - rows[2]["quality"])


def test_the_best_model_when_it_is_also_the_cheapest_of_those_tied():
    rows, noise, _ = three_models()
    rows[0]["latency_ms"] = 0.5  # A: the best and now the fastest
    rec, reason = recommend(rows, noise, Constraints())
    assert rec["model"] == "A"
    assert reason == (f"A has the best test accuracy ({rows[0]['quality']:.4f}) and is the fastest (0.5 ms) of the 2 models "
                      "tied with it, among all models (no constraints set).")


def test_one_model_needs_no_tie_test():
    rows, noise, _ = three_models()
    assert ties(rows[:1], noise) == (rows[0], {"A"}, "none (one model)")


def test_a_seed_interval_never_leaves_the_metric_range():
    # Three seeds near a perfect accuracy: Student t reaches above 1 unless cut to the range.
    seeds = {"A": Evidence([0.99, 1.0, 0.97]), "B": Evidence([0.002, 0.0, 0.004])}
    low, high, method = Noise(seeds).interval("A")
    assert method == "Student t over seeds" and high > 1.0
    bounded = Noise(seeds, bounds=(0.0, 1.0))
    assert bounded.interval("A")[:2] == (low, 1.0)
    assert bounded.interval("B")[0] == 0.0 and Noise(seeds).interval("B")[0] < 0.0
    rows, _ = judge([row("A", 0.9867), row("B", 0.002)], seeds, reference="A", bounds=(0.0, 1.0))
    assert [(r["quality_low"] >= 0.0, r["quality_high"] <= 1.0) for r in rows] == [(True, True)] * 2


def test_one_slow_latency_repeat_is_no_disagreement():
    # min-max 2.0x from one hiccup, but the middle half agrees: the median stands, no flag.
    hiccup = row("hiccup", 0.9, latency_ms_low=1.0, latency_ms_high=2.0, latency_ms_q1=1.0, latency_ms_q3=1.1)
    spread = row("spread", 0.9, latency_ms_low=1.0, latency_ms_high=2.0, latency_ms_q1=1.0, latency_ms_q3=1.8)
    mark_flags([hiccup, spread])
    assert hiccup["flags"] == [] and spread["flags"] == ["noisy latency 1.8x"]
