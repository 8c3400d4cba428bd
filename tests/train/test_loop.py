"""The training loop's behaviour: it learns, schedules, stops, guards against NaN."""
import json
from types import SimpleNamespace

import pytest
import torch

import anyformer as af
from anyformer.cli import main
from anyformer.train.config import TrainConfig, run_config
from anyformer.errors import ConfigError, TrainingError
from anyformer.tasks.digits import DigitsTask
from anyformer.train import load_run, read_metrics, train
from anyformer.train.optim import lr_factor, make_optimizer

SMALL = {"preset": "vit", "dim": 16, "depth": 1, "heads": 2}


def _run(tmp_path, name="run", **train_opts):
    opts = {"steps": 40, "batch_size": 32, "eval_every": 20, "log_every": 10, "lr": 3e-3, "progress": False, **train_opts}
    return run_config({"model": SMALL, "task": "digits", "train": opts})


def test_training_learns_and_writes_the_run_directory(tmp_path):
    summary = train(_run(tmp_path, steps=200, eval_every=100, lr=1e-2), tmp_path / "r")
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"config.yaml", "metrics.jsonl", "model.safetensors", "state.safetensors", "state.json", "summary.json"} <= files
    assert not any(name.endswith(".tmp") for name in files)
    losses = [m["loss"] for m in read_metrics(tmp_path / "r") if "split" not in m]
    assert losses[-1] < losses[0] * 0.7
    assert summary["final"]["test"]["accuracy"] > 0.5
    model, config = load_run(tmp_path / "r")
    assert config["model"]["encoder"]["image_size"] == 8
    x = DigitsTask().splits()["test"].batch(torch.arange(8)).inputs
    assert model(x).shape == (8, 10)


def test_lr_schedules():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, schedule="cosine", min_lr=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(55, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, cfg) == pytest.approx(0.1)
    lin = TrainConfig(steps=100, lr=1.0, schedule="linear")
    assert lr_factor(50, lin) == pytest.approx(0.5)
    assert lr_factor(70, TrainConfig(steps=100, schedule="constant")) == 1.0


def test_no_weight_decay_on_norms_biases_embeddings():
    model = af.create("gpt", dim=16, heads=2, depth=1, max_len=8)
    groups = make_optimizer(model, TrainConfig()).param_groups
    no_decay = {id(p) for p in groups[1]["params"]}
    named = dict(model.named_parameters())
    assert id(named["encoder.embedding.weight"]) in no_decay
    assert id(named["position.weight"]) in no_decay
    assert id(named["stack.blocks.0.sublayers.0.norm_in.weight"]) in no_decay
    assert id(named["stack.blocks.0.sublayers.0.fn.q_proj.bias"]) in no_decay
    assert id(named["stack.blocks.0.sublayers.0.fn.q_proj.weight"]) not in no_decay
    assert groups[1]["weight_decay"] == 0.0 and groups[0]["weight_decay"] > 0


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    # fp32: bf16 autocast (chosen by `auto` on CPUs with bf16 units) rounds a micro-batch's
    # matmuls differently from the whole batch's, far above this test's 1e-4.
    a = train(_run(tmp_path, steps=10, eval_every=10, log_every=1, precision="fp32"), tmp_path / "a")
    b = train(_run(tmp_path, steps=10, eval_every=10, log_every=1, grad_accum=4, precision="fp32"), tmp_path / "b")
    la = [m["loss"] for m in read_metrics(tmp_path / "a") if "split" not in m]
    lb = [m["loss"] for m in read_metrics(tmp_path / "b") if "split" not in m]
    assert la == pytest.approx(lb, rel=1e-4, abs=1e-5)
    assert a["final"]["test"]["accuracy"] == pytest.approx(b["final"]["test"]["accuracy"], abs=0.01)


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_loss = DigitsTask.loss

    def poisoned(self, output, target):
        calls["n"] += 1
        loss = real_loss(self, output, target)
        return loss * float("nan") if self_training(output) and calls["n"] in (13, 14) else loss

    def self_training(output):
        return output.requires_grad

    monkeypatch.setattr(DigitsTask, "loss", poisoned)
    with pytest.raises(TrainingError, match="non-finite loss at step 13"):
        # fp32: precision auto's probe would call the loss too, moving the poisoned calls.
        train(_run(tmp_path, steps=30, eval_every=100, checkpoint_every=5, precision="fp32"), tmp_path / "nan")
    state = json.loads((tmp_path / "nan" / "state.json").read_text())
    assert state["step"] == 10 and (tmp_path / "nan" / "model.safetensors").exists()

    calls["n"] = 0
    summary = train(_run(tmp_path, steps=30, eval_every=100, skip_nonfinite=2), tmp_path / "skip")
    assert summary["skipped_batches"] == 2 and summary["steps"] == 30


