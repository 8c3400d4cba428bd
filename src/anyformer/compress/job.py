"""`anyformer compress RUN --method M --out RUN2` / `af.compress`: load a run, apply one
method, write the result as an ordinary run directory, and measure both in this process.
The input run is never written to."""
from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import yaml

from anyformer import catalog, rundir
from anyformer.compress import drop, fuse, prune, quantize
from anyformer.compress.data import judged
from anyformer.compress.distill import apply as distill_apply
from anyformer.compress.measure import COSTS, measure
from anyformer.compress.token_filter import apply as token_filter_apply
from anyformer.errors import ConfigError, suggest, unknown
from anyformer.runtime import resolve_device

# method name -> apply(model, model config dict, judged data, device, **options)
#   -> (compressed model, its model config dict, notes)
METHODS: dict[str, Callable[..., tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]]] = {
    "drop": drop.apply, "quantize": quantize.apply, "prune": prune.apply,
    "token-filter": token_filter_apply, "distill": distill_apply,
    "fuse": fuse.apply}
# What the job was given that a method may take by naming it among its parameters (the input
# run, --out, --data): no option of the user's. Distill keeps its training runs under --out.
CONTEXT = ("run", "out", "data")
# Files of a run the compressed run keeps as they are: what predict needs of the task.
KEPT = ("preprocessing.json", "split.safetensors", "tokenizer.json")


def _check_out(run: Path, out: Path) -> None:
    if out.resolve() == run.resolve():
        raise ConfigError(f"--out {out} is the input run; compression writes a new run directory and never changes the input")
    if (out / "model.safetensors").exists():
        raise ConfigError(f"{out} already holds a model; choose another --out (its files are kept)")


def check_method(method: str, options: Iterable[str] = (), where: str = "") -> list[str]:
    """The options `method` takes (its apply's parameters after model, config, data and
    device); a ConfigError for an unknown method or an option it does not take. `where`
    (a config path such as 'compress[1].') starts the message of an error in a config file."""
    if method not in METHODS:
        error = unknown("compression method", method, list(METHODS))
        raise (ConfigError(f"{where}method: {error}") if where else error)
    accepted = [p for p in inspect.signature(METHODS[method]).parameters][4:]
    accepted = [p for p in accepted if p not in CONTEXT]
    stray = [o for o in options if o not in accepted]
    if stray:
        subject = f"{where}{stray[0]}: option" if where else f"option {stray[0]!r}"
        raise ConfigError(f"{subject} does not apply to method {method!r}{suggest(stray[0], accepted)}; its options: {', '.join(accepted) or 'none'}")
    return accepted


def compress(run: str | Path, method: str, out: str | Path, data: str | None = None, device: str = "auto",
             **options: Any) -> dict[str, Any]:
    """Compress run directory `run` by `method` into `out`; the before/after measurements
    (also written to out/compress.json)."""
    check_method(method, options)
    run, out = Path(run), Path(out)
    _check_out(run, out)
    dev = resolve_device(device)
    model, config = catalog.load_run(run)
    model.to(dev)
    judge = judged(config, run, model, dev, data)
    before = measure(model, judge, dev, run / "model.safetensors")
    named = list(inspect.signature(METHODS[method]).parameters)[4:]
    context = {k: v for k, v in (("run", run), ("out", out), ("data", data)) if k in named}
    model, model_cfg, notes = METHODS[method](model, config["model"], judge, dev, **context, **options)
    # A quantization policy is applied at load, over the float weights (catalog.load_run).
    quantization = notes.pop("quantization", None)
    new_config = {**config, "model": model_cfg, **({"quantization": quantization} if quantization else {}),
                  "compressed": {"from": str(run.resolve()), "method": method, "options": options,
                                 **({"data": str(data)} if data is not None else {})}}
    out.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        if (run / name).is_file():
            shutil.copyfile(run / name, out / name)
    rundir.atomic_write_text(out / "config.yaml", yaml.safe_dump(new_config, sort_keys=False))
    rundir.save_weights(model, out / "model.safetensors", {"compressed": method})
    reloaded, _ = catalog.load_run(out)
    reloaded.to(dev)
    after = measure(reloaded, judge, dev, out / "model.safetensors")
    result = {"method": method, "options": options, "metric": judge.metric, "higher_is_better": judge.higher_is_better,
              "before": before, "after": after, "notes": notes}
    rundir.atomic_write_json(out / "compress.json", result)
    summary = rundir.read_json(run / "summary.json") if (run / "summary.json").exists() else {}
    if judge.task is not None:  # eval / compare / predict read the run's reported numbers from here
        quality = {k: v for k, v in after.items() if k not in COSTS}
        rundir.atomic_write_json(out / "summary.json", {**summary, "final": {"test": quality},
                                                        "compressed": method, "parameters": after["parameters"]})
    return result
