"""Hugging Face checkpoints in and out: `from_hf` (a local checkpoint -> an anyformer model),
`import_hf` (-> an ordinary run directory), `export_hf` (a run or model -> a checkpoint
that `transformers.AutoModel.from_pretrained` loads, no remote code).

An imported run directory holds what `anyformer train` writes for a model: config.yaml
(`model`: the resolved model config) and model.safetensors, so `af.load`, `anyformer
eval`, `bench`, `compare --models RUN` and `export` read it. It was trained on no task of
anyformer's: config.yaml's `task` is null and `train` is empty (the defaults), and an
`imported` section records the source (folder, model_type, architectures, the checkpoint
tensors not carried over). `anyformer eval RUN` then needs `--task NAME`. The tokenizer
(tokenizer.json) is copied beside the weights when the checkpoint has one.

Reading needs safetensors and json only; transformers is never imported here."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import yaml
from torch import nn

from anyformer import rundir
from anyformer.catalog import create, load_run
from anyformer.config import ModelConfig, model_config
from anyformer.errors import ConfigError, DataError
from anyformer.interop.hf import checkpoint, family_for, family_modules

# Tensors that are buffers, not weights (position ids, causal masks, rotary frequencies):
# never reported as "not imported".
BUFFER_SUFFIXES = ("position_ids", "token_type_ids", "masked_bias", ".attn.bias", "inv_freq")


def _load_exact(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load `state` so that every parameter and persistent buffer of the model is set (a
    tie set through one of its names counts for all); a gap is a DataError, not a silent
    random init."""
    try:
        gaps, unexpected = rundir.assign_tensors(model, state)
    except RuntimeError as err:  # a shape mismatch: config.json and the weights disagree
        detail = str(err).strip().splitlines()[-1].strip()
        raise DataError(f"{where}: the weights do not fit the model config.json describes ({detail})") from None
    if gaps or unexpected:
        raise DataError(f"{where}: weights left unset {gaps[:3]} or not used {list(unexpected)[:3]}; "
                        "is config.json from the same checkpoint?")


def _carried(key: str, written: set[str]) -> bool:
    # A task model's names carry a prefix ('bert.encoder...') that the base model's lack.
    return key in written or any(w.endswith("." + key) or key.endswith("." + w) for w in written)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict (every alias of a tied weight kept), detached, on the CPU."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def from_hf(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A local Hugging Face checkpoint folder -> (anyformer model in eval mode, config as an
    imported run's config.yaml holds it: model, task None, train {}, imported)."""
    path = Path(path)
    hf, tensors = checkpoint.read_checkpoint(path)
    family = family_for(str(hf["model_type"]))
    hf_in = {**hf, "_state_keys": sorted(tensors)}
    fields = family.model_config(hf_in)
    pooling = checkpoint.sentence_pooling(path)
    head = fields.get("head")
    if pooling and isinstance(head, dict) and head.get("name") == "features":
        head.update(pooling)  # a sentence-transformers folder: its own sentence embedding
    cfg = model_config(fields)
    model = create(cfg)
    state = family.import_state(tensors, hf_in)
    _load_exact(model, state, str(path))
    model.eval()
    dropped: list[str] = []
    if family.exports(cfg) is None:  # what writing the model back gives: the tensors it carries
        written = set(family.export_state(model_state(model), cfg))
        dropped = sorted(k for k in tensors if not k.endswith(BUFFER_SUFFIXES) and not _carried(k, written))
    imported = {"format": "huggingface", "path": str(path.resolve()), "model_type": hf["model_type"],
                "architectures": list(hf.get("architectures") or []), "not_imported": dropped}
    return model, {"model": cfg.to_dict(), "task": None, "train": {}, "imported": imported}


def import_hf(path: str | Path, out: str | Path) -> tuple[Path, dict[str, Any]]:
    """Import a checkpoint folder into a new run directory `out` (config.yaml,
    model.safetensors, tokenizer.json when the folder has one); returns (out, config)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} already exists and is not empty; choose another --out or remove it")
    model, config = from_hf(path)
    out.mkdir(parents=True, exist_ok=True)
    rundir.save_weights(model, out / "model.safetensors", metadata={"source": "huggingface"})
    tokenizer = Path(path) / "tokenizer.json"
    if tokenizer.is_file():
        rundir.atomic_write_bytes(out / "tokenizer.json", tokenizer.read_bytes())
        config["imported"]["tokenizer"] = str((out / "tokenizer.json").resolve())
    # config.yaml last: a folder with it is a complete run directory.
    rundir.atomic_write_text(out / "config.yaml", yaml.safe_dump(rundir.jsonable(config), sort_keys=False))
    return out, config


# ---------------------------------------------------------------- export

def _model_and_config(source: str | Path | nn.Module) -> tuple[nn.Module, ModelConfig]:
    if isinstance(source, nn.Module):
        cfg = getattr(source, "config", None)
        if not isinstance(cfg, ModelConfig):
            raise ConfigError(f"{type(source).__name__} carries no anyformer ModelConfig; export a model built by af.create or af.load")
        return source, cfg
    model, config = load_run(source)
    refuse_quantized(config, source, "a transformers checkpoint")
    return model, model_config(config["model"])


def refuse_quantized(config: dict, run_dir: str | Path, what: str) -> None:
    """A quantized run holds torchao tensors no exported format takes: say which run to export."""
    if config.get("quantization"):
        origin = (config.get("compressed") or {}).get("from", "the run it was quantized from")
        raise ConfigError(f"{run_dir} is quantized (torchao int8/int4 layers), which {what} cannot hold; "
                          f"export the float run, {origin}")


def export_family(config: ModelConfig) -> tuple[str, ModuleType]:
    """(name, module) of the first family that writes `config`; else a ConfigError saying,
    for every family, which component has no equivalent."""
    reasons = []
    for name, module in family_modules().items():
        why = module.exports(config)
        if why is None:
            return name, module
        reasons.append(f"{name}: {why}")
    raise ConfigError("no transformers architecture takes this model (" + "; ".join(reasons) + ")")


def export_notes(source: str | Path | nn.Module | ModelConfig) -> list[str]:
    """What an export of `source` leaves out or needs from its user (the family's notes)."""
    cfg = source if isinstance(source, ModelConfig) else (
        _model_and_config(source)[1] if isinstance(source, nn.Module) else model_config(rundir.read_config(source)["model"]))
    _, module = export_family(cfg)
    notes = getattr(module, "export_notes", None)
    return list(notes(cfg)) if notes is not None else []


def export_hf(source: str | Path | nn.Module, out: str | Path) -> Path:
    """Write a run directory's (or a model's) weights as a transformers checkpoint folder:
    config.json + model.safetensors. A model with no transformers equivalent is a
    ConfigError naming, per family, the component that has none."""
    model, cfg = _model_and_config(source)
    _, module = export_family(cfg)
    hf_config = module.export_config(cfg)
    tensors = module.export_state(model_state(model), cfg)
    return checkpoint.write_checkpoint(out, hf_config, tensors)
