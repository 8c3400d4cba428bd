"""Raw images for `predict`: one image array (as an image file, a .npz or a caller gives
it) made into the [C, H, W] array a run's model takes, before the task scales its pixels.

An image arrives as [H, W] (one channel), [H, W, C] (Pillow's order) or [C, H, W]. Its
channels are converted to the model's when a standard conversion exists: alpha dropped,
RGB to grey by Pillow's 'L' conversion (ITU-R 601-2 luma, L = 0.299 R + 0.587 G + 0.114 B),
grey repeated to RGB; any other mismatch, and a wrong size, is a DataError naming the image."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from anyformer.errors import DataError

LUMA = np.array([0.299, 0.587, 0.114])


def as_array(value: Any, where: str) -> np.ndarray:
    """A record's value (ndarray, tensor, nested list, PIL image) as a NumPy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as err:
        raise DataError(f"{where}: not an image array ({str(err).splitlines()[0]}); give an array [H, W], [H, W, C] or [C, H, W]") from None


def channels_first(image: np.ndarray, shape: tuple[int, int, int], prefer_hwc: bool, where: str) -> np.ndarray:
    """[H, W] / [H, W, c] / [c, H, W] -> [c, H, W] (c: as the image has them). The axis order
    is read from which axes hold the model's H x W; when both orders fit (c == H == W) the
    training data's order (`prefer_hwc`) decides."""
    _, H, W = shape
    if image.ndim == 2:
        if image.shape != (H, W):
            raise DataError(f"{where}: the image is {image.shape[0]}x{image.shape[1]}, the model takes {H}x{W}; "
                            f"resize it to {H}x{W}")
        return image[None]
    if image.ndim != 3:
        raise DataError(f"{where}: an image array of shape {list(image.shape)}; give one image [H, W], [H, W, C] or [C, H, W]")
    hwc, chw = image.shape[:2] == (H, W), image.shape[1:] == (H, W)
    if hwc and (prefer_hwc or not chw):
        return np.ascontiguousarray(image.transpose(2, 0, 1))
    if chw:
        return image
    # Which axis holds the channels decides which size to report.
    h, w = image.shape[:2] if image.shape[2] <= 4 or image.shape[0] > 4 else image.shape[1:]
    raise DataError(f"{where}: the image is {h}x{w} (array shape {list(image.shape)}), the model takes {H}x{W}; "
                    f"resize it to {H}x{W}")


def grey(image: np.ndarray) -> np.ndarray:
    """[3, H, W] RGB -> [1, H, W] luma in the image's dtype: uint8 by Pillow's own 'L'
    conversion (its integer rounding), other integers rounded, floats kept as floats."""
    if image.dtype == np.uint8:
        from PIL import Image
        return np.asarray(Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).convert("L"))[None]
    if image.dtype == np.bool_:
        image = image.astype(np.float32)
    luma = np.tensordot(LUMA, image.astype(np.float64), axes=1)[None]
    if np.issubdtype(image.dtype, np.integer):
        return np.rint(luma).astype(image.dtype)
    return luma.astype(image.dtype)


def convert_channels(image: np.ndarray, channels: int, where: str) -> np.ndarray:
    """[c, H, W] -> [channels, H, W]: alpha (a 2nd channel of grey, a 4th of RGB) dropped,
    RGB -> grey for a 1-channel model, grey -> RGB repeated for a 3-channel model."""
    c = image.shape[0]
    if c == channels:
        return image
    if not np.issubdtype(image.dtype, np.number) and image.dtype != np.bool_:
        return image  # not pixels: the task's scaling names the dtype
    if c in (2, 4) and channels in (1, 3):
        image, c = image[: c - 1], c - 1
    if c == 3 and channels == 1:
        return grey(image)
    if c == 1 and channels == 3:
        return np.repeat(image, 3, axis=0)
    if c == channels:
        return image
    raise DataError(f"{where}: the image has {image.shape[0]} channels, the model takes {channels}; "
                    f"give {channels}-channel images (grey, RGB and their alpha forms convert to 1 or 3 channels)")


def encode_images(records: list[Any], shape: tuple[int, int, int], prefer_hwc: bool,
                  scale: Callable[[np.ndarray, str], torch.Tensor]) -> torch.Tensor:
    """The model inputs of image records (Raw): each image laid out [C, H, W] with the
    model's channels, then `scale`d (array [C, H, W], where -> tensor) as the task's split
    made its inputs; stacked [N, ...]."""
    if not records:
        raise DataError("no images to encode; give at least one")
    out = []
    for r in records:
        image = channels_first(as_array(r.value, r.where), shape, prefer_hwc, r.where)
        image = convert_channels(image, shape[0], r.where)
        # Pillow's arrays are read-only, and a tensor over one warns at every batch.
        out.append(scale(image if image.flags.writeable else image.copy(), r.where))
    return torch.stack(out)
