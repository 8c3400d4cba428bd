"""Token filtering as a compression method (Wang et al. 2023): a token's importance is the
loss change of removing it alone; a planted constant-zero border patch is near zero (and
exactly zero, ranked last, when zeroed out of an exactly-zero token); the written run keeps
the trained filter, reloads, and reports what a fresh eval measures; keep = 1 changes
nothing; padded sequences filter per sample; bad options and models whose parts cannot
take a token subset are refused in one line, leaving the input untouched."""
import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from anyformer import catalog
from anyformer.compress import compress, token_filter
from anyformer.compress.data import Judged, judged
from anyformer.compress.prune_heads import Objective
from anyformer.compress.token_importance import MASK, ZERO, sample_losses, stack_input, token_importance
from anyformer.errors import ConfigError
from anyformer.rundir import read_config, read_json
from anyformer.train.evaluate import evaluate_run
from tests.cli_run import run_cli
from tests.infer.helpers import train_tiny

CPU = torch.device("cpu")
GRID = (4, 5)  # 8 x 10 images in 2 x 2 patches
BORDER = [r * GRID[1] for r in range(GRID[0])]  # the left column of patches: always zero


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    """A ViT trained briefly on the digits with two zero columns added on the left, so the
    first column of patches is constant zero: tokens that carry nothing."""
    from sklearn.datasets import load_digits
    folder = tmp_path_factory.mktemp("token_filter")
    digits = load_digits()
    x = np.zeros((len(digits.images), 8, 10), np.float32)
    x[:, :, 2:] = digits.images / 16.0
    np.savez(folder / "digits.npz", x=x, y=digits.target)
    return train_tiny({"name": "images-npz", "path": str(folder / "digits.npz")}, folder / "vit", model="vit",
                      **{"model.encoder.patch_size": 2, "train.steps": 150, "train.eval_every": 150, "train.lr": 3e-3,
                         "train.warmup_steps": 10})


@pytest.fixture(scope="module")
def listops_run(tmp_path_factory):
    task = {"name": "listops", "max_depth": 3, "max_args": 4, "min_length": 4, "max_length": 24,
            "num_train": 96, "num_val": 8, "num_test": 32}
    return train_tiny(task, tmp_path_factory.mktemp("token_filter") / "listops", model="transformer")


def loaded(run):
    model, config = catalog.load_run(run)
    return model, config, judged(config, run, model, CPU)


def test_a_token_masked_through_the_key_mask_is_exactly_the_token_removed(vit_run):
    model, _, data = loaded(vit_run)
    objective = Objective(model, data, CPU)
    imp = token_importance(model, objective, prefix=1)
    assert imp.how == MASK and imp.delta[0].shape == (len(data.calibration[0]), 20)
    for t in (0, 7, 13):  # the stack run on the sequence without token t
        keep = [i for i in range(21) if i != 1 + t]
        with torch.no_grad(), stack_input(model, lambda x, mask: (x[:, keep], None), []):
            removed = sample_losses(objective, objective.output(model, 0), 0)
        torch.testing.assert_close(imp.delta[0][:, t], removed - imp.base[0], atol=1e-5, rtol=0)


def test_a_planted_constant_zero_border_patch_has_near_zero_importance(vit_run):
    model, _, data = loaded(vit_run)
    # Judged by closeness to the model's own outputs, no removal can lower the loss (1 - cos >= 0).
    cosine = Judged(data.calibration, data.example, "cosine", True)
    per = token_importance(model, Objective(model, cosine, CPU), prefix=1).per_position()
    assert min(per) >= 0.0
    assert max(per[t] for t in BORDER) < 0.05 * max(per)  # nothing in them: removing one changes little
    # Zeroing (the paper's masking) an exactly-zero token changes nothing at all: make the
    # border patches' tokens exactly zero (a zero patch embeds to the conv bias), and each
    # ranks last, at exactly 0.
    with torch.no_grad():
        for t in BORDER:
            model.position.weight[1 + t] = -model.encoder.proj.bias
    zeroed = token_importance(model, Objective(model, cosine, CPU), prefix=1, how=ZERO)
    assert zeroed.how == ZERO
    per = zeroed.per_position()
    assert [per[t] for t in BORDER] == [0.0] * len(BORDER)
    assert min(per[t] for t in range(20) if t not in BORDER) > 1e-6
    task = token_importance(model, Objective(model, data, CPU), prefix=1, how=ZERO)
    assert all(float(d[:, BORDER].abs().max()) == 0.0 for d in task.delta)  # under the task loss too


def test_the_job_writes_a_filtered_run_that_reloads_and_reports_what_eval_measures(vit_run, tmp_path):
    before = digest(vit_run)
    result = compress(vit_run, "token-filter", tmp_path / "out", device="cpu", keep=0.5)
    assert digest(vit_run) == before
    notes = result["notes"]
    assert notes["masking"] == MASK and notes["prefix_tokens"] == 1 and notes["kept_share"] == 0.5
    assert len(notes["importance"]["per_position"]) == 20 and sorted(notes["importance"]["ranked_positions"]) == list(range(1, 21))
    assert notes["filter"]["held_out"]["tokens"] == 16 * 20 and 0.0 <= notes["filter"]["held_out"]["top_recall"] <= 1.0
    config = read_config(tmp_path / "out")
    assert config["model"]["token_filter"] == {"hidden": 64, "keep": 0.5} and config["compressed"]["method"] == "token-filter"
    model, _ = catalog.load_run(tmp_path / "out")
    assert model.token_filter.keep == 0.5 and model.token_filter.prefix == 1
    x = data_inputs(vit_run)
    with torch.no_grad():
        kept, mask = model.token_filter(model.position(model.encoder(x)[0]), None)
    assert kept.shape[1] == 1 + 10 and mask is None
    _, fresh = evaluate_run(tmp_path / "out", ["test"], "cpu")
    reported = read_json(tmp_path / "out" / "summary.json")["final"]["test"]
    assert reported["accuracy"] == fresh["test"]["accuracy"] == result["after"]["accuracy"]
    assert reported["loss"] == pytest.approx(fresh["test"]["loss"], abs=1e-6)


