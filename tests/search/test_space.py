"""The search space: conditional parameters, per-group components, the quantization policy,
and one-line errors naming the field of a bad space."""
from __future__ import annotations

import optuna
import pytest
import yaml

from anyformer.errors import ConfigError
from anyformer.search.space import read_space

SPACE = {
    "model": {
        "preset": "vit", "dim": {"choice": [32, 64]}, "depth": {"int": [1, 3]}, "heads": 2,
        "mixer": {"groups": 2, "choice": {"softmax": {}, "local": {"window": {"choice": [4, 8]}}}},
        "ffn": {"choice": {"mlp": {"ratio": {"choice": [2, 4]}}, "glu": {}}},
    },
    "train": {"lr": {"float": [1e-4, 1e-2], "log": True}},
    "quantization": {"choice": ["fp32", "int8-dynamic"]},
}


def _fixed_trial(params: dict):
    """A trial that takes the given parameter values (Optuna's FixedTrial)."""
    return optuna.trial.FixedTrial(params)


def test_conditional_options_only_when_their_component_is_chosen():
    space = read_space(SPACE)
    base = {"model.dim": 32, "model.depth": 1, "model.ffn": "glu", "train.lr": 1e-3, "quantization": "fp32",
            "model.mixer@0": "softmax"}
    glu = space.sample(_fixed_trial(base))
    assert glu["model"]["ffn"] == {"name": "glu"}
    mlp = space.sample(_fixed_trial({**base, "model.ffn": "mlp", "model.ffn.mlp.ratio": 4}))
    assert mlp["model"]["ffn"] == {"name": "mlp", "ratio": 4}
    assert glu["quantization"] is None  # fp32 quantizes nothing
    assert space.sample(_fixed_trial({**base, "quantization": "int8-dynamic"}))["quantization"] == {"default": "int8-dynamic"}


def test_groups_of_layers_become_schedule_overrides():
    space = read_space(SPACE)
    cand = space.sample(_fixed_trial({"model.dim": 64, "model.depth": 3, "model.ffn": "glu", "train.lr": 1e-3,
                                      "quantization": "fp32", "model.mixer@0": "softmax", "model.mixer@1": "local",
                                      "model.mixer@1.local.window": 8}))
    # depth 3 in 2 groups: layer 0 keeps the model's mixer, layers 1-2 the second group's.
    assert cand["model"]["mixer"] == {"name": "softmax"}
    assert cand["model"]["schedule"]["overrides"] == [{"layers": "1:3", "mixer": {"name": "local", "window": 8}}]
    one = space.sample(_fixed_trial({"model.dim": 64, "model.depth": 1, "model.ffn": "glu", "train.lr": 1e-3,
                                     "quantization": "fp32", "model.mixer@0": "local", "model.mixer@0.local.window": 4}))
    assert "schedule" not in one["model"] and one["model"]["mixer"] == {"name": "local", "window": 4}


def test_a_study_samples_valid_and_varied_candidates():
    space = read_space(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        cand = space.sample(trial)
        assert cand["model"]["dim"] in (32, 64) and 1 <= cand["model"]["depth"] <= 3
        assert 1e-4 <= cand["train"]["lr"] <= 1e-2
        if cand["model"]["ffn"]["name"] == "glu":
            assert "model.ffn.mlp.ratio" not in trial.params
        seen.add((cand["model"]["dim"], cand["model"]["depth"]))
        study.tell(trial, 0.0)
    assert len(seen) > 2


def test_the_repository_space_reads():
    space = read_space("configs/search/digits.yaml")
    assert space.has_quantization()
    assert {p for p, _ in space.dists()} >= {"model.dim", "model.depth", "quantization", "train.lr"}


@pytest.mark.parametrize("bad, needle", [
    ({"model": {"dimm": 32}}, "model.dimm: not a model field (did you mean 'dim'?)"),
    ({"model": {"dim": {"choice": []}}}, "model.dim.choice: expected a non-empty list"),
    ({"model": {"depth": {"int": [4, 1]}}}, "model.depth.int: low 4 is above high 1"),
    ({"model": {"depth": {"int": [1, 4], "stp": 1}}}, "model.depth: unknown key 'stp' (did you mean 'step'?)"),
    ({"model": {"mixer": {"choice": {"sofmax": {}}}}}, "model.mixer.choice.sofmax"),
    ({"model": {"mixer": {"choice": {"local": {"windw": {"choice": [4]}}}}}}, "has no option 'windw'"),
    ({"model": {"dim": {"choice": [32, -1]}}}, "model.dim = -1"),
    ({"model": {"norm": {"groups": 2, "choice": {"layernorm": {}}}}}, "only mixer and ffn may vary per layer group"),
    ({"train": {"lr": {"float": [0, 1e-2], "log": True}}}, "train.lr: a log range needs low > 0"),
    ({"train": {"lrr": 0.1}}, "train.lrr: not a training field (did you mean 'lr'?)"),
    ({"quantization": {"choice": ["fp32", "int9"]}}, "unknown scheme 'int9'"),
    ({"modle": {}}, "unknown section 'modle' (did you mean 'model'?)"),
])
def test_bad_spaces_are_one_line_errors_naming_the_field(bad, needle):
    with pytest.raises(ConfigError) as err:
        read_space(bad)
    text = str(err.value)
    assert needle in text and "\n" not in text


def test_a_malformed_file_names_its_line(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("model:\n  dim: {choice: [32, 64]\n  depth: 2\n")
    with pytest.raises(ConfigError, match=r"--space: .*space.yaml:\d+: not valid YAML"):
        read_space(path)
    with pytest.raises(ConfigError, match="no such file"):
        read_space(tmp_path / "missing.yaml")
    path.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="expected a mapping"):
        read_space(path)
