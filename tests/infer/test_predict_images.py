"""predict on the image tasks (images-npz, digits, fashion-mnist as images and as pixel
tokens): score('test') gives the run's own test metrics back exactly, encode remakes the
test split's tensors, image files and arrays are read, and bad images are one-line errors."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from anyformer.errors import DataError
from anyformer.catalog import build_task
from anyformer.infer.predict import predictor
from anyformer.tasks.fashion_mnist import FashionMNISTTask
from anyformer.tasks.images import ImagesNPZTask
from anyformer.tasks.raw import Raw

from .helpers import final_metrics, train_tiny


def _npz_no_test(folder):
    rng = np.random.default_rng(3)
    path = f"{folder}/plain.npz"
    np.savez(path, x=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), y=np.array(["cat", "dog"] * 20))
    return {"path": path}


CASES = {
    "npz": lambda d: {"name": "images-npz", **ImagesNPZTask.write_example(d)},
    "npz-no-test": lambda d: {"name": "images-npz", **_npz_no_test(d)},
    "digits": lambda d: {"name": "digits"},
    "fashion": lambda d: {"name": "fashion-mnist", **FashionMNISTTask.write_example(d)},
    "fashion-seq": lambda d: {"name": "fashion-mnist", **FashionMNISTTask.write_example(d), "as_sequence": True},
}
MODELS = {"fashion-seq": "bert"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    made = {}

    def run(case):
        if case not in made:
            folder = tmp_path_factory.mktemp(case)
            overrides = {"train.steps": 4, "train.eval_every": 4} if case == "digits" else {}
            made[case] = train_tiny(CASES[case](folder), folder / "run", model=MODELS.get(case, "vit"), **overrides)
        return made[case]
    return run


@pytest.mark.parametrize("case", list(CASES))
def test_score_gives_the_runs_final_test_metrics(runs, case):
    run = runs(case)
    got = predictor(run, device="cpu").score("test")
    assert got == final_metrics(run) and "loss" in got and "accuracy" in got


@pytest.mark.parametrize("case", list(CASES))
def test_encode_of_test_records_equals_the_test_split(tmp_path, case):
    task = build_task(CASES[case](tmp_path))
    split = task.splits()["test"]
    state = json.loads(json.dumps(task.preprocessing()))  # as preprocessing.json keeps it
    fresh = build_task(CASES[case](tmp_path))
    fresh.restore(state)
    records = fresh.records()
    chosen = [records[i] for i in task.split_indices()["test"].tolist()]
    inputs, mask = fresh.encode(chosen)
    expected = split.batch(torch.arange(len(split)))
    assert mask is None and inputs.dtype == expected.inputs.dtype
    assert torch.equal(inputs, expected.inputs) and torch.equal(fresh.targets(chosen), expected.target)
    assert fresh._splits is None  # restore and records never built the training splits


def _png(path, array):
    Image.fromarray(array).save(path)
    return path


def test_predict_files_reads_grey_and_rgb_pngs_and_npz(runs, tmp_path):
    p = predictor(runs("npz"), device="cpu")  # an RGB model (8x8x3)
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    np.savez(tmp_path / "batch.npz", x=rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8))
    files = [_png(tmp_path / "rgb.png", rgb), _png(tmp_path / "grey.png", grey), tmp_path / "batch.npz"]
    out = p.predict_files(files)
    assert len(out) == 5 and all(o["label"] in {"0", "1", "2", "3"} for o in out)
    assert [o["input"] for o in out[:2]] == [str(files[0]), str(files[1])]
    assert out[2]["input"] == f"{files[2]} [image 0]"
    assert all(abs(sum(o["probabilities"].values()) - 1) < 1e-5 for o in out)
    # A file's pixels are the array's; a grey image is its value on all three channels.
    encode = lambda values: p.task.encode([Raw(v, "a") for v in values])[0]  # noqa: E731
    from_files = encode([r.value for f in files for r in p.task.read_inputs(f)])
    assert torch.equal(from_files[0], torch.from_numpy(rgb.transpose(2, 0, 1)).float() / 255.0)
    assert torch.equal(from_files[1], encode([np.repeat(grey[:, :, None], 3, axis=2)])[0])
    assert torch.equal(from_files[1], encode([grey[None]])[0]) and torch.equal(from_files[1][0], from_files[1][2])


def test_rgb_png_is_read_as_pillows_grey_by_a_one_channel_model(runs, tmp_path):
    p = predictor(runs("fashion"), device="cpu")
    rgba = np.random.default_rng(6).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    out = p.predict_files([_png(tmp_path / "rgba.png", rgba), _png(tmp_path / "rgb.png", rgba[..., :3])])
    grey = np.array(Image.open(tmp_path / "rgb.png").convert("L"))
    assert out[0]["probabilities"] == out[1]["probabilities"]  # alpha dropped
    assert out[0]["label"] in FashionMNISTTask(data_dir=str(tmp_path)).classes
    inputs, _ = p.task.encode(p.task.read_inputs(tmp_path / "rgb.png"))
    assert inputs.shape == (1, 1, 8, 8) and torch.equal(inputs[0, 0], torch.from_numpy(grey).float() / 255.0)


def test_sequence_form_reads_pixels_as_tokens(runs, tmp_path):
    p = predictor(runs("fashion-seq"), device="cpu")
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    inputs, mask = p.task.encode(p.task.read_inputs(_png(tmp_path / "g.png", grey)))
    assert mask is None and inputs.dtype == torch.int64 and torch.equal(inputs[0], torch.from_numpy(grey).flatten().long())
    assert p.predict_files([tmp_path / "g.png"])[0]["label"] in p.task.classes
    with pytest.raises(DataError, match=r"input 0: pixels of dtype float32 are no bytes"):
        p([grey.astype(np.float32)])


def test_digits_read_an_image_file_by_255_and_arrays_by_16(runs, tmp_path):
    p = predictor(runs("digits"), device="cpu")
    digit = (np.arange(64).reshape(8, 8) % 17).astype(np.float64)
    inputs, _ = p.task.encode(p.task.read_inputs(_png(tmp_path / "d.png", (digit * 15).astype(np.uint8))))
    assert torch.equal(inputs[0, 0], torch.from_numpy(digit * 15).float() / 255.0)
    assert torch.equal(p.task.encode([Raw(digit, "a")])[0][0, 0], torch.from_numpy(digit).float() / 16.0)
    assert p([digit])[0]["label"] in [str(k) for k in range(10)]


@pytest.mark.parametrize("case", ["npz", "fashion", "digits"])
def test_wrong_size_png_is_a_one_line_error_naming_the_file(runs, tmp_path, case):
    p = predictor(runs(case), device="cpu")
    path = _png(tmp_path / "big.png", np.zeros((10, 12, 3), dtype=np.uint8))
    with pytest.raises(DataError) as err:
        p.predict_files([path])
    msg = str(err.value)
    assert str(path) in msg and "10x12" in msg and "resize it to 8x8" in msg and "\n" not in msg


def test_channels_that_do_not_convert_are_an_error(runs):
    p = predictor(runs("npz"), device="cpu")
    with pytest.raises(DataError, match=r"input 0: the image has 5 channels, the model takes 3") as err:
        p([np.zeros((8, 8, 5), dtype=np.uint8)])
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"input 0: an image array of shape \[2, 8, 8, 3\]"):
        p([np.zeros((2, 8, 8, 3), dtype=np.uint8)])


def test_unseen_labels_name_their_record(runs):
    p = predictor(runs("npz-no-test"), device="cpu")
    assert p.task.classes == ["cat", "dog"] and p.task.output_names() == ["cat", "dog"]
    records = p.task.records()[:2]
    assert torch.equal(p.task.targets(records), torch.tensor([0, 1]))
    records[1].label = "eel"
    with pytest.raises(DataError, match=r"plain.npz \[x 1\]: label 'eel' is not a class the run trained on"):
        p.task.targets(records)


def test_npz_labels_keep_their_python_values(tmp_path):
    x = np.random.default_rng(2).integers(0, 256, (30, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=(np.arange(30) % 3 + 7).astype(np.int64))
    task = ImagesNPZTask(path=str(tmp_path / "d.npz"))
    state = json.loads(json.dumps(task.preprocessing()))
    assert state["classes"] == [7, 8, 9] and (state["channels"], state["height"], state["width"]) == (1, 4, 4)
    fresh = ImagesNPZTask(path=str(tmp_path / "d.npz"))
    fresh.restore(state)
    records = fresh.records()
    assert torch.equal(fresh.targets(records[:3]), torch.tensor([0, 1, 2])) and fresh.output_names() == ["7", "8", "9"]
