"""Compression stages as resumable steps: one `anyformer.compress` call from a run directory
into a new one, recorded in that directory's stage.json with the measurements (quality,
parameters, size on disk, weights in memory, latency). A finished stage is read back as long
as its method, options and input (the input run's config and weights, by digest) are
unchanged; a stage killed half-way, or made from another input, is made again. Shared by the
pipeline (train -> compress -> eval) and the studies."""
from __future__ import annotations

import hashlib
import shutil
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from anyformer import catalog, rundir
from anyformer.compress.job import METHODS, check_method, compress
from anyformer.compress.measure import COSTS
from anyformer.errors import ConfigError
from anyformer.nn.quantization import storage_bytes

STAGE = "stage.json"
# The files whose bytes make a run what a stage reads: its config (with a quantization
# policy, if any) and its weights.
INPUT_FILES = ("config.yaml", "model.safetensors")


@dataclass
class Step:
    """One compression method with its options, as a config's `compress:` entry gives it."""

    method: str
    options: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.method}({shown})"


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def type_problem(hint: Any, value: Any) -> str | None:
    """Why `value` (from YAML) does not fit the annotation `hint`, or None when it does. Strict:
    a bool is no number and a quoted number no float; text is still taken for an annotation
    that reads it as something else than a number (a path). An annotation pydantic cannot
    check (a module, a tensor) accepts anything: the method checks it when it runs."""
    try:
        adapter = TypeAdapter(hint)
    except Exception:  # noqa: BLE001  (an arbitrary class: no schema to check against)
        return None
    try:
        adapter.validate_python(value, strict=True)
        return None
    except ValidationError as err:
        if isinstance(value, str):
            try:
                read = adapter.validate_python(value)
            except ValidationError:
                pass
            else:
                if not isinstance(read, (bool, int, float)):
                    return None
        return err.errors()[0]["msg"].rstrip(".")


def parse_steps(section: Any, where: str = "compress") -> list[Step]:
    """A config's `compress:` section -> its steps, every entry checked before any work: a
    list of mappings {method: NAME, ...options}, each method known (did-you-mean), each option
    one the method takes and of the type its apply annotates. Errors name the entry's path
    (`compress[1].neurons_fraction`). A bare method name stands for {method: NAME}."""
    if not isinstance(section, list):
        raise ConfigError(f"{where}: expected a list of steps, e.g. [{{method: prune, neurons_fraction: 0.25}}, "
                          f"{{method: quantize}}], got {type(section).__name__} {section!r}")
    steps = []
    for i, entry in enumerate(section):
        path = f"{where}[{i}]"
        if isinstance(entry, str):
            entry = {"method": entry}
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: expected a mapping {{method: NAME, ...options}}, got {type(entry).__name__} {entry!r}")
        if "method" not in entry:
            raise ConfigError(f"{path}: needs a method, one of {', '.join(sorted(METHODS))} (e.g. {{method: quantize}})")
        method = entry["method"]
        if not isinstance(method, str):
            raise ConfigError(f"{path}.method: expected a method name, one of {', '.join(sorted(METHODS))}, got {method!r}")
        options = {str(k): v for k, v in entry.items() if k != "method"}
        check_method(method, options, where=f"{path}.")
        try:
            hints = typing.get_type_hints(METHODS[method])
        except Exception:  # noqa: BLE001  (an annotation that does not resolve: leave it to the method)
            hints = {}
        for key, value in options.items():
            problem = type_problem(hints[key], value) if key in hints else None
            if problem is not None:
                raise ConfigError(f"{path}.{key}: {problem} (method {method!r} takes {_type_name(hints[key])}), got {value!r}")
        steps.append(Step(method, options))
    return steps


def run_digest(run: Path) -> str:
    """SHA-256 of the run's config and weights: what a stage made from it depends on."""
    digest = hashlib.sha256()
    for name in INPUT_FILES:
        path = run / name
        digest.update(name.encode())
        if path.is_file():
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def weights_mb(run: Path) -> float:
    """MiB the run's loaded model holds in parameters and buffers (each tensor once): a
    quantized run's int data, scales and zero points, which its float file on disk is not."""
    model, _ = catalog.load_run(run)
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return round(sum(storage_bytes(t) for t in tensors.values()) / 2**20, 4)


def finished_stage(out: Path, step: Step, digest: str) -> dict[str, Any] | None:
    """The stage's record when `out` holds this step made from the input of `digest`."""
    marker = out / STAGE
    if not marker.is_file():
        return None
    record = rundir.read_json(marker)
    same = (record.get("method") == step.method and record.get("options") == rundir.jsonable(step.options)
            and record.get("input_digest") == digest)
    return record if same else None


def run_stage(source: Path, step: Step, out: Path, device: str = "auto", data: str | None = None) -> tuple[dict[str, Any], bool]:
    """(the stage's record, True when it was made now): `step` applied to run `source` into
    run directory `out`, or read back from out/stage.json when it was made from this input
    with these options. The record holds compress's before / after measurements, each with
    weights_mb added, and the method's notes."""
    source, out = Path(source), Path(out)
    digest = run_digest(source)
    record = finished_stage(out, step, digest)
    if record is not None:  # where the runs are now (a moved or copied folder reads back the same)
        return {**record, "from": str(source), "run": str(out)}, False
    if out.exists():  # a killed stage, or one made from another input: the pipeline's own folder
        shutil.rmtree(out)
    result = compress(source, step.method, out, data=data, device=device, **step.options)
    record = {"method": step.method, "options": step.options, "from": str(source), "run": str(out),
              "input_digest": digest, "metric": result["metric"], "higher_is_better": result["higher_is_better"],
              "before": {**result["before"], "weights_mb": weights_mb(source)},
              "after": {**result["after"], "weights_mb": weights_mb(out)}, "notes": result["notes"]}
    rundir.atomic_write_json(out / STAGE, record)
    return rundir.read_json(out / STAGE), True  # as a later read gives it (JSON), so reruns compare equal


def quality_keys(measured: dict[str, Any]) -> list[str]:
    """The quality metrics of a before / after measurement (everything but the costs)."""
    return [k for k in measured if k not in COSTS and k != "weights_mb"]
