"""anyformer.stats: intervals and tests that compare's verdict rests on, against known
answers and the properties they must have."""
import math

import numpy as np
import pytest

from anyformer.stats import (bootstrap_interval, bootstrap_means, holm, paired_bootstrap_pvalue, t_interval,
                             welch_pvalue, wilson_interval)


def bernoulli(p, n, seed=0, k=1):
    return (np.random.default_rng(seed).random((k, n)) < p).astype(float)


def test_wilson_interval_known_answer():
    # 90 of 100: centre (90 + z^2/2) / (100 + z^2), half-width z sqrt(pq/n + z^2/4n^2) / (1 + z^2/n).
    lo, hi = wilson_interval(90, 100)
    assert lo == pytest.approx(0.8256, abs=1e-4) and hi == pytest.approx(0.9448, abs=1e-4)
    z = 1.959964
    centre = (0.9 + z * z / 200) / (1 + z * z / 100)
    half = z * math.sqrt(0.9 * 0.1 / 100 + z * z / 40000) / (1 + z * z / 100)
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=1e-6)
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(50, 50)[1] == pytest.approx(1.0)  # stays in [0, 1]


def test_t_interval_known_answer():
    # mean 2, sd 1, t(0.975, 2) = 4.3027: 2 -/+ 4.3027 / sqrt(3).
    lo, hi = t_interval([1.0, 2.0, 3.0])
    assert (lo, hi) == pytest.approx((2 - 2.48414, 2 + 2.48414), abs=1e-4)
    assert all(math.isnan(v) for v in t_interval([0.5]))


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_test_examples():
    widths = []
    for n in (100, 400, 1600):
        x = bernoulli(0.7, n, seed=n)
        lo, hi = bootstrap_interval(x)
        assert lo < x.mean() < hi
        widths.append(hi - lo)
    # The width of a mean's interval falls as 1/sqrt(n): x4 examples, about half the width.
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4.0, rel=0.25)


def test_bootstrap_interval_of_a_large_sample_matches_the_normal_one():
    x = bernoulli(0.3, 4000, seed=1)
    p = x.mean()
    lo, hi = bootstrap_interval(x)
    half = 1.96 * math.sqrt(p * (1 - p) / x.shape[1])
    assert (lo, hi) == pytest.approx((p - half, p + half), abs=0.003)


def test_two_level_bootstrap_counts_the_spread_across_seeds():
    """Three seeds that agree give about the interval of the test examples alone; three
    that disagree (0.55 / 0.70 / 0.85 on the same examples) give a wider one."""
    same = np.repeat(bernoulli(0.7, 500, seed=2), 3, axis=0)
    rng = np.random.default_rng(3)
    apart = np.stack([(rng.random(500) < p).astype(float) for p in (0.55, 0.70, 0.85)])
    lo_s, hi_s = bootstrap_interval(same)
    lo_a, hi_a = bootstrap_interval(apart)
    assert hi_a - lo_a > 1.5 * (hi_s - lo_s)
    assert lo_a < apart.mean() < hi_a


def test_paired_bootstrap_identical_is_one_and_a_clear_gain_is_significant():
    a = bernoulli(0.6, 400, seed=4, k=2)
    assert paired_bootstrap_pvalue(a, a.copy()) == 1.0
    assert paired_bootstrap_pvalue(a, bernoulli(0.9, 400, seed=5, k=2)) < 0.01


def test_pairing_finds_a_small_gain_on_the_same_examples():
    """b fixes 30 of a's 1000 errors and breaks nothing: +3 points, inside either model's own
    interval, but every resample of the shared examples shows it."""
    a = bernoulli(0.5, 1000, seed=6)
    b = a.copy()
    b[0, np.flatnonzero(a[0] == 0)[:30]] = 1.0
    lo_b, _ = wilson_interval(int(b.sum()), 1000)
    assert lo_b < a.mean()  # the intervals overlap ...
    assert paired_bootstrap_pvalue(a, b) < 0.01  # ... the paired test still sees it


def test_bootstrap_means_pairs_units_across_models():
    a = bernoulli(0.5, 300, seed=7)
    means = bootstrap_means([a, a + 0.25], resamples=200)
    assert np.allclose(means[1] - means[0], 0.25)  # same units drawn for both
    with pytest.raises(ValueError, match="different test sets"):
        bootstrap_means([a, a[:, :10]])


def test_holm_step_down():
    # alpha / 4, / 3, / 2, / 1 for the sorted p-values 0.005, 0.01, 0.03, 0.04: the third fails.
    assert holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm([0.02, 0.03]) == [True, True]  # 0.02 <= 0.025, then 0.03 <= 0.05
    assert holm([0.02, 0.03, 0.5]) == [False, False, False]  # 0.02 > 0.05 / 3 stops at once
    assert holm([]) == []


def test_welch_without_spread_is_exact():
    assert welch_pvalue([0.5, 0.5], [0.5, 0.5]) == 1.0
    assert welch_pvalue([0.5, 0.5], [0.6, 0.6]) == 0.0
    assert welch_pvalue([0.50, 0.52, 0.51], [0.80, 0.81, 0.79]) < 0.001
