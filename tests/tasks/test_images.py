"""images-npz: layouts, scaling, label coding, splits, errors."""
import numpy as np
import pytest
import torch

from anyformer.errors import DataError
from anyformer.tasks.images import ImagesNPZTask

from .helpers import check_model_fits


@pytest.mark.parametrize("shape,layout", [((30, 6, 6), "auto"), ((30, 6, 6, 3), "auto"), ((30, 3, 6, 6), "auto"),
                                          ((30, 5, 6, 6), "nchw")])
def test_layouts_become_nchw(tmp_path, shape, layout):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array(["cat", "dog", "eel"] * 10))
    task = ImagesNPZTask(path=str(tmp_path / "d.npz"), layout=layout)
    s = task.splits()
    assert task.classes == ["cat", "dog", "eel"]
    assert [len(s[k]) for k in ("train", "val", "test")] == [21, 3, 6]
    b = s["test"].batch(torch.arange(6))
    C = 1 if len(shape) == 3 else 3 if shape[-1] == 3 else shape[1]
    assert b.inputs.shape == (6, C, 6, 6) and b.inputs.dtype == torch.float32
    ref = torch.from_numpy(x.reshape(30, -1) if len(shape) == 3 else (x.transpose(0, 3, 1, 2) if shape[-1] == 3 else x).reshape(30, -1))
    # Every test image is one of the stored images, scaled by 1/255, in channel-first order.
    assert ((b.inputs.flatten(1)[:, None] * 255 - ref[None].float()).abs().amax(-1) < 1e-3).any(1).all()
    check_model_fits(task)


def test_given_test_set_and_float_images(tmp_path):
    x = np.random.default_rng(1).standard_normal((20, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 2 + 5, x_test=x[:7], y_test=np.full(7, 6))
    task = ImagesNPZTask(path=str(tmp_path / "d.npz"))
    s = task.splits()
    assert task.classes == [5, 6] and len(s["test"]) == 7 and len(s["train"]) + len(s["val"]) == 20
    assert torch.equal(s["test"].batch(torch.arange(7)).inputs[:, 0], torch.from_numpy(x[:7]))
    assert (s["test"].target == 1).all()
    check_model_fits(task)


def test_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImagesNPZTask(path=str(tmp_path / "none.npz")).splits()
    np.savez(tmp_path / "a.npz", images=np.zeros((3, 4, 4)), y=np.zeros(3))
    with pytest.raises(DataError, match="no array 'x'; it holds images, y"):
        ImagesNPZTask(path=str(tmp_path / "a.npz")).splits()
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 4, 4)), y=np.zeros(4))
    with pytest.raises(DataError, match="one label per image"):
        ImagesNPZTask(path=str(tmp_path / "b.npz")).splits()
    np.savez(tmp_path / "c.npz", x=np.zeros((3, 5, 6, 7)), y=np.zeros(3))
    with pytest.raises(DataError, match="cannot tell the channel axis"):
        ImagesNPZTask(path=str(tmp_path / "c.npz")).splits()
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}] * 3, dtype=object), y=np.zeros(3))
    with pytest.raises(DataError, match=r"d.npz: array 'x' is not a plain numeric array \(Python objects, never unpickled") as err:
        ImagesNPZTask(path=str(tmp_path / "d.npz")).splits()
    assert "allow_pickle" not in str(err.value) and "np.savez(path, x=images, y=labels)" in str(err.value)


def _npz(tmp_path, name="d.npz", **arrays):
    np.savez(tmp_path / name, **arrays)
    return str(tmp_path / name)


@pytest.mark.parametrize("dtype, scale", [(np.uint16, 65535), (np.int16, 32767), (np.int8, 127), (np.uint8, 255)])
def test_integer_images_are_scaled_by_their_dtypes_maximum(tmp_path, dtype, scale):
    # Reported: uint16 images reached the model unscaled (values up to 65535).
    x = (np.arange(30 * 16).reshape(30, 4, 4) % 100 + 20).astype(dtype)
    task = ImagesNPZTask(path=_npz(tmp_path, x=x, y=np.arange(30) % 3))
    s = task.splits()
    got = torch.cat([s[k].batch(torch.arange(len(s[k]))).inputs for k in ("train", "val", "test")])
    assert got.dtype == torch.float32 and float(got.max()) == pytest.approx(119 / scale)
    assert float(got.min()) == pytest.approx(20 / scale)


