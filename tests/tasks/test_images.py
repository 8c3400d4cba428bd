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
    with pytest.raises(DataError, match="plain numeric arrays"):
        ImagesNPZTask(path=str(tmp_path / "d.npz")).splits()
