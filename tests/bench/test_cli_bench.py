"""`anyformer bench` as a user runs it, on tiny sizes."""
import json

import pytest

from anyformer.cli import main


def test_bench_sweep_prints_table_and_writes_json_and_png(tmp_path, capsys):
    out = tmp_path / "b"
    main(["bench", "gpt", "--lengths", "32,64", "--set", "depth=1", "--set", "dim=32", "--repeats", "1",
          "--device", "cpu", "--out", str(out)])
    text = capsys.readouterr().out
    report = json.loads((out / "bench.json").read_text())
    # `auto` precision: bf16 where the probe measured it faster, and MFU against that roof.
    precision = report["rows"][0]["precision"]
    assert precision in ("fp32", "bf16") and report["rows"][0]["roof"] == f"{precision} GEMM n=1024"
    assert "fwd+bwd ms" in text and "MFU" in text and f"roof: {precision} GEMM" in text
    assert [r["length"] for r in report["rows"]] == [32, 64]
    assert report["failure"] is None and report["largest_ok"] == 64
    # One model for the sweep: max_len is raised to the longest length, so params are equal.
    assert report["rows"][0]["params"] == report["rows"][1]["params"]
    assert report["rows"][1]["flops"]["train_step_per_sample"] > report["rows"][0]["flops"]["train_step_per_sample"] > 0
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_without_lengths_uses_the_example_input(tmp_path, capsys):
    main(["bench", "vit", "--set", "depth=1", "--set", "dim=32", "--set", "image_size=8", "--repeats", "1",
          "--out", str(tmp_path)])
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["rows"][0]["tokens_per_sample"] == 5  # (8/4)^2 patches + [CLS]


@pytest.mark.parametrize("args,match", [
    (["--lengths", "64", "--set", "max_len=32"], "exceeds max_len 32"),
    (["--lengths", "6a4"], "comma-separated integers"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bench_errors_are_one_line(args, match, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["bench", "gpt", "--set", "depth=1", "--set", "dim=32", "--out", str(tmp_path), *args])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert match in err and len([ln for ln in err.splitlines() if ln.strip()]) == 1


def test_bench_lengths_on_images_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "vit", "--lengths", "16", "--set", "depth=1", "--out", str(tmp_path)])
    assert "no sequence length to sweep" in capsys.readouterr().err


def test_bench_out_of_memory_names_the_largest_length_that_fit(tmp_path, capsys, monkeypatch):
    import anyformer.bench.scaling as sweep_module

    real = sweep_module.profile

    def fake_profile(model, x, **kw):
        if x.shape[1] > 32:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        return real(model, x, **kw)

    monkeypatch.setattr(sweep_module, "profile", fake_profile)
    with pytest.raises(SystemExit) as done:
        main(["bench", "gpt", "--lengths", "16,32,64", "--set", "depth=1", "--set", "dim=32",
              "--repeats", "1", "--out", str(tmp_path)])
    assert done.value.code == 2
    captured = capsys.readouterr()
    assert "out of memory at length 64" in captured.err and "largest length that fit was 32" in captured.err
    report = json.loads((tmp_path / "bench.json").read_text())
    assert [r["length"] for r in report["rows"]] == [16, 32] and report["failure"]["length"] == 64
