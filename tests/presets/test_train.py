"""Every preset trains (a few steps, end to end through the trainer) on a task that suits it:
image presets on digits, the forecasting archs on a series, token presets on modular."""
import math

import pytest

import anyformer as af
from anyformer import registry
from anyformer.train.config import run_config
from anyformer.presets import load_preset
from anyformer.train import train

FORECAST_ARCHS = {"informer", "fedformer"}
# NesT's 3 levels of 2x2 blocks need an 8x8 token grid: one token per digits pixel.
SUITED_OVERRIDES = {"nest": {"patch_size": 1}}


def suited_task(preset: str) -> dict:
    model = load_preset(preset)["model"]
    arch = (model.get("arch") or {}).get("name") if isinstance(model.get("arch"), dict) else model.get("arch")
    if arch in FORECAST_ARCHS:
        return {"name": "forecast", "source": "synthetic", "input_len": 32, "horizon": 8}
    enc = model.get("encoder") or {}
    enc_name = enc if isinstance(enc, str) else enc.get("name")
    modality = registry.get("encoder", enc_name).modality if enc_name else "tokens"
    named = {"images": {"name": "digits"}, "series": {"name": "forecast", "source": "synthetic", "input_len": 32, "horizon": 8},
             "tokens": {"name": "modular", "p": 11}}
    if modality in named:
        return named[modality]
    # A modality one task serves (sensor graphs, graphs, click logs): that task, at its example size.
    task = next(t for t in registry.list_components("task") if getattr(registry.get("task", t), "modality", None) == modality)
    return {"name": task, **registry.get("task", task).example_options}


@pytest.mark.parametrize("preset", af.list_presets())
def test_preset_trains_on_a_suited_task(preset, tmp_path):
    run = run_config({
        "model": {"preset": preset},
        "task": suited_task(preset),
        "train": {"steps": 3, "batch_size": 8, "eval_every": 3, "eval_batch_size": 64, "progress": False},
    }, {"dim": 32, "heads": 4, **SUITED_OVERRIDES.get(preset, {})})
    summary = train(run, tmp_path / preset)
    assert summary["steps"] == 3
    metric = summary["metric"]
    value = summary["final"]["test"][metric]
    assert math.isfinite(value)
    assert (tmp_path / preset / "model.safetensors").exists()
