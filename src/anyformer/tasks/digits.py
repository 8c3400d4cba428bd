"""scikit-learn's 8x8 handwritten digits (embedded: no download)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from anyformer.errors import DataError
from anyformer.registry import register
from anyformer.tasks.base import Split, Task
from anyformer.tasks.image_inputs import encode_images
from anyformer.tasks.raw import Raw, image_records
from anyformer.tasks.splits import stratified_split

SOURCE = "scikit-learn's load_digits"


def digit_tensor(image: np.ndarray, where: str) -> torch.Tensor:
    """One image [1, 8, 8] on the digits' scale [0, 1]: uint8 (an image file) / 255, any
    other real numbers as scikit-learn's 0..16 values / 16 (float32 first, as the splits)."""
    if image.dtype == np.uint8:
        return torch.from_numpy(image).float() / 255.0
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating) or image.dtype == np.bool_):
        raise DataError(f"{where}: pixels of dtype {image.dtype} are no real numbers; give 0..16 values "
                        "(scikit-learn's digits) or a uint8 image")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise DataError(f"{where}: {int((~np.isfinite(image)).sum())} pixels are NaN or infinite; give finite 0..16 values")
    return torch.tensor(image, dtype=torch.float32) / 16.0


@register("task", "digits")
class DigitsTask(Task):
    """UCI optical-recognition digits as shipped by scikit-learn: 1,797 8x8 images, 10 classes,
    a fixed stratified 70/10/20 train/val/test split. Pixels scaled to [0, 1]."""

    problem = "classification"
    modality = "images"
    raw_input = "images"
    paper = "Optical Recognition of Handwritten Digits (Alpaydin & Kaynak 1998), via scikit-learn"

    def __init__(
        self,
        val_fraction: Annotated[float, Field(description="share of the images held out for val (stratified)")] = 0.1,
        test_fraction: Annotated[float, Field(description="share of the images held out for test (stratified)")] = 0.2,
        split_seed: Annotated[int, Field(description="seed of the stratified split")] = 0,
    ) -> None:
        super().__init__()
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.classes: list[int] = list(range(10))

    def build_splits(self) -> dict[str, Split]:
        from sklearn.datasets import load_digits

        data = load_digits()
        images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
        labels = torch.tensor(data.target, dtype=torch.long)
        parts = stratified_split(labels, [1 - self.val_fraction - self.test_fraction, self.val_fraction, self.test_fraction], self.split_seed)
        self._parts = dict(zip(("train", "val", "test"), parts))
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

    # -- predict: the digits are built in; the state says how raw images are read
    def preprocessing(self) -> dict[str, Any]:
        return {"classes": self.classes, "channels": 1, "height": 8, "width": 8, "layout": "hw",
                "scaling": "0..16 values / 16 (scikit-learn's arrays); uint8 images / 255"}

    def restore(self, state: dict[str, Any]) -> None:
        self.classes = [int(c) for c in state["classes"]]

    def records(self) -> list[Raw]:
        """scikit-learn's 1,797 images, [8, 8] float64 0..16, with their digit."""
        from sklearn.datasets import load_digits

        data = load_digits()
        return [Raw(image, f"{SOURCE} [image {i}]", int(label)) for i, (image, label) in enumerate(zip(data.images, data.target))]

    def read_inputs(self, path: Path) -> list[Raw]:
        return image_records(path)

    def encode(self, records: list[Raw]) -> tuple[torch.Tensor, None]:
        """8x8 images (grey; RGB by Pillow's 'L' conversion) -> float32 [N, 1, 8, 8] in [0, 1].
        The digits are light strokes (16) on a dark ground (0): a dark-on-white drawing reads
        inverted."""
        return encode_images(records, (1, 8, 8), True, digit_tensor), None

    def targets(self, records: list[Raw]) -> torch.Tensor:
        index = {c: k for k, c in enumerate(self.classes)}
        out = []
        for r in records:
            label = r.label.item() if isinstance(r.label, np.generic) else r.label
            if not isinstance(label, int) or isinstance(label, bool) or label not in index:
                raise DataError(f"{r.where}: label {label!r} is no digit 0..9")
            out.append(index[label])
        return torch.tensor(out, dtype=torch.long)
