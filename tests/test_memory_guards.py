"""The reported sizes, as a user gives them: each is refused at once with one line (exit 2)
that gives the estimate, the memory free and the setting to lower. None of them allocates
what it asks for: the model is counted on the meta device, the step estimated."""
import pytest

from anyformer import runtime
from anyformer.cli import main
from anyformer.errors import ConfigError
from anyformer.train.config import MAX_BATCH, TrainConfig, run_config
from anyformer.train.loop import Trainer

GiB = 2**30
SMALL = {"preset": "vit", "dim": 16, "depth": 1, "heads": 2}


@pytest.fixture(autouse=True)
def free(monkeypatch):
    class Free:
        bytes = 8 * GiB
    monkeypatch.setattr(runtime, "available_memory", lambda device="cpu": Free.bytes)
    return Free


def refused(args, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "internal error" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("setting,starts", [
    ("dim=1000000000", "error: model.dim=1000000000: the model needs over 13.9 EiB for its parameters"),
    ("depth=100000000", "error: model.depth=100000000: over 10,000 layers"),
    ("train.batch_size=100000000000", "error: train.batch_size: Input should be less than or equal to 16777216 (got 100000000000)"),
])
def test_train_refuses_absurd_sizes_in_one_line(setting, starts, tmp_path, capsys):
    line = refused(["train", "--set", setting, "--steps", "1", "--out", str(tmp_path / "r")], capsys)
    assert line.startswith(starts)
    assert not (tmp_path / "r").exists()  # refused before the run directory is written


def test_train_refuses_a_batch_whose_activations_cannot_fit(tmp_path, capsys):
    line = refused(["train", "--set", "train.batch_size=10000000", "--steps", "1", "--out", str(tmp_path / "r")], capsys)
    assert line.startswith("error: train.batch_size=10000000: training needs ~")
    assert "activations of 10000000 x 17 tokens through 4 layers ~" in line
    assert "this machine has 8.0 GiB free; lower train.batch_size or raise train.grad_accum" in line


def test_bench_refuses_a_length_that_sizes_the_model_past_memory(tmp_path, capsys):
    line = refused(["bench", "gpt", "--lengths", "1000000000", "--out", str(tmp_path)], capsys)
    assert line.startswith("error: --lengths 1000000000 (bench builds the model with max_len 1000000000): "
                           "model.max_len=1000000000 / model.dim=128: the model needs ~476.8 GiB")
    assert line.endswith("this machine has 8.0 GiB free; lower model.max_len or model.dim")


def test_the_trainer_sizes_activations_by_the_micro_batch(tmp_path, free):
    run = run_config({"model": SMALL, "task": "digits",
                      "train": {"steps": 1, "batch_size": 4096, "precision": "fp32", "progress": False}})
    with pytest.raises(ConfigError) as err:
        free.bytes = 20 * 2**20  # 20 MiB: 4096 samples' activations (~80 MiB) do not fit
        Trainer(run, tmp_path / "a")
    assert str(err.value).startswith("train.batch_size=4096: training needs ~")
    assert "activations of 4096 x 17 tokens" in str(err.value) and "20.0 MiB free" in str(err.value)
    run.train = run.train.model_copy(update={"grad_accum": 64})  # micro-batches of 64: they fit
    assert Trainer(run, tmp_path / "b").cfg.micro_batch() == 64


@pytest.mark.parametrize("batch,accum,world,micro", [(64, 1, 1, 64), (64, 4, 1, 16), (65, 4, 1, 17), (64, 4, 2, 8)])
def test_micro_batch(batch, accum, world, micro):
    assert TrainConfig(batch_size=batch, grad_accum=accum).micro_batch(world) == micro


def test_batch_size_is_bounded():
    assert TrainConfig(batch_size=MAX_BATCH).batch_size == MAX_BATCH
    with pytest.raises(ConfigError, match="train.batch_size: Input should be less than or equal to 16777216"):
        run_config(overrides={"train.batch_size": MAX_BATCH + 1})


def test_the_trainer_refuses_an_eval_batch_that_cannot_fit(tmp_path, free):
    from anyformer import catalog
    from anyformer.nn.step_memory import run_needs

    model = catalog.create({**SMALL, "num_classes": 10, "image_size": 8, "patch_size": 2, "channels": 1})
    train_needs = sum(run_needs(model, 8, "cpu", optimizer=True).values())
    eval_needs = sum(run_needs(model, 1258, "cpu", training=False).values())  # digits' train split, whole
    assert eval_needs > train_needs
    free.bytes = train_needs
    run = run_config({"model": SMALL, "task": "digits",
                      "train": {"steps": 1, "batch_size": 8, "eval_batch_size": 100_000, "precision": "fp32", "progress": False}})
    with pytest.raises(ConfigError) as err:
        Trainer(run, tmp_path / "a")
    assert str(err.value).startswith("train.eval_batch_size=100000: ")
    assert "a forward pass needs ~" in str(err.value) and "activations of 1258 x 17 tokens" in str(err.value)  # train split
    assert "lower train.eval_batch_size" in str(err.value)
    run.train = run.train.model_copy(update={"eval_batch_size": 8})
    assert Trainer(run, tmp_path / "b").cfg.eval_batch_size == 8
