"""The verdict of a comparison, from its rows: each model's mean quality with a 95%
interval, ties with the best model (paired tests, Holm-corrected), Pareto fronts that drop
a model only when a cheaper one beats it beyond the noise, flags (no better than a trivial
baseline, under-trained, noisy latency), constraints and the recommendation; the rows
themselves (results.json's schema) and how they are shown (a rich table, a flat CSV).

Pure functions on plain rows and per-model `Evidence`; the statistics are anyformer.stats'.
`compare` builds the rows and calls `judge`; a search trial can do the same.
"""
from anyformer.verdict.judge import LATENCY_SPREAD, UNDERTRAINED, judge, mark_delta, mark_flags
from anyformer.verdict.noise import ALPHA, CONFIDENCE, Evidence, Noise
from anyformer.verdict.ranking import goodness, mark_pareto, sort_rows, ties
from anyformer.verdict.recommend import OPTIMIZE, Constraints, recommend
from anyformer.verdict.rows import COST_KEYS, baseline_row, mean_metrics, model_row, seed_record
from anyformer.verdict.show import flat_row, results_table, write_csv

__all__ = ["ALPHA", "CONFIDENCE", "COST_KEYS", "LATENCY_SPREAD", "OPTIMIZE", "UNDERTRAINED", "Constraints", "Evidence",
           "Noise", "baseline_row", "flat_row", "goodness", "judge", "mark_delta", "mark_flags", "mark_pareto",
           "mean_metrics", "model_row", "recommend", "results_table", "seed_record", "sort_rows", "ties", "write_csv"]