def test_bool_images_read_as_zero_and_one(tmp_path):
    x = np.arange(30 * 16).reshape(30, 4, 4) % 2 == 0
    s = ImagesNPZTask(path=_npz(tmp_path, x=x, y=np.arange(30) % 3)).splits()
    assert sorted(torch.unique(s["train"].batch(torch.arange(len(s["train"]))).inputs).tolist()) == [0.0, 1.0]


@pytest.mark.parametrize("x, message", [
    (np.zeros((30, 4, 4), dtype=np.complex64), r"images hold complex numbers \(dtype complex64\); save real pixel values"),
    (np.zeros((30, 4, 4), dtype=np.int64), r"images of dtype int64 have no known pixel range; save them as uint8 / uint16"),
    (np.array(["a" * 16] * 30).reshape(30, 1, 1, 1), r"images must be numbers, got dtype <U16"),
    (np.zeros((0, 4, 4), dtype=np.uint8), r"\[x\]: holds no images \(shape \[0, 4, 4\]\)"),
    (np.zeros((30, 0, 4), dtype=np.uint8), r"\[x\]: images of shape \[1, 0, 4\] hold no pixels"),
    (np.zeros(30, dtype=np.uint8), r"images must be \[N, H, W\], \[N, H, W, C\] or \[N, C, H, W\], got shape \[30\]"),
])
def test_pixels_that_cannot_be_images_are_refused(tmp_path, x, message):
    y = np.arange(len(x)) % 3
    with pytest.raises(DataError, match=message):
        ImagesNPZTask(path=_npz(tmp_path, x=x, y=y)).splits()


def test_nan_and_inf_pixels_are_counted_and_located(tmp_path):
    # Reported: NaN pixels trained to a test loss of nan, metrics still reported.
    x = np.zeros((30, 4, 4), dtype=np.float32)
    x[7, 2, 3], x[9, 0, 0], x[9, 1, 1] = np.nan, np.inf, -np.inf
    with pytest.raises(DataError, match=r"d.npz \[x\]: 3 pixels are NaN or infinite, the first in image 7 \(index \[7, 0, 2, 3\]\)"):
        ImagesNPZTask(path=_npz(tmp_path, x=x, y=np.arange(30) % 3)).splits()


@pytest.mark.parametrize("y, message", [
    (np.zeros(30), r"d.npz \[y\]: only one class 0.0 in the labels; a classifier needs at least two"),
    (np.where(np.arange(30) == 4, np.nan, np.arange(30) % 2), r"\[y\]: 1 labels are NaN or infinite, the first at index 4"),
    (np.arange(30) % 2 + 0j, r"\[y\]: labels must be integers or strings, got dtype complex128"),
])
def test_labels_that_leave_nothing_to_learn_are_refused(tmp_path, y, message):
    with pytest.raises(DataError, match=message):
        ImagesNPZTask(path=_npz(tmp_path, x=np.zeros((30, 4, 4), dtype=np.uint8), y=y)).splits()


def test_a_test_set_must_fit_the_training_labels(tmp_path):
    x = np.zeros((20, 4, 4), dtype=np.uint8)
    path = _npz(tmp_path, x=x, y=np.arange(20) % 2, x_test=x[:4], y_test=np.array([0, 1, 2, 3]))
    with pytest.raises(DataError, match=r"y_test holds classes that y never has \(2, 3\)"):
        ImagesNPZTask(path=path).splits()
    path = _npz(tmp_path, "e.npz", x=x, y=np.arange(20) % 2, x_test=x[:4], y_test=np.array(["a", "b", "a", "b"]))
    with pytest.raises(DataError, match=r"y is int64 but y_test <U1; give both the same kind of labels"):
        ImagesNPZTask(path=path).splits()


def test_a_file_that_is_no_npz_archive_never_mentions_unsafe_loading(tmp_path):
    # Reported: a text file named .npz got numpy's "load it unsafely using allow_pickle".
    text = tmp_path / "t.npz"
    text.write_text("x,y\n1,2\n")
    npy = tmp_path / "a.npz"
    np.save(tmp_path / "a.npy", np.zeros((3, 4, 4)))
    (tmp_path / "a.npy").rename(npy)
    for path in (text, npy):
        with pytest.raises(DataError, match=rf"{path.name}: not a NumPy .npz archive of plain arrays; save with np.savez") as err:
            ImagesNPZTask(path=str(path)).splits()
        assert "pickle" not in str(err.value)
    good = tmp_path / "g.npz"
    np.savez(good, x=np.zeros((40, 8, 8)), y=np.arange(40) % 2)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut.npz: not a NumPy .npz archive of plain arrays"):
        ImagesNPZTask(path=str(cut)).splits()