def test_nonfinite_advice_resumes_the_checkpoint_it_names(tmp_path, monkeypatch):
    """The message names the checkpoint it keeps and a --resume --skip-nonfinite that is accepted
    (before: "the last good checkpoint is kept" and a suggestion --resume refused as another config)."""
    calls = {"n": 0}
    real_loss = DigitsTask.loss

    def poisoned(self, output, target):
        calls["n"] += 1
        loss = real_loss(self, output, target)
        return loss * float("nan") if output.requires_grad and calls["n"] in (13, 14) else loss

    monkeypatch.setattr(DigitsTask, "loss", poisoned)
    opts = dict(steps=30, eval_every=100, checkpoint_every=5, precision="fp32")
    with pytest.raises(TrainingError) as stopped:
        train(_run(tmp_path, **opts), tmp_path / "nan")
    message = str(stopped.value)
    assert "checkpoint of step 10 is kept" in message and "--resume --skip-nonfinite 10" in message
    calls["n"] = 10  # the resumed run replays steps 11.. and meets the same bad batches
    resumed = train(_run(tmp_path, **opts, skip_nonfinite=10), tmp_path / "nan", resume=True)
    calls["n"] = 0
    straight = train(_run(tmp_path, **opts, skip_nonfinite=2), tmp_path / "straight")
    assert resumed["steps"] == straight["steps"] == 30 and resumed["skipped_batches"] == 2
    assert resumed["final"] == straight["final"]


def test_nonfinite_before_the_first_checkpoint_says_nothing_was_saved(tmp_path, monkeypatch):
    monkeypatch.setattr(DigitsTask, "loss", lambda self, o, t: o.sum() * float("nan"))
    with pytest.raises(TrainingError) as stopped:
        train(_run(tmp_path, steps=5), tmp_path / "first")
    assert "before the first checkpoint (nothing was saved)" in str(stopped.value)
    assert "kept" not in str(stopped.value)


def test_checkpoints_come_on_a_time_cadence_between_step_checkpoints(tmp_path, monkeypatch):
    """checkpoint_every_s bounds the work a kill loses when steps are slow and evals far apart."""
    import anyformer.train.loop as loop

    clock = {"t": 0.0}

    def tick():  # every reading of the loop's clock is one more second: a step takes seconds
        clock["t"] += 1.0
        return clock["t"]

    saved = []
    real = loop.Trainer._checkpoint
    monkeypatch.setattr(loop.Trainer, "_checkpoint", lambda self, e: (saved.append(self.step), real(self, e)))
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=tick))
    train(_run(tmp_path, steps=12, eval_every=100, checkpoint_every_s=5.0, precision="fp32"), tmp_path / "t")
    between = [s for s in saved if s < 12]
    assert len(between) >= 2 and between == sorted(set(between))
    saved.clear()
    train(_run(tmp_path, steps=12, eval_every=100, checkpoint_every_s=None, precision="fp32"), tmp_path / "n")
    assert saved == [12, 12]  # the last step and the finish only


