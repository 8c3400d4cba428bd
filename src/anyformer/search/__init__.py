"""Multi-objective search of the design space on Optuna: which design, out of all anyformer
can build, for a trade-off of quality against latency, parameters, memory or size.

`space` (the YAML space: fixed values, distributions, components chosen with their own
options, per-layer-group mixers, the quantization policy), `objectives` (what is optimised,
the hypervolume), `trial` (one candidate: compare's per-model cost, plan and training),
`pruning` (dominance on validation quality; the median for one objective), `storage` (the
journal file or an RDB, stale trials of dead workers failed and retried), `worker` (the
loop over trials, one per process), `results` (front, runnable configs, figures, the
page), `job` (`search`).

DIR holds search.json (the settings), study.journal (the default storage), trials/NNNN/
(each trial's cost, plan, measures and run directory), workers/ (each worker process's
log), configs/trial-NNNN.yaml, trials.csv, front.csv, search_results.json, the figures
(pareto_front.png, param_importances.png, history.png, hypervolume.png) and search.html.
"""
from anyformer.search.job import search
from anyformer.search.results import write_results
from anyformer.search.space import Space, read_space

__all__ = ["Space", "read_space", "search", "write_results"]
