"""Image classification from the user's .npz file of arrays."""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from anyformer.errors import ConfigError, DataError, unknown
from anyformer.registry import register
from anyformer.tasks.base import Split, Task, require_classes
from anyformer.tasks.files import existing_file
from anyformer.tasks.image_inputs import encode_images
from anyformer.tasks.raw import Raw, image_records
from anyformer.tasks.splits import stratified_split

LAYOUTS = ("auto", "nhwc", "nchw")
SAVE = "save with np.savez(path, x=images, y=labels)"
# Integer pixels are scaled by their dtype's maximum (uint8 / 255, uint16 / 65535, ...). Wider
# integers are refused: their maximum says nothing of the pixels' range (np.array of Python
# ints is int64: dividing by 2**63 would zero every image).
SCALED_INTS = (np.uint8, np.int8, np.uint16, np.int16)


def pixels(x: np.ndarray, where: str) -> np.ndarray:
    """Images as stored for the splits: uint8 kept (scaled batch by batch), other 8/16-bit
    integers scaled to float32 by their dtype's maximum, booleans 0/1, floats kept as float32;
    a DataError for complex, wider-integer or non-numeric dtypes and for NaN / inf values."""
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_:
        return x.astype(np.float32)
    if any(x.dtype == t for t in SCALED_INTS):
        return x.astype(np.float32) / np.float32(np.iinfo(x.dtype).max)
    if np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{where}: images hold complex numbers (dtype {x.dtype}); save real pixel values (np.abs(x) or x.real)")
    if np.issubdtype(x.dtype, np.integer):
        raise DataError(f"{where}: images of dtype {x.dtype} have no known pixel range; save them as uint8 / uint16 "
                        "(scaled by 255 / 65535) or as float32 already scaled")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{where}: images must be numbers, got dtype {x.dtype}; save numeric pixel arrays")
    bad = ~np.isfinite(x)
    if bad.any():
        first = [int(i) for i in np.unravel_index(int(np.argmax(bad)), x.shape)]
        raise DataError(f"{where}: {int(bad.sum())} pixels are NaN or infinite, the first in image {first[0]} (index {first}); "
                        "fill or drop those images")
    return x.astype(np.float32, copy=False)


def pixel_tensor(image: np.ndarray, where: str) -> torch.Tensor:
    """One image [C, H, W] as the images-npz split gives it to the model: `pixels` (its
    dtype's rule), then uint8 / 255 as the split's transform does; float32."""
    x = pixels(image[None], where)[0]
    return torch.from_numpy(x).float() / 255.0 if x.dtype == np.uint8 else torch.from_numpy(np.ascontiguousarray(x))


def label_key(label: Any) -> Any:
    """A label as JSON keeps it: NumPy scalars as Python values, bytes as text (latin-1, one
    character a byte), so a saved class and a record's label compare equal."""
    if isinstance(label, np.generic):
        label = label.item()
    return label.decode("latin-1") if isinstance(label, bytes) else label


def label_array(y: np.ndarray, where: str) -> np.ndarray:
    """`y` when it holds class names (integers, booleans, strings, finite floats), else a DataError."""
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y)
        if bad.any():
            raise DataError(f"{where}: {int(bad.sum())} labels are NaN or infinite, the first at index {int(np.argmax(bad))}; "
                            "give every image a class")
    elif not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_ or y.dtype.kind in "US"):
        raise DataError(f"{where}: labels must be integers or strings, got dtype {y.dtype}")
    return y


