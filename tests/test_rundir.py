"""Run-directory files: atomic writes, JSON conversion, slugs, and one-line DataErrors for
damaged files (nothing is modified when a file cannot be read)."""
import json
import math

import pytest
import torch

from anyformer import rundir
from anyformer.errors import DataError


def test_atomic_json_writes_plain_json_and_leaves_no_temporary(tmp_path):
    path = rundir.atomic_write_json(tmp_path / "sub" / "a.json", {"x": float("nan"), "t": torch.tensor(2.5), "d": torch.float32})
    assert json.loads(path.read_text()) == {"x": None, "t": 2.5, "d": "torch.float32"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_jsonable_keeps_finite_values_and_nests():
    assert rundir.jsonable({"a": [1, 2.0, (3, math.inf)], 4: None}) == {"a": [1, 2.0, [3, None]], "4": None}


def test_slug_is_safe_and_keeps_readable_names():
    assert rundir.slug("vit+linear") == "vit+linear"
    assert rundir.slug("configs/my model.yaml") == "configs_my_model.yaml"
    # A folder named by a slug never leaves the folder it is joined to.
    assert [rundir.slug(n) for n in ("..", ".", "", ".hidden", "../x")] == ["_.", "_", "_", "_hidden", "_._x"]


@pytest.mark.parametrize("content, says", [("{\"step\": 1", "not valid JSON"), ("", "not valid JSON")])
def test_truncated_json_is_a_one_line_data_error(tmp_path, content, says):
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(DataError, match=says) as err:
        rundir.read_json(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert path.read_text() == content  # nothing was modified


@pytest.mark.parametrize("content", ["", "- just\n- a list\n", "model: [unclosed\n"])
def test_damaged_config_yaml_is_a_data_error_naming_the_file(tmp_path, content):
    (tmp_path / "config.yaml").write_text(content)
    with pytest.raises(DataError, match="config.yaml"):
        rundir.read_config(tmp_path)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(DataError, match="not a run directory"):
        rundir.read_config(tmp_path)


def test_a_pickle_in_place_of_weights_is_refused_not_loaded(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x80\x04\x95" + b"\x00" * 40)  # a pickle header: never unpickled
    with pytest.raises(DataError, match="not a readable safetensors file"):
        rundir.load_weights(torch.nn.Linear(2, 2), path)


def test_weights_round_trip_and_tied_weights_stored_once(tmp_path):
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
    model[1].weight = model[0].weight
    rundir.save_weights(model, tmp_path / "w.safetensors")
    assert len(rundir.read_tensors(tmp_path / "w.safetensors")) == 1
    other = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
    other[1].weight = other[0].weight
    rundir.load_weights(other, tmp_path / "w.safetensors")
    assert torch.equal(other[1].weight, model[0].weight)


def test_checkpoint_marker_means_committed(tmp_path):
    model = torch.nn.Linear(2, 2)
    rundir.write_checkpoint(tmp_path, model, {"x": torch.ones(1)}, {"step": 3})
    assert rundir.has_checkpoint(tmp_path) and not (tmp_path / rundir.MARKER).exists()
    tensors, meta = rundir.read_checkpoint(tmp_path)
    assert meta["step"] == 3 and torch.equal(tensors["x"], torch.ones(1))


def test_read_metrics_in_order(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n\n{"step": 2, "loss": 1.0}\n')
    assert [m["step"] for m in rundir.read_metrics(tmp_path)] == [1, 2]
    assert rundir.read_metrics(tmp_path / "none") == []
