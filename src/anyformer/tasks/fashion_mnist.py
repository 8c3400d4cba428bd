"""Fashion-MNIST (or any MNIST-format IDX folder), as images or as LRA-style pixel sequences."""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from anyformer.errors import ConfigError, DataError
from anyformer.registry import register
from anyformer.tasks.base import Split, Task
from anyformer.tasks.image_inputs import encode_images
from anyformer.tasks.images import pixel_tensor
from anyformer.tasks.raw import Raw, image_records
from anyformer.tasks.splits import stratified_split

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist package
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX array (LeCun's MNIST format: 0, 0, type code, rank, big-endian int32 sizes,
    then the data), gzipped or not."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: a broken gzip file ({err}); download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (magic bytes {raw[:4].hex() or 'missing'}); give MNIST-format files")
    rank = raw[3]
    header = 4 + 4 * rank
    if len(raw) < header:
        raise DataError(f"{path}: the IDX header is cut short; the file is truncated")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=rank, offset=4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    need = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != need:
        raise DataError(f"{path}: holds {len(raw) - header} bytes of data, its header {list(shape)} promises {need}; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write `array` (uint8) as an IDX file, gzipped when the name ends in .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes() + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def token_tensor(image: np.ndarray, where: str) -> torch.Tensor:
    """One grey image [1, H, W] as the sequence form's tokens: its pixel bytes, int64 [H * W]."""
    if image.dtype != np.uint8:
        whole = np.issubdtype(image.dtype, np.integer) and (image.size == 0 or (image.min() >= 0 and image.max() <= 255))
        if not whole:
            raise DataError(f"{where}: pixels of dtype {image.dtype} are no bytes; the model reads 0..255 pixel values "
                            "as tokens: give uint8 images")
        image = image.astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(image)).flatten().long()


def find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(
        f"no {stem}[.gz] in {str(folder)!r}; `apt-get install dataset-fashion-mnist` "
        f"(installs {DEFAULT_DIR}) or pass data_dir=FOLDER with MNIST-format IDX files"
    )


