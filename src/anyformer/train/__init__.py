"""Training: the loop, exact resume, evaluation, distributed set-up. `load_run` and
`read_metrics` live below the engine (catalog, rundir); they are re-exported here because
a trained run is where users first meet them."""
from anyformer.catalog import load_run
from anyformer.rundir import read_metrics
from anyformer.train.loop import Trainer, train

__all__ = ["Trainer", "load_run", "read_metrics", "train"]
