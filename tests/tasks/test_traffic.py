"""The traffic task: the graph's weights and features, the METR-LA file layout, the time
features, the 70/10/20 split by time, the train-only scaling and the masked metrics."""
import math

import numpy as np
import pytest
import torch

from anyformer import registry
from anyformer.errors import ConfigError
from anyformer.tasks.traffic import MaskedForecast
from anyformer.tasks.traffic_data import gaussian_weights, generated_sensors, laplacian_features

SENSORS = ["a", "b", "c"]


def _readings(tmp_path, steps=100):
    rows = ["timestamp,a,b,c"]
    for i in range(steps):
        hour, minute = divmod(i * 5, 60)
        day, hour = divmod(hour, 24)
        b = "" if i == 7 else str(50 + i)  # an empty cell is a missing reading
        rows.append(f"2012-03-{1 + day:02d} {hour:02d}:{minute:02d}:00,{60 + i % 4},{b},{40 + i % 2}")
    path = tmp_path / "speeds.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_gaussian_kernel_weights_and_threshold():
    distances = [("a", "b", 1.0), ("b", "c", 3.0), ("c", "a", 2.0)]
    w = gaussian_weights(SENSORS, distances, threshold=1e-3)
    sigma = np.std([1.0, 3.0, 2.0])
    assert math.isclose(w[0, 1], math.exp(-(1 / sigma) ** 2))
    assert math.isclose(w[2, 0], math.exp(-(2 / sigma) ** 2))
    assert w[1, 2] == 0.0  # exp(-(3 / 0.816)^2) ~ 1e-6 is below the threshold
    assert gaussian_weights(SENSORS, distances, threshold=0.1)[2, 0] == 0.0  # exp(-6) < 0.1
    assert w[1, 0] == 0.0  # only listed directions get a weight


def test_laplacian_features_are_its_eigenvectors():
    data = generated_sensors(8, 1, seed=1)
    w = gaussian_weights(data.sensors, data.distances, 0.1)
    f = laplacian_features(w, 3).astype(np.float64)
    s = np.maximum(w, w.T)
    np.fill_diagonal(s, 0)
    deg = s.sum(1)
    d = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1e-12)), 0.0)  # an isolated sensor: a row of I
    lap = np.eye(8) - d[:, None] * s * d[None]
    values = np.linalg.eigvalsh(lap)[1:4]
    assert np.allclose(lap @ f, f * values, atol=1e-5)
    assert np.allclose(f.T @ f, np.eye(3), atol=1e-5)
    assert np.array_equal(f, laplacian_features(w, 3))  # signs fixed: the same graph, the same features
    assert laplacian_features(w, 10)[:, 7:].sum() == 0  # past N - 1 eigenvectors: zero columns


def test_generated_data_is_seeded_with_missing_readings():
    a, b, c = generated_sensors(6, 2, seed=3), generated_sensors(6, 2, seed=3), generated_sensors(6, 2, seed=4)
    assert np.array_equal(a.readings, b.readings) and not np.array_equal(a.readings, c.readings)
    assert (a.readings == 0).any() and (a.readings > 0).mean() > 0.95
    assert a.readings.shape == (576, 6) and a.stamps[1] - a.stamps[0] == a.stamps[2] - a.stamps[1]


@pytest.mark.parametrize("graph", ["from,to,cost\na,b,10\nb,c,20\n", "c,a,b\n0,1,0\n1,0,0.5\n0,0.5,0\n"])
def test_a_sensor_file_splits_by_time_scales_by_train_and_reads_time(tmp_path, graph):
    (tmp_path / "g.csv").write_text(graph)
    task = registry.build("task", "traffic", path=str(_readings(tmp_path)), graph=str(tmp_path / "g.csv"),
                          input_len=3, horizon=2, spatial_size=2)
    splits = task.splits()
    # 100 steps: 70 / 10 / 20 rows, each split's windows of 5 rows inside it.
    assert [len(splits[s]) for s in ("train", "val", "test")] == [66, 6, 16]
    assert task.steps_per_day == 288
    train_values = np.array([[60 + i % 4, 50 + i, 40 + i % 2] for i in range(70)], dtype=np.float64)
    train_values[7, 1] = 0
    seen = train_values[train_values != 0]
    assert math.isclose(task.mean, seen.mean()) and math.isclose(task.std, seen.std())
    first = splits["train"].batch(torch.tensor([5]))
    assert first.inputs["readings"][0, 2, 1] == 0  # the missing reading is fed at the mean
    assert torch.allclose(first.inputs["readings"][0, 0, 0] * task.std + task.mean, torch.tensor(61.0))
    assert first.target[0, 0].tolist() == [60.0, 58.0, 40.0]
    assert first.inputs["time"][0, 0].tolist() == [5, 3]  # 00:25 is slot 5; 2012-03-01 is a Thursday
    test = splits["test"].batch(torch.tensor([0]))
    assert test.target[0, 0, 1] == 50 + 80 + 3  # test starts at row 80; the target after 3 inputs
    assert task.model_defaults()["encoder"]["sensors"] == 3


def test_path_without_graph_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="give both path and graph"):
        registry.build("task", "traffic", path=str(_readings(tmp_path)))


def test_masked_metrics_skip_missing_targets():
    p = MaskedForecast()
    target = torch.tensor([[[10.0, 0.0], [20.0, 40.0]]])
    output = torch.tensor([[[12.0, 99.0], [17.0, 40.0]]])
    m = p.metrics(output, target)
    assert math.isclose(m["mae"], 5 / 3) and math.isclose(m["rmse"], math.sqrt(13 / 3))
    assert math.isclose(m["mape"], 100 * (0.2 + 0.15) / 3)
    assert math.isclose(float(p.loss(output, target)), 5 / 3, rel_tol=1e-6)
    both = torch.cat([target, torch.full_like(target, 0.0)]), torch.cat([output, output])
    units = p.per_example(both[1], both[0], "mae")
    assert math.isclose(float(units.mean()), p.metrics(both[1], both[0])["mae"])


def test_trivial_baselines_hold_the_last_reading_and_average_the_same_step_of_the_week():
    task = registry.build("task", "traffic", sensors=4, days=8, input_len=3, horizon=2)
    splits = task.splits()
    baselines = task.trivial_baselines(splits)
    test = splits["test"]
    held = baselines["last value"](test.inputs)
    assert torch.allclose(held[:, 1], test.inputs["readings"][:, -1] * task.std + task.mean)
    assert torch.equal(held[:, 0], held[:, 1])
    # the historical average of one (day, step) slot and sensor, by hand over the training readings
    train = splits["train"]
    future, target = train.inputs["time"][:, 3:], train.target
    day, slot = int(future[0, 0, 1]), int(future[0, 0, 0])
    hit = (future[..., 1] == day) & (future[..., 0] == slot)
    values = target[hit][:, 2].double()
    expected = values[values != 0].mean()
    ha = baselines["historical average"](train.inputs)
    assert torch.isclose(ha[0, 0, 2].double(), expected, atol=1e-4)
