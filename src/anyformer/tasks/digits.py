"""scikit-learn's 8x8 handwritten digits (embedded: no download)."""
from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import Field

from anyformer.registry import register
from anyformer.tasks.base import Split, Task
from anyformer.tasks.splits import stratified_split


@register("task", "digits")
class DigitsTask(Task):
    """UCI optical-recognition digits as shipped by scikit-learn: 1,797 8x8 images, 10 classes,
    a fixed stratified 70/10/20 train/val/test split. Pixels scaled to [0, 1]."""

    problem = "classification"
    modality = "images"
    paper = "Optical Recognition of Handwritten Digits (Alpaydin & Kaynak 1998), via scikit-learn"

    def __init__(
        self,
        val_fraction: Annotated[float, Field(description="share of the images held out for val (stratified)")] = 0.1,
        test_fraction: Annotated[float, Field(description="share of the images held out for test (stratified)")] = 0.2,
        split_seed: Annotated[int, Field(description="seed of the stratified split")] = 0,
    ) -> None:
        super().__init__()
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed

    def build_splits(self) -> dict[str, Split]:
        from sklearn.datasets import load_digits

        data = load_digits()
        images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
        labels = torch.tensor(data.target, dtype=torch.long)
        parts = stratified_split(labels, [1 - self.val_fraction - self.test_fraction, self.val_fraction, self.test_fraction], self.split_seed)
        return {name: Split(images[idx], labels[idx]) for name, idx in zip(("train", "val", "test"), parts)}

    def model_defaults(self) -> dict[str, Any]:
        return {
            "encoder": {"name": "patches", "image_size": 8, "patch_size": 2, "channels": 1},
            "head": {"name": "cls", "num_classes": 10},
        }

    def train_defaults(self) -> dict[str, Any]:
        return {"steps": 1500, "batch_size": 64, "lr": 2e-3, "warmup_steps": 50, "eval_every": 250, "weight_decay": 0.05}

    def required_options(self) -> dict[str, dict[str, Any]]:
        return {"encoder": {"image_size": 8, "channels": 1}, "head": {"num_classes": 10, "multi_label": False}}
