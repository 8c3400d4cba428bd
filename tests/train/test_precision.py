"""The trainer resolves its precision once through anyformer.runtime, trains and evaluates
in it, records it (first metrics record, summary, checkpoint) and resumes in it."""
import json

import pytest

from anyformer import runtime
from anyformer.train import loop, read_metrics, train
from anyformer.train.config import run_config


def _cfg(precision="auto", steps=4):
    return run_config({"model": {"preset": "vit", "dim": 16, "depth": 1, "heads": 2}, "task": "digits",
                       "train": {"steps": steps, "batch_size": 8, "eval_every": 2, "checkpoint_every": 1,
                                 "log_every": 2, "precision": precision, "progress": False}})


def _probe_says(monkeypatch, bf16_s):
    monkeypatch.setattr(runtime, "_DECISIONS", {})
    monkeypatch.setattr(runtime, "_time_probe", lambda dev: (1.0, bf16_s))
    monkeypatch.setattr(runtime, "_time_step", lambda step, dev: (1.0, bf16_s))  # the model's own step


@pytest.mark.parametrize("bf16_s,expected", [(0.4, "bf16"), (2.0, "fp32")])
def test_auto_precision_is_the_probes_and_is_recorded(tmp_path, monkeypatch, bf16_s, expected):
    _probe_says(monkeypatch, bf16_s)
    seen = []
    real = loop.autocast
    monkeypatch.setattr(loop, "autocast", lambda dev, p: seen.append(p) or real(dev, p))
    summary = train(_cfg(), tmp_path / "r")
    assert summary["precision"] == expected
    assert set(seen) == {expected} and len(seen) == 4  # every training step ran in it
    train_records = [m for m in read_metrics(tmp_path / "r") if "split" not in m]
    assert train_records[0]["precision"] == expected and "precision" not in train_records[1]
    assert json.loads((tmp_path / "r" / "state.json").read_text())["precision"] == expected


def test_explicit_precision_skips_the_probe(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "_DECISIONS", {})
    monkeypatch.setattr(runtime, "_time_probe", lambda dev: pytest.fail("fp32 was asked for: no probe"))
    monkeypatch.setattr(runtime, "_time_step", lambda step, dev: pytest.fail("fp32 was asked for: no probe"))
    assert train(_cfg("fp32", steps=2), tmp_path / "r")["precision"] == "fp32"


def _killed_at_step_3(monkeypatch, out):
    """A run interrupted at its third step, after its checkpoints of steps 1 and 2."""
    real_step, calls = loop.Trainer._train_step, {"n": 0}

    def dies_at_step_3(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(loop.Trainer, "_train_step", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(), out)
    monkeypatch.setattr(loop.Trainer, "_train_step", real_step)


def test_resume_keeps_the_precision_the_run_started_in(tmp_path, monkeypatch):
    _probe_says(monkeypatch, 0.4)  # bf16 when the run starts
    _killed_at_step_3(monkeypatch, tmp_path / "r")
    _probe_says(monkeypatch, 2.0)  # the probe would now say fp32 (a loaded machine, say)
    assert train(_cfg(), tmp_path / "r", resume=True)["precision"] == "bf16"


def test_checkpoint_without_precision_resumes_as_auto_used_to(tmp_path, monkeypatch):
    """Checkpoints written before the probe existed ran `auto` as fp32 on CPU."""
    _probe_says(monkeypatch, 0.4)
    _killed_at_step_3(monkeypatch, tmp_path / "r")
    state = tmp_path / "r" / "state.json"
    meta = json.loads(state.read_text())
    del meta["precision"]
    state.write_text(json.dumps(meta))
    assert train(_cfg(), tmp_path / "r", resume=True)["precision"] == "fp32"


def test_resume_in_auto_does_not_probe_again(tmp_path, monkeypatch):
    _probe_says(monkeypatch, 0.4)
    _killed_at_step_3(monkeypatch, tmp_path / "r")
    monkeypatch.setattr(runtime, "_DECISIONS", {})
    monkeypatch.setattr(runtime, "_time_step", lambda step, dev: pytest.fail("a resumed auto run keeps its precision: no probe"))
    monkeypatch.setattr(runtime, "_time_probe", lambda dev: pytest.fail("a resumed auto run keeps its precision: no probe"))
    assert train(_cfg(), tmp_path / "r", resume=True)["precision"] == "bf16"
