"""The main job: train several variants on one task under the same budget, K seeds each,
profile each, and lay quality (the mean over seeds, with a 95% interval) beside cost and
beside the task's trivial baselines. What the numbers mean (intervals, ties, fronts,
flags, the recommendation) is anyformer.verdict's; this package runs the work:
`models` (which variants), `plan` (each model's cost and step count, measured once),
`scoring` (per-example test outcomes, the baselines), `job` (the seeds, one after another
or side by side, and the results files).

`out` holds, per model, <model-slug>/cost.json (measured once), <model-slug>/plan.json
(the step count every seed trains, computed once) and <model-slug>/seed-<k>/ (one run
directory per seed, with the per-example test outcomes beside its summary); then
results.json, results.csv and report.html. A killed compare resumes: finished seeds are
read back, a half-trained one continues from its checkpoint.

Model specs: a preset (`vit`), a preset with another token mixer (`vit+linear`), or a
YAML file (its stem names the row).
"""
from anyformer.compare.job import compare, seed_dir
from anyformer.compare.models import ModelSpec, default_models, parse_model_spec
from anyformer.compare.scoring import baseline_rows, score
from anyformer.verdict import mark_pareto

__all__ = ["ModelSpec", "baseline_rows", "compare", "default_models", "mark_pareto", "parse_model_spec", "score", "seed_dir"]
