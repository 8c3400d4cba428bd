"""Fashion-MNIST loader: IDX parsing (gzipped or not), splits, image and sequence forms, errors."""
import gzip

import numpy as np
import pytest
import torch

from anyformer.errors import DataError
from anyformer.tasks.fashion_mnist import FashionMNISTTask, read_idx, write_idx

from .helpers import check_model_fits


def test_idx_round_trip_plain_and_gzip(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, (3, 5, 4)).astype(np.uint8)
    for name in ("a.idx", "a.idx.gz"):
        assert np.array_equal(read_idx(write_idx(tmp_path / name, a)), a)
    # The header is LeCun's: 0, 0, 0x08 (ubyte), rank 3, then big-endian sizes.
    assert (tmp_path / "a.idx").read_bytes()[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0, 4])


def test_images_split_and_model(tmp_path):
    task = FashionMNISTTask(**FashionMNISTTask.write_example(tmp_path, n=40, size=8))
    s = task.splits()
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (30, 10, 20)
    b = s["train"].batch(torch.arange(4))
    assert b.inputs.shape == (4, 1, 8, 8) and b.inputs.dtype == torch.float32
    assert 0.0 <= float(b.inputs.min()) and float(b.inputs.max()) <= 1.0
    assert int(s["test"].target.max()) < 10
    # val is held out from the training file, never the test file; no image in both.
    raw = read_idx(tmp_path / "train-images-idx3-ubyte.gz").reshape(40, -1)
    rows = lambda split: {raw_row.tobytes() for raw_row in split.inputs.reshape(len(split), -1).numpy()}  # noqa: E731
    assert not rows(s["train"]) & rows(s["val"]) and len(rows(s["train"]) | rows(s["val"])) == len({r.tobytes() for r in raw})
    # Each batch image is a training image scaled by 1/255.
    pixels = torch.from_numpy(raw.astype(np.float32))
    assert ((b.inputs.flatten(1) * 255 - pixels[:, None]).abs().amax(-1) < 1e-3).any(0).all()
    assert task.model_defaults()["encoder"]["image_size"] == [8, 8]
    check_model_fits(task)
    check_model_fits(task, "vit")


def test_sequence_form_for_token_models(tmp_path):
    task = FashionMNISTTask(**FashionMNISTTask.write_example(tmp_path, n=40, size=4), as_sequence=True)
    assert task.modality == "tokens"
    s = task.splits()
    b = s["val"].batch(torch.arange(3))
    assert b.inputs.shape == (3, 16) and b.inputs.dtype == torch.long and int(b.inputs.max()) < 256
    raw = torch.from_numpy(read_idx(tmp_path / "train-images-idx3-ubyte.gz").copy())
    # Each sequence is one training image read row by row.
    match = (raw.flatten(1)[None] == b.inputs[:, None]).all(-1).any(1)
    assert match.all()
    assert task.model_defaults()["max_len"] == 16
    check_model_fits(task)


def test_errors(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        FashionMNISTTask(data_dir=str(tmp_path / "none")).splits()
    FashionMNISTTask.write_example(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="no t10k-labels-idx1-ubyte"):
        FashionMNISTTask(data_dir=str(tmp_path)).splits()
    bad = tmp_path / "x.idx"
    bad.write_bytes(b"PK\x03\x04junk")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)
    bad.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(DataError, match="holds 2 bytes of data"):
        read_idx(bad)
    bad.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2]))[:-6])
    with pytest.raises(DataError, match="broken gzip"):
        read_idx(bad)