def data_inputs(run):
    _, _, data = loaded(run)
    return data.example.inputs


def test_keep_one_changes_nothing(vit_run, tmp_path):
    result = compress(vit_run, "token-filter", tmp_path / "all", device="cpu", keep=1.0, filter_steps=5)
    assert result["after"]["accuracy"] == result["before"]["accuracy"] and result["after"]["loss"] == result["before"]["loss"]
    assert result["notes"]["kept_share"] == 1.0 and result["notes"]["filtered_loss"] == result["notes"]["unfiltered_loss"]


def test_finetuning_on_the_filtered_tokens_lowers_the_calibration_loss(vit_run):
    model, config, data = loaded(vit_run)
    filtered, _, notes = token_filter.apply(model, config["model"], data, CPU, keep=0.25, filter_steps=50,
                                            finetune_steps=8, finetune_lr=3e-3)
    tune = notes["finetune"]
    assert tune["loss_before"] == notes["filtered_loss"] and tune["loss_after"] < tune["loss_before"]
    assert not filtered.training and notes["kept_share"] == 0.25


def test_a_padded_sequence_task_filters_each_sample_by_a_threshold(listops_run, tmp_path):
    result = compress(listops_run, "token-filter", tmp_path / "seq", device="cpu", threshold=0.0, filter_steps=50)
    assert result["notes"]["prefix_tokens"] == 0 and 0.0 < result["notes"]["kept_share"] < 1.0
    model, _, data = loaded(tmp_path / "seq")
    batch = data.calibration[0]
    with torch.no_grad():
        tokens, mask = model.encoder(batch.inputs, batch.mask)
        kept, kept_mask = model.token_filter(model.position(tokens), mask)
        scores = model.token_filter.score(model.position(tokens))
    n = mask.sum(1)
    want = ((scores >= 0.0) & mask).sum(1).clamp_min(1)
    assert torch.equal(kept_mask.sum(1), want) and bool((want <= n).all())
    assert kept.shape[1] == int(want.max()) < tokens.shape[1]
    _, fresh = evaluate_run(tmp_path / "seq", ["test"], "cpu")
    assert read_json(tmp_path / "seq" / "summary.json")["final"]["test"]["accuracy"] == fresh["test"]["accuracy"]


def test_the_compress_command_takes_keep(vit_run, tmp_path, capsys):
    code, out, _ = run_cli(["compress", vit_run, "--method", "token-filter", "--keep", "0.5", "--finetune-steps", "2",
                            "--out", tmp_path / "cli", "--device", "cpu"], capsys)
    assert code == 0 and "accuracy (judged by)" in out and "latency_ms" in out
    assert read_json(tmp_path / "cli" / "compress.json")["options"] == {"finetune_steps": 2, "keep": 0.5}
    code, _, err = run_cli(["compress", vit_run, "--method", "token-filter", "--keep", "2", "--out", tmp_path / "bad"], capsys)
    assert code == 2 and "--keep must be in (0, 1]" in err


@pytest.mark.parametrize("options, says", [
    ({"keep": 0.0}, "--keep must be in (0, 1] (the share of tokens kept), got 0.0"),
    ({"keep": 1.5}, "--keep must be in (0, 1] (the share of tokens kept), got 1.5"),
    ({"keep": 0.5, "threshold": 0.1}, "give one of --keep (share of tokens kept) or --threshold"),
    ({}, "token-filter needs --keep F"),
    ({"threshold": float("nan")}, "--threshold must be a finite number, got nan"),
    ({"keep": 0.5, "finetune_steps": -1}, "--finetune-steps must be an integer >= 0"),
    ({"keep": 0.5, "hidden": 0}, "--hidden must be an integer >= 1"),
])
def test_bad_options_are_one_line_and_write_nothing(vit_run, tmp_path, options, says):
    before = digest(vit_run)
    with pytest.raises(ConfigError) as err:
        compress(vit_run, "token-filter", tmp_path / "out", device="cpu", **options)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out" / "model.safetensors").exists() and digest(vit_run) == before


@pytest.mark.parametrize("change, says", [
    ({"mixer": {"name": "local", "window": 4}}, "model.token_filter: mixer 'local' cannot take a subset of the tokens"),
    ({"position": {"name": "rotary"}}, "model.token_filter: position 'rotary' acts inside the mixers"),
])
def test_a_model_with_parts_that_cannot_take_a_token_subset_is_refused_untouched(vit_run, change, says):
    _, config, data = loaded(vit_run)
    model_cfg = {**copy.deepcopy(config["model"]), **change}
    model = catalog.create(model_cfg)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError) as err:
        token_filter.apply(model, model_cfg, data, CPU, keep=0.5)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="already filters its tokens"):
        token_filter.apply(model, {**model_cfg, "token_filter": {"keep": 0.5}}, data, CPU, keep=0.5)
