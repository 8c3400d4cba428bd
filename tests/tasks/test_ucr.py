"""UCR/UEA loader: .ts (multivariate, unequal length) and .tsv files, splits, package lookup, errors."""

import pytest
import torch

from anyformer.errors import ConfigError, DataError
from anyformer.tasks.naming import parse_task_name
from anyformer.tasks.ucr import UCRTask, read_ts

from .helpers import check_model_fits


def test_multivariate_unequal_ts(tmp_path):
    task = UCRTask(**UCRTask.write_example(tmp_path, n=24))
    s = task.splits()
    assert task.classes == ["a", "b"] and task.model_defaults()["encoder"]["channels"] == 2
    assert len(s["train"]) + len(s["val"]) == 24 and len(s["test"]) == 12 and len(s["val"]) == 2
    x, m = s["test"].inputs, s["test"].mask
    assert x.shape == (12, 8, 2) and x.dtype == torch.float32
    # Test row i has length 6 + i % 3; values (i%2)*2-1 + 0.1 t d; zero padding is masked.
    for i in range(12):
        L = 6 + i % 3
        assert m[i].sum() == L and (x[i, L:] == 0).all()
        assert torch.allclose(x[i, :L, 1], torch.tensor([(i % 2) * 2 - 1 + 0.2 * t for t in range(L)]), atol=0.006)
    assert torch.equal(s["test"].target, torch.tensor([i % 2 for i in range(12)]))
    check_model_fits(task)


def test_tsv_and_dataset_subfolder(tmp_path):
    (tmp_path / "Foo").mkdir()
    for part, n in (("TRAIN", 20), ("TEST", 6)):
        rows = [f"{1 + i % 2}\t" + "\t".join(f"{v * (i % 2)}" for v in range(5)) for i in range(n)]
        (tmp_path / "Foo" / f"Foo_{part}.tsv").write_text("\n".join(rows) + "\n")
    task = UCRTask(dataset="Foo", data_dir=str(tmp_path))
    s = task.splits()
    assert task.classes == ["1", "2"] and s["train"].inputs.shape[1:] == (5, 1) and s["train"].mask is None
    assert torch.equal(s["test"].inputs[1, :, 0], torch.arange(5.0)) and int(s["test"].target[1]) == 1
    check_model_fits(task)


def test_reads_package_copies_without_importing(tmp_path, monkeypatch):
    folder = tmp_path / "aeon" / "datasets" / "data" / "Toy"
    folder.mkdir(parents=True)
    (tmp_path / "aeon" / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    UCRTask.write_example(folder)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert len(UCRTask(dataset="Toy").splits()["test"]) == 12
    with pytest.raises(DataError, match="not shipped by aeon"):
        UCRTask(dataset="Nope").splits()


def test_errors(tmp_path, monkeypatch):
    monkeypatch.setattr("anyformer.tasks.ucr.PACKAGES", ("no_such_pkg_anyformer",))
    with pytest.raises(DataError, match="pip install aeon"):
        UCRTask(dataset="GunPoint").splits()
    with pytest.raises(DataError, match="GunPoint_TRAIN.ts.* does not exist"):
        UCRTask(dataset="GunPoint", data_dir=str(tmp_path)).splits()
    bad = tmp_path / "B_TRAIN.ts"
    bad.write_text("@problemName B\n@classLabel true x y\n@data\n1,2,3:x\n1,2,zz:y\n")
    with pytest.raises(DataError, match=r"B_TRAIN.ts:5: 'zz' is not a number"):
        read_ts(bad)
    bad.write_text("@classLabel true x y\n@data\n1,2:3,4:x\n1,2:y\n")
    with pytest.raises(DataError, match=r"B_TRAIN.ts:4: 1 dimensions, earlier lines have 2"):
        read_ts(bad)
    bad.write_text("@timeStamps true\n@data\n")
    with pytest.raises(DataError, match="time-stamped"):
        read_ts(bad)


def test_parse_task_name():
    assert parse_task_name("ucr:GunPoint") == ("ucr", {"dataset": "GunPoint"})
    assert parse_task_name("digits") == ("digits", {})
    assert parse_task_name("forecast:statsmodels:co2") == ("forecast", {"source": "statsmodels:co2"})
    assert parse_task_name("forecast:/d/ETTh1.csv") == ("forecast", {"path": "/d/ETTh1.csv"})
    with pytest.raises(ConfigError, match="takes no ':' argument"):
        parse_task_name("digits:x")
