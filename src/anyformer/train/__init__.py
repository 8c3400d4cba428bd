"""Training: the loop, checkpoints and exact resume, evaluation, distributed set-up."""
from anyformer.train.loop import Trainer, load_run, read_metrics, train

__all__ = ["Trainer", "load_run", "read_metrics", "train"]
