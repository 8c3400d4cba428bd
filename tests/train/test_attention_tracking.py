"""`train.track: [attention]` / `--track attention`: per layer attention statistics on fixed
validation examples at step 0 and every evaluation, in metrics.jsonl, exact over a resume."""
from __future__ import annotations

import math

import pytest
import torch

from anyformer import rundir
from anyformer.errors import ConfigError
from anyformer.train.attention_tracking import attention_statistics, group_mass, last_query_statistics
from anyformer.train.config import run_config
from anyformer.train.loop import Trainer
from tests.cli_run import run_cli

# spectformer: two spectral layers (no attention weights), then two softmax layers.
MIXED = {"preset": "spectformer", "dim": 16, "depth": 4, "heads": 2}
TRAIN = {"steps": 12, "batch_size": 16, "eval_every": 4, "checkpoint_every": 4, "log_every": 4, "progress": False,
         "track": ["attention"], "checkpoint_every_s": None}


def _attention(out):
    return [r for r in rundir.read_metrics(out) if r.get("split") == "attention"]


def test_statistics_of_uniform_and_one_hot_weights():
    L = 4
    uniform = torch.full((1, 2, L, L), 1.0 / L)
    s = attention_statistics(uniform, None, k=2)
    assert s["entropy"] == pytest.approx(math.log(L), abs=1e-5)
    assert s["top1"] == pytest.approx(0.25) and s["topk"] == pytest.approx(0.5) and s["k"] == 2
    one_hot = torch.eye(L).expand(1, 2, L, L)
    s = attention_statistics(one_hot, None)
    assert s["entropy"] == pytest.approx(0.0) and s["top1"] == pytest.approx(1.0) and s["heads"]["top1"] == [1.0, 1.0]


def test_statistics_leave_padded_queries_out():
    L = 4
    w = torch.full((1, 1, L, L), 1.0 / L)
    w[0, 0, 3] = torch.tensor([0.0, 0.0, 0.0, 1.0])  # a padded query keeping itself
    mask = torch.tensor([[True, True, True, False]])
    assert attention_statistics(w, mask)["top1"] == pytest.approx(0.25)
    assert attention_statistics(w, None)["top1"] == pytest.approx((3 * 0.25 + 1.0) / 4)


def test_group_mass_reads_the_last_real_query():
    w = torch.zeros(1, 1, 3, 3)
    w[0, 0, 1] = torch.tensor([0.6, 0.4, 0.0])  # the last real query (position 2 is padding)
    w[0, 0, 2] = torch.tensor([0.0, 0.0, 1.0])
    mask = torch.tensor([[True, True, False]])
    groups = {"a": torch.tensor([[True, False, False]]), "b": torch.tensor([[False, True, True]])}
    out = group_mass(w, mask, groups)
    assert out["groups"] == {"a": pytest.approx(0.6), "b": pytest.approx(0.4)}
    assert out["group_share"] == {"a": pytest.approx(0.5), "b": pytest.approx(0.5)}
    assert last_query_statistics(w, mask) == {"entropy": pytest.approx(-0.6 * math.log(0.6) - 0.4 * math.log(0.4)), "top1": 0.6}


def test_group_mass_averages_over_the_examples_holding_the_group():
    w = torch.tensor([[0.5, 0.5], [1.0, 0.0]]).expand(2, 1, 2, 2).clone()  # last query: [1, 0]
    groups = {"a": torch.tensor([[True, False], [False, False]]), "b": torch.tensor([[False, True], [True, True]])}
    out = group_mass(w, None, groups)
    # 'a' is only in the first example, where the query gives it everything.
    assert out["groups"] == {"a": pytest.approx(1.0), "b": pytest.approx(0.5)}
    assert out["group_share"] == {"a": pytest.approx(0.5), "b": pytest.approx(0.75)}
    assert "a" not in group_mass(w, None, {"a": torch.zeros(2, 2, dtype=torch.bool)})["groups"]


class Stop(Exception):
    pass


def test_tracked_layers_steps_and_an_exact_resume(tmp_path, capsys):
    torch.set_num_threads(1)
    cfg = lambda: run_config({"model": MIXED, "task": "digits", "train": TRAIN})  # noqa: E731
    Trainer(cfg(), tmp_path / "full").fit()
    assert "skips mixers without attention weights: gfnet" in capsys.readouterr().err
    records = _attention(tmp_path / "full")
    assert [r["step"] for r in records] == [0, 4, 8, 12]
    # Layers 0 and 1 are spectral: skipped; 2 and 3 are softmax attention over the 16 patches.
    assert [[layer["layer"] for layer in r["layers"]] for r in records] == [[2, 3]] * 4
    first = records[0]["layers"][0]
    assert 0.0 < first["entropy"] <= math.log(16) + 1e-6 and 1 / 16 <= first["top1"] <= first["topk"] <= 1.0
    assert len(first["heads"]["entropy"]) == 2
    assert records[0]["layers"] != records[-1]["layers"]  # training changed the attention

    def stop_at_8(step, results):
        if step == 8:
            raise Stop  # before step 8's checkpoint: the resume goes on from step 4's

    with pytest.raises(Stop):
        Trainer(cfg(), tmp_path / "cut", on_eval=stop_at_8).fit()
    Trainer(cfg(), tmp_path / "cut", resume=True).fit()
    assert (tmp_path / "cut" / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()


def test_a_model_without_attention_weights_is_refused_in_one_line(tmp_path, capsys):
    code, _, err = run_cli(["train", "--set", "model=vit", "--set", "dim=16", "--set", "depth=1", "--set", "heads=2",
                            "--set", "mixer=linear", "--steps", "2", "--track", "attention", "--out", tmp_path / "r"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no mixer of this model has attention weights (it uses linear)" in err and "softmax" in err


def test_an_unknown_track_is_a_config_error():
    with pytest.raises(ConfigError, match="train.track"):
        run_config({"train": {"track": ["gradients"]}})