def to_nchw(x: np.ndarray, layout: str, where: str) -> np.ndarray:
    """[N, H, W] / [N, H, W, C] / [N, C, H, W] -> [N, C, H, W]. 'auto' takes a last axis of
    1, 3 or 4 as channels, else a second axis of 1, 3 or 4."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise DataError(f"{where}: images must be [N, H, W], [N, H, W, C] or [N, C, H, W], got shape {list(x.shape)}")
    if layout == "auto":
        layout = "nhwc" if x.shape[3] in (1, 3, 4) else "nchw" if x.shape[1] in (1, 3, 4) else ""
        if not layout:
            raise DataError(f"{where}: cannot tell the channel axis of shape {list(x.shape)}; set layout='nhwc' or 'nchw'")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "nhwc" else x


@register("task", "images-npz")
class ImagesNPZTask(Task):
    """Classify images stored in a NumPy .npz: arrays `x` ([N, H, W], [N, H, W, C] or
    [N, C, H, W]) and `y` (integer, boolean, string or float labels, coded in sorted order),
    optional `x_test` / `y_test`. Pixels: integers are scaled by their dtype's maximum (uint8
    / 255, uint16 / 65535, int8 / 127, int16 / 32767), booleans read 0 / 1, floats are kept
    as they are (scale them yourself); complex values, wider integers and NaN / inf pixels
    are refused. At least two classes; y_test may hold no class y lacks. Without a test set
    a stratified seeded `test_fraction` is held out; `val_fraction` of the rest is always the
    val split. Loaded without pickle (object arrays are refused, never unpickled)."""

    argument_option = "path"
    file_options = ("path",)
    raw_input = "images"

    problem = "classification"
    modality = "images"
    paper = "An Image is Worth 16x16 Words (Dosovitskiy et al. 2021) inputs"

    def __init__(
        self,
        path: Annotated[str, Field(description="the .npz file with arrays x (images) and y (labels), optionally x_test / y_test")],
        layout: Annotated[str, Field(description="axis order of 4-d images: 'auto' (channels are the axis of size 1, 3 or 4), 'nhwc' or 'nchw'")] = "auto",
        val_fraction: Annotated[float, Field(description="share of the training images held out for val (stratified)")] = 0.1,
        test_fraction: Annotated[float, Field(description="share held out for test when the file has no x_test / y_test (stratified)")] = 0.2,
        split_seed: Annotated[int, Field(description="seed of the stratified splits")] = 0,
    ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise unknown("layout", layout, LAYOUTS)
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ConfigError("task 'images-npz': val_fraction and test_fraction must be in (0, 1) with a sum below 1")
        self.path, self.layout, self.val_fraction, self.test_fraction = path, layout, val_fraction, test_fraction
        self.split_seed = split_seed
        self.classes: list[Any] = []
        self._shape: tuple[int, int, int] | None = None
        self._stored = "nhwc"  # x's axis order in the file ('nhw', 'nhwc', 'nchw'): predict's tie-break

    @staticmethod
    def write_example(folder, n: int = 40) -> dict[str, Any]:
        rng = np.random.default_rng(0)
        path = f"{folder}/images.npz"
        np.savez(path, x=rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), y=np.arange(n) % 4,
                 x_test=rng.integers(0, 256, (n // 4, 8, 8, 3), dtype=np.uint8), y_test=np.arange(n // 4) % 4)
        return {"path": path}

    def _load(self) -> dict[str, np.ndarray]:
        path = existing_file(self.path, "images .npz file")
        # np.load takes any file that is not a zip archive for a .npy or a pickle: say what the
        # file is not before numpy says it would need `allow_pickle` (which is never given).
        if not zipfile.is_zipfile(path):
            raise DataError(f"{path}: not a NumPy .npz archive of plain arrays; {SAVE}")
        arrays: dict[str, np.ndarray | None] = {}
        try:
            with np.load(path, allow_pickle=False) as data:
                for key in data.files:
                    try:
                        arrays[key] = data[key]
                    except ValueError:  # numpy's message would suggest allow_pickle: say it here
                        arrays[key] = None
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as err:
            raise DataError(f"{path}: not a readable .npz archive ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                            f"{SAVE}") from None
        unsafe = [k for k, v in arrays.items() if v is None]
        if unsafe:
            raise DataError(f"{path}: array {unsafe[0]!r} is not a plain numeric array (Python objects, never unpickled, "
                            f"or a corrupt header); {SAVE}")
        odd = [k for k, v in arrays.items() if not isinstance(v, np.ndarray)]
        if odd:
            raise DataError(f"{path}: member {odd[0]!r} is not a NumPy array; not a NumPy .npz archive of plain arrays; {SAVE}")
        for key in ("x", "y"):
            if key not in arrays:
                raise DataError(f"{path}: no array {key!r}; it holds {', '.join(arrays) or 'nothing'} ({SAVE})")
        if ("x_test" in arrays) != ("y_test" in arrays):
            raise DataError(f"{path}: x_test and y_test come together; it has only one of them")
        return arrays

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()

    def build_splits(self) -> dict[str, Split]:
        arrays = self._load()
        parts = [("x", "y")] + ([("x_test", "y_test")] if "x_test" in arrays else [])
        xs, ys = [], []
        for xk, yk in parts:
            x, y = arrays[xk], arrays[yk]
            where = f"{self.path} [{xk}]"
            if x.ndim == 0 or len(x) == 0:
                raise DataError(f"{where}: holds no images (shape {list(x.shape)}); save at least one image per class")
            if y.ndim != 1 or len(y) != len(x):
                raise DataError(f"{self.path}: {yk} must be one label per image ({len(x)}), got shape {list(y.shape)}")
            if xk == "x":
                self._stored = "nhw" if x.ndim == 3 else self.layout if self.layout != "auto" else \
                    "nhwc" if x.ndim == 4 and x.shape[3] in (1, 3, 4) else "nchw"
            x = to_nchw(x, self.layout, where)
            if x.size == 0:
                raise DataError(f"{where}: images of shape {list(x.shape[1:])} hold no pixels")
            xs.append(pixels(x, where))
            ys.append(label_array(y, f"{self.path} [{yk}]"))
        if len(xs) == 2 and xs[0].shape[1:] != xs[1].shape[1:]:
            raise DataError(f"{self.path}: x is {list(xs[0].shape[1:])} per image but x_test {list(xs[1].shape[1:])}")
        if len(ys) == 2 and (ys[0].dtype.kind in "US") != (ys[1].dtype.kind in "US"):
            raise DataError(f"{self.path}: y is {ys[0].dtype} but y_test {ys[1].dtype}; give both the same kind of labels (strings or numbers)")
        self.classes = sorted(set(ys[0].tolist()))
        require_classes(self.classes, f"{self.path} [y]", "the labels")
        unseen = sorted(set(ys[-1].tolist()) - set(self.classes)) if len(ys) == 2 else []
        if unseen:
            raise DataError(f"{self.path}: y_test holds classes that y never has ({', '.join(map(repr, unseen[:5]))}); "
                            "a model cannot learn them: add training images of those classes")
        index = {c: k for k, c in enumerate(self.classes)}
        targets = [torch.tensor([index[v] for v in y.tolist()], dtype=torch.long) for y in ys]
        images = [torch.from_numpy(np.ascontiguousarray(x)) for x in xs]
        self._shape = tuple(int(d) for d in images[0].shape[1:])
        if len(images) == 2:
            train, val = stratified_split(targets[0], [1 - self.val_fraction, self.val_fraction], self.split_seed)
            test_x, test_y = images[1], targets[1]
            test = torch.arange(len(test_y)) + len(targets[0])  # records(): x's images, then x_test's
        else:
            train, val, test = stratified_split(
                targets[0], [1 - self.val_fraction - self.test_fraction, self.val_fraction, self.test_fraction], self.split_seed)
            test_x, test_y = images[0][test], targets[0][test]
        x, y = images[0], targets[0]
        self._parts = {"train": train, "val": val, "test": test}
        return {"train": Split(x[train], y[train], transform=self._scale), "val": Split(x[val], y[val], transform=self._scale),
                "test": Split(test_x, test_y, transform=self._scale)}

    def _facts(self) -> tuple[int, int, int]:
        self.splits()
        return self._shape

    def model_defaults(self) -> dict[str, Any]:
        C, H, W = self._facts()
        patch = next(p for p in (4, 2, 1) if H % p == 0 and W % p == 0 and min(H, W) // p >= 2 or p == 1)
        return {"encoder": {"name": "patches", "image_size": [H, W], "patch_size": patch, "channels": C},
                "head": {"name": "cls", "num_classes": len(self.classes)}}

    def required_options(self) -> dict[str, dict[str, Any]]:
        C, H, W = self._facts()
        return {"encoder": {"image_size": [H, W], "channels": C}, "head": {"num_classes": len(self.classes), "multi_label": False}}

    # -- predict: the classes, image shape and pixel rule the run trained with
    def preprocessing(self) -> dict[str, Any]:
        C, H, W = self._facts()
        return {"classes": [label_key(c) for c in self.classes], "channels": C, "height": H, "width": W,
                "layout": self._stored, "scaling": "integers / their dtype's maximum (uint8 / 255), booleans 0/1, floats kept"}

    def restore(self, state: dict[str, Any]) -> None:
        self.classes = list(state["classes"])
        self._shape = (int(state["channels"]), int(state["height"]), int(state["width"]))
        self._stored = str(state["layout"])

    def records(self) -> list[Raw]:
        """x's images, then x_test's, as the file stores them, each with its label."""
        arrays = self._load()
        parts = [("x", "y")] + ([("x_test", "y_test")] if "x_test" in arrays else [])
        return [Raw(image, f"{self.path} [{xk} {i}]", label) for xk, yk in parts
                for i, (image, label) in enumerate(zip(arrays[xk], arrays[yk].tolist()))]

    def read_inputs(self, path: Path) -> list[Raw]:
        return image_records(path)

    def encode(self, records: list[Raw]) -> tuple[torch.Tensor, None]:
        """Images ([H, W], [H, W, C] or [C, H, W]; image_inputs converts their channels) ->
        float32 [N, C, H, W], scaled by `pixels`' rule of each image's dtype."""
        return encode_images(records, self._shape, self._stored != "nchw", pixel_tensor), None

    def targets(self, records: list[Raw]) -> torch.Tensor:
        index = {label_key(c): k for k, c in enumerate(self.classes)}
        out = []
        for r in records:
            key = label_key(r.label)
            if key not in index:
                raise DataError(f"{r.where}: label {key!r} is not a class the run trained on "
                                f"({', '.join(map(repr, self.classes[:10]))}{', ...' if len(self.classes) > 10 else ''})")
            out.append(index[key])
        return torch.tensor(out, dtype=torch.long)

    def output_names(self) -> list[str]:
        return [str(label_key(c)) for c in self.classes]
