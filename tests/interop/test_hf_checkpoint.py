"""Reading and writing Hugging Face checkpoint folders (interop/hf/checkpoint.py, convert.py):
pickles refused without being unpickled, sharded safetensors, damaged or missing files, an
unknown model_type, import into a run directory `af.load` reads, export refusals that name
the component, and that reading needs no transformers."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import anyformer as af
from anyformer.errors import ConfigError, DataError
from anyformer.interop.hf import bert
from anyformer.interop.hf.convert import export_hf, import_hf

BERT = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 30, "hidden_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 24, "max_position_embeddings": 12, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0}


class Marker:
    """Unpickling this creates the file `path` (what a malicious pickle could do, harmlessly)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def bert_tensors(cfg=BERT):
    """A complete random BertModel state in transformers' names, built from the export side."""
    model = af.create(
        {"dim": cfg["hidden_size"], "depth": cfg["num_hidden_layers"], "heads": cfg["num_attention_heads"],
         "max_len": cfg["max_position_embeddings"], "position": "none", "final_norm": False,
         "norm": {"name": "layernorm", "placement": "post", "eps": 1e-12}, "ffn": {"name": "mlp", "hidden": cfg["intermediate_size"]},
         "encoder": {"name": "tokens", "vocab_size": cfg["vocab_size"], "type_vocab_size": 2, "position_embeddings": True,
                     "embed_norm": True, "norm_eps": 1e-12, "pad_id": 0},
         "head": {"name": "features"}})
    return bert.export_state(model.state_dict(), model.config)


def write_bert(path: Path) -> dict:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(BERT))
    tensors = bert_tensors()
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return tensors


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt"])
def test_a_pickle_checkpoint_is_refused_without_being_unpickled(tmp_path, name):
    marker = tmp_path / "unpickled.marker"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(BERT))
    (ckpt / name).write_bytes(pickle.dumps({"weight": Marker(marker)}))
    with pytest.raises(DataError) as err:
        af.from_hf(ckpt)
    message = str(err.value)
    assert name in message and "safe_serialization=True" in message and "save_pretrained" in message and "\n" not in message
    with pytest.raises(DataError):
        import_hf(ckpt, tmp_path / "run")
    assert not marker.exists() and not (tmp_path / "run").exists()
    # The test has teeth: unpickling the file does create the marker.
    pickle.loads((ckpt / name).read_bytes())
    assert marker.exists()


def test_a_pickle_beside_safetensors_is_never_read(tmp_path):
    marker = tmp_path / "unpickled.marker"
    write_bert(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "pytorch_model.bin").write_bytes(pickle.dumps(Marker(marker)))
    af.from_hf(tmp_path / "ckpt")
    assert not marker.exists()


def test_sharded_safetensors_read_through_the_index(tmp_path):
    tensors = write_bert(tmp_path / "one")
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2], "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text(json.dumps(BERT))
    for file, names in shards.items():
        save_file({k: tensors[k] for k in names}, str(sharded / file), metadata={"format": "pt"})
    weight_map = {k: file for file, names in shards.items() for k in names}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    a, _ = af.from_hf(tmp_path / "one")
    b, _ = af.from_hf(sharded)
    ids = torch.randint(1, 30, (2, 8))
    with torch.no_grad():
        assert torch.equal(a(ids), b(ids))
    os.remove(sharded / "model-00002-of-00002.safetensors")
    with pytest.raises(DataError, match="model-00002-of-00002.safetensors"):
        af.from_hf(sharded)


@pytest.mark.parametrize("damage, match", [
    ("no_dir", "not a directory"),
    ("no_config", "no config.json"),
    ("no_weights", "no model.safetensors"),
    ("truncated", "not a readable safetensors file"),
    ("missing_tensor", "embeddings.LayerNorm.bias"),
    ("wrong_shape", "do not fit"),
])
def test_damaged_checkpoints_are_one_line_data_errors(tmp_path, damage, match):
    ckpt = tmp_path / "ckpt"
    tensors = write_bert(ckpt)
    if damage == "no_dir":
        ckpt = tmp_path / "nowhere"
    elif damage == "no_config":
        os.remove(ckpt / "config.json")
    elif damage == "no_weights":
        os.remove(ckpt / "model.safetensors")
    elif damage == "truncated":
        data = (ckpt / "model.safetensors").read_bytes()
        (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "missing_tensor":
        tensors.pop("embeddings.LayerNorm.bias")
        save_file(tensors, str(ckpt / "model.safetensors"))
    elif damage == "wrong_shape":
        tensors["encoder.layer.0.intermediate.dense.weight"] = torch.zeros(7, 16)
        save_file(tensors, str(ckpt / "model.safetensors"))
    with pytest.raises(DataError) as err:
        af.from_hf(ckpt)
    assert match in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_model_type_suggests_the_closest(tmp_path):
    write_bert(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**BERT, "model_type": "bertt"}))
    with pytest.raises(ConfigError, match=r"unknown Hugging Face model_type.*'bertt'.*did you mean 'bert'"):
        af.from_hf(tmp_path)


def test_import_writes_a_run_directory_that_load_reads(tmp_path):
    write_bert(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "tokenizer.json").write_text("{}")
    run, config = import_hf(tmp_path / "ckpt", tmp_path / "run")
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "model.safetensors", "tokenizer.json"]
    model, loaded = af.load(run)
    direct, _ = af.from_hf(tmp_path / "ckpt")
    ids = torch.randint(1, 30, (2, 8))
    with torch.no_grad():
        assert torch.equal(model(ids), direct(ids))
    assert loaded["task"] is None and loaded["imported"]["model_type"] == "bert" and loaded["model"] == config["model"]
    with pytest.raises(DataError, match="not empty"):
        import_hf(tmp_path / "ckpt", run)
    # A run directory exports like a model.
    export_hf(run, tmp_path / "back")
    assert (tmp_path / "back" / "config.json").is_file()


def test_export_without_equivalent_names_the_component_per_family():
    model = af.create("vit", dim=16, depth=1, heads=2, image_size=8, patch_size=2, mixer="fnet")
    with pytest.raises(ConfigError) as err:
        export_hf(model, "/nonexistent/never-written")
    message = str(err.value)
    assert "no transformers architecture" in message and "mixer 'fnet'" in message
    assert "bert:" in message and "vit:" in message and "\n" not in message


def test_reading_a_checkpoint_needs_no_transformers(tmp_path):
    write_bert(tmp_path / "ckpt")
    code = ("import sys; sys.modules['transformers'] = None\n"  # any import of it now fails
            "import anyformer as af, torch\n"
            f"m, c = af.from_hf({str(tmp_path / 'ckpt')!r})\n"
            "print(tuple(m(torch.randint(1, 30, (2, 5))).shape), 'transformers' in sys.modules and sys.modules['transformers'] is not None)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["(2,", "5,", "16)", "False"]