@register("task", "fashion-mnist")
class FashionMNISTTask(Task):
    """Fashion-MNIST (Xiao et al. 2017): 28x28 grey images of 10 clothing classes, 60k train
    (a fixed stratified `val_size` of it held out as 'val') and 10k test. Images [1, H, W]
    in [0, 1] for the `patches` encoder, or with `as_sequence` the pixels as H*W byte tokens
    (LRA's "Image" task, Tay et al. 2021) for the `tokens` encoder. `data_dir` reads any
    folder of MNIST-format IDX files (gzipped or not)."""

    file_options = ("data_dir",)
    raw_input = "images"

    problem = "classification"
    modality = "images"
    paper = "Fashion-MNIST (Xiao et al. 2017); LRA pixel-sequence protocol (Tay et al. 2021)"

    def __init__(
        self,
        data_dir: Annotated[str, Field(description="folder of the MNIST-format IDX files (train-/t10k-images/labels, gzipped or not)")] = DEFAULT_DIR,
        as_sequence: Annotated[bool, Field(description="pixels as H*W byte tokens (LRA 'Image') instead of [1, H, W] images")] = False,
        val_size: Annotated[int, Field(description="training images held out for val (stratified)")] = 5000,
        split_seed: Annotated[int, Field(description="seed of the val split")] = 0,
    ) -> None:
        super().__init__()
        if val_size < 1:
            raise ConfigError(f"task 'fashion-mnist': val_size must be >= 1, got {val_size}")
        self.data_dir, self.as_sequence, self.val_size, self.split_seed = Path(data_dir), as_sequence, val_size, split_seed
        # The instance's modality decides which encoder a preset must bring.
        self.modality = "tokens" if as_sequence else "images"
        self._size: tuple[int, int] | None = None
        self.classes: list[str] = list(CLASSES)

    @staticmethod
    def write_example(folder: Path, n: int = 40, size: int = 8) -> dict[str, Any]:
        """Write a tiny random MNIST-format folder and return options that read it."""
        rng = np.random.default_rng(0)
        folder = Path(folder)
        for part, count in (("train", n), ("test", n // 2)):
            img, lab = FILES[part]
            write_idx(folder / f"{img}.gz", rng.integers(0, 256, (count, size, size)))
            write_idx(folder / lab, np.arange(count) % len(CLASSES))
        return {"data_dir": str(folder), "val_size": n // 4}

    def _load(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.data_dir.is_dir():
            raise DataError(
                f"Fashion-MNIST folder {str(self.data_dir)!r} does not exist; `apt-get install dataset-fashion-mnist` "
                "or pass data_dir=FOLDER with MNIST-format IDX files"
            )
        img_path, lab_path = (find_idx(self.data_dir, stem) for stem in FILES[part])
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(f"{img_path}: expected uint8 images [N, H, W], got {images.dtype} {list(images.shape)}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{lab_path}: expected {len(images)} labels (one per image), got shape {list(labels.shape)}")
        if len(labels) and int(labels.max()) >= len(CLASSES):
            raise DataError(f"{lab_path}: label {int(labels.max())} outside 0..{len(CLASSES) - 1}")
        return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))

    def _transform(self, images: torch.Tensor) -> torch.Tensor:
        if self.as_sequence:
            return images.flatten(1).long()
        return images[:, None].float() / 255.0

    def build_splits(self) -> dict[str, Split]:
        x, y = self._load("train")
        x_test, y_test = self._load("test")
        if x.shape[1:] != x_test.shape[1:]:
            raise DataError(f"train images are {list(x.shape[1:])} but test images {list(x_test.shape[1:])}; give one image size")
        self._size = (int(x.shape[1]), int(x.shape[2]))
        if self.val_size >= len(y):
            raise DataError(f"val_size {self.val_size} leaves no training images ({len(y)} in all); lower val_size")
        train, val = stratified_split(y, [1 - self.val_size / len(y), self.val_size / len(y)], self.split_seed)
        self._parts = {"train": train, "val": val, "test": torch.arange(len(y_test)) + len(y)}  # records(): train, then test
        # uint8 in memory (47 MB for the full set); scaled per batch by `transform`.
        return {"train": Split(x[train], y[train], transform=self._transform),
                "val": Split(x[val], y[val], transform=self._transform),
                "test": Split(x_test, y_test, transform=self._transform)}

    def image_size(self) -> tuple[int, int]:
        if self._size is None:
            self.splits()
        return self._size

    def model_defaults(self) -> dict[str, Any]:
        H, W = self.image_size()
        if self.as_sequence:
            return {"encoder": {"name": "tokens", "vocab_size": 256}, "head": {"name": "mean", "num_classes": 10},
                    "max_len": H * W}
        patch = 4 if H % 4 == 0 and W % 4 == 0 else 1
        return {"encoder": {"name": "patches", "image_size": [H, W], "patch_size": patch, "channels": 1},
                "head": {"name": "cls", "num_classes": 10}}

    def required_options(self) -> dict[str, dict[str, Any]]:
        H, W = self.image_size()
        encoder = {"vocab_size": 256} if self.as_sequence else {"image_size": [H, W], "channels": 1}
        return {"encoder": encoder, "head": {"num_classes": 10, "multi_label": False}}

    # -- predict: the image size the run trained on (classes and scaling are fixed)
    def preprocessing(self) -> dict[str, Any]:
        H, W = self.image_size()
        return {"classes": self.classes, "channels": 1, "height": H, "width": W, "layout": "hw",
                "scaling": "uint8 bytes as tokens" if self.as_sequence else "uint8 / 255"}

    def restore(self, state: dict[str, Any]) -> None:
        self.classes = [str(c) for c in state["classes"]]
        self._size = (int(state["height"]), int(state["width"]))

    def records(self) -> list[Raw]:
        """The training file's images, then the test file's: uint8 [H, W], each with its label."""
        out = []
        for part in ("train", "test"):
            x, y = self._load(part)
            path = find_idx(self.data_dir, FILES[part][0])
            out += [Raw(image, f"{path} [image {i}]", label) for i, (image, label) in enumerate(zip(x.numpy(), y.tolist()))]
        return out

    def read_inputs(self, path: Path) -> list[Raw]:
        return image_records(path)

    def encode(self, records: list[Raw]) -> tuple[torch.Tensor, None]:
        """Grey images (RGB by Pillow's 'L' conversion) -> float32 [N, 1, H, W] by `pixels`'
        rule (uint8 / 255), or with `as_sequence` their pixel bytes, int64 [N, H * W]."""
        H, W = self.image_size()
        return encode_images(records, (1, H, W), True, token_tensor if self.as_sequence else pixel_tensor), None

    def targets(self, records: list[Raw]) -> torch.Tensor:
        out = []
        for r in records:
            label = r.label.item() if isinstance(r.label, np.generic) else r.label
            k = self.classes.index(label) if isinstance(label, str) and label in self.classes else label
            if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < len(self.classes):
                raise DataError(f"{r.where}: label {label!r} is no class of the run (0..{len(self.classes) - 1} "
                                f"or a name: {', '.join(self.classes)})")
            out.append(k)
        return torch.tensor(out, dtype=torch.long)