def test_nonfinite_loss_via_cli_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(DigitsTask, "loss", lambda self, o, t: o.sum() * float("nan"))
    with pytest.raises(SystemExit) as done:
        main(["train", "--set", "model.dim=16", "--set", "depth=1", "--steps", "5", "--out", str(tmp_path / "c")])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "non-finite loss at step 1" in err and "Traceback" not in err


def test_early_stopping_keeps_best_weights(tmp_path):
    summary = train(_run(tmp_path, steps=400, eval_every=5, early_stopping=2, lr=5e-2), tmp_path / "es")
    assert summary["stopped"] == "early_stopping" and summary["steps"] < 400
    assert summary["final"]["val"]["accuracy"] == pytest.approx(summary["best_val"], abs=1e-6)


def test_max_time_budget(tmp_path):
    summary = train(_run(tmp_path, steps=100000, eval_every=1000, max_time=2.0), tmp_path / "t")
    assert summary["stopped"] == "max_time" and 0 < summary["steps"] < 100000
    assert "test" in summary["final"]


def test_run_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        run_config({"train": {"stepss": 3}})
    with pytest.raises(ConfigError, match="unknown task"):
        run_config({"task": "digitz"})
    with pytest.raises(ConfigError, match="train.lr"):
        run_config({"train": {"lr": -1}})
    with pytest.raises(ConfigError, match="not available"):
        train(run_config({"model": SMALL, "train": {"device": "cuda:7", "steps": 1}}), "/tmp/never") if not torch.cuda.is_available() else (_ for _ in ()).throw(ConfigError("not available"))


def test_out_of_memory_is_one_line_training_error(tmp_path, monkeypatch):
    def boom(self, output, target):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(DigitsTask, "loss", boom)
    with pytest.raises(TrainingError, match="out of memory at step 1 with batch 32.*train.batch_size"):
        train(_run(tmp_path, steps=5), tmp_path / "oom")


@pytest.mark.parametrize("batch, accum, world", [(7, 3, 2), (6, 2, 3), (9, 4, 2), (32, 4, 1), (5, 5, 1)])
def test_every_process_gets_examples_in_every_micro_batch(batch, accum, world):
    """batch_size >= grad_accum x processes is all the loop asks; then no process may get an
    empty micro-batch (its loss would be NaN and every step skipped) and none is lost."""
    from anyformer.train.data import micro_batch_parts

    indices = torch.randperm(batch)
    parts = [micro_batch_parts(indices, accum, world, rank) for rank in range(world)]
    assert all(len(p) == len(parts[0]) for p in parts)  # same number of forward/backward passes
    assert all(len(micro) > 0 for p in parts for micro in p)
    assert sorted(torch.cat([m for p in parts for m in p]).tolist()) == sorted(indices.tolist())


def test_a_metric_the_task_does_not_report_is_an_error(tmp_path):
    """train.metric drives early stopping and the best weights; a misspelt one used to be
    ignored silently (no best, no early stop, NaN quality in compare)."""
    with pytest.raises(ConfigError, match="did you mean 'accuracy'"):
        train(_run(tmp_path, steps=4, eval_every=2, metric="acuracy", early_stopping=1), tmp_path / "m")
    summary = train(_run(tmp_path, steps=4, eval_every=2, metric="macro_f1"), tmp_path / "ok")
    assert summary["metric"] == "macro_f1" and summary["best_val"] is not None


def test_aux_losses_count_every_call_of_a_shared_block():
    from anyformer.train.aux_losses import AuxLosses

    model = af.create("vit", dim=16, heads=2, depth=4, image_size=8, patch_size=2, channels=1,
                      ffn={"name": "moe", "experts": 4}, schedule={"share": 1})
    aux = AuxLosses(model)
    model.train()
    model(torch.randn(3, 1, 8, 8))
    assert len(aux.terms) == 4  # one shared block, four calls
    moe = model.stack.blocks[0].ffn
    total = aux.pop()
    assert float(total.detach()) > float(moe.aux_loss.detach()) and aux.terms == []
    model.eval()
    model(torch.randn(3, 1, 8, 8))
    assert aux.terms == []  # evaluation adds nothing
