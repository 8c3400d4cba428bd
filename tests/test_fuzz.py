"""Property-based fuzz over the registry: any model config either builds and runs (forward,
backward, eval) with finite outputs, or stops with one AnyformerError of one line; never a
raw Python / torch exception, a message of several lines or a NaN model. The strategy and
the rule are tests/fuzz_cases.py; `make fuzz` runs the same strategy on thousands of cases
(tests/fuzz_campaign.py). Here a fixed, derandomized budget keeps CI fast and repeatable."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from anyformer.errors import ConfigError

from . import fuzz_cases
from .fuzz_cases import CI, cases, run_case

# Most cases take milliseconds (a clean error) to a few tenths of a second (a model that runs):
# 500 of them run in about 10 s on one CPU core.
CI_EXAMPLES = 500


@settings(max_examples=CI_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases(CI))
def test_every_drawn_config_runs_or_fails_in_one_line(case):
    status, detail = run_case(case)
    assert status in ("ran", "clean"), f"{detail} -- case {case}"


def test_the_rule_tells_running_from_clean_errors_from_crashes(monkeypatch):
    small = {"preset": "gpt", "dim": 16, "heads": 2, "depth": 1, "max_len": 8}
    case = {"config": small, "seed": 0, "batch": 2, "input": "example"}
    assert run_case(case) == ("ran", "")
    assert run_case({**case, "config": {**small, "dim": 0}}) == ("clean", "model.dim must be >= 1, got 0")
    status, detail = run_case({**case, "input": "empty_batch"})
    assert status == "clean" and "batch of 0 samples" in detail

    def raw(*args, **kwargs):
        raise RuntimeError("cannot reshape tensor of 0 elements")

    monkeypatch.setattr(fuzz_cases.af, "create", raw)
    assert run_case(case) == ("crash", "RuntimeError: cannot reshape tensor of 0 elements")

    def two_lines(*args, **kwargs):
        raise ConfigError("first\nsecond")

    monkeypatch.setattr(fuzz_cases.af, "create", two_lines)
    assert run_case(case)[0] == "crash"


def test_a_non_finite_output_is_a_crash(monkeypatch):
    config = {"preset": "gpt", "dim": 16, "heads": 2, "depth": 1, "max_len": 8, "head": {"name": "lm", "tie": False}}
    case = {"config": config, "seed": 0, "batch": 2, "input": "example"}
    real = fuzz_cases.af.create

    def nan_model(config):
        model = real(config)
        with torch.no_grad():
            model.head.fc.weight.fill_(math.nan)
        return model

    monkeypatch.setattr(fuzz_cases.af, "create", nan_model)
    status, detail = run_case(case)
    assert status == "crash"
    assert detail.startswith("non-finite output in training mode first in head.fc (Linear), activations up to ")


def test_overflow_of_a_stack_that_bounds_nothing_is_the_configurations_not_a_crash():
    # Found by the campaign: pure RepBN (prepbn with r0 ~ 0 keeps no LayerNorm) normalises
    # nothing on the residual stream (BN(x) + eta * x), FNet's unnormalised FFT and GLU's
    # product of two projections grow the activations every layer until float32 overflows.
    config = {"encoder": {"name": "dhvt-patches", "channels": 1}, "ffn": {"name": "glu", "ratio": 0.1},
              "head": {"name": "attention", "num_classes": 2}, "mixer": {"name": "fnet"},
              "norm": {"name": "prepbn", "r0": 5e-324, "eps": 0.589}, "position": {"name": "none"},
              "dim": 8, "heads": 4, "depth": 4, "max_len": 24}
    assert run_case({"config": config, "seed": 494, "batch": 3, "input": "example"}) == ("ran", fuzz_cases.GREW)
    # With LayerNorm the same stack stays bounded and finite.
    bounded = {**config, "norm": {"name": "layernorm"}}
    assert run_case({"config": bounded, "seed": 494, "batch": 3, "input": "example"}) == ("ran", "")


@pytest.mark.parametrize("annotation_case", ["dropout", "hidden", "image_size", "activation"])
def test_the_strategy_reads_declared_ranges_and_choices(annotation_case):
    table = {("ffn", "mlp"): ("dropout", "hidden", "activation"), ("encoder", "patches"): ("image_size",)}
    kind, name = next(k for k, v in table.items() if annotation_case in v)
    d = fuzz_cases.options_of(kind, name)[annotation_case][0]
    expected = {
        "dropout": (float, 0.0, False, 1.0, True, False),
        "hidden": (int, 1, False, None, False, True),
        "image_size": (int, 1, False, None, False, False),
        "activation": (str, None, False, None, False, False),
    }[annotation_case]
    assert (d.base, d.lo, d.lo_open, d.hi, d.hi_open, d.optional) == expected
    if annotation_case == "image_size":
        assert d.pair
    if annotation_case == "activation":
        assert set(d.choices) == {"gelu", "gelu_tanh", "relu", "relu2", "silu"}
