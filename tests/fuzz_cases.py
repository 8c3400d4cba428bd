"""Random model configs drawn from the registry, and the one rule every one of them obeys.

A case is a model config (a preset with small sizes and a few components swapped, or every
part drawn from the registry), a random seed and an input variant (the encoder's example,
shorter, padded, with modality ids, an empty batch, no tokens). Component options are drawn
from each option's declared type, range or Literal choices (`registry.options_schema`, so
from the component's `__init__`), mostly inside them and now and then outside: negative,
zero, past a bound, NaN, infinity, huge where a bound exists, the wrong type. `run_case`
builds the model and runs a training forward, a backward and an eval forward on a tiny
batch; the rule: it runs with finite outputs, or it stops with one AnyformerError of one
line (see `run_case` for the overflow of activations that grew unbounded).

Shared by the CI property test (tests/test_fuzz.py, a fixed budget of examples) and the
long campaign (`make fuzz`, tests/fuzz_campaign.py, thousands of cases in worker processes).

Valid draws stay small: counts of unbounded options (hidden widths, experts, ranks) stop at
`Sizes.largest`. Invalid draws include absurd sizes (1e12, 1e18, 1e30) for every numeric
option: past a declared bound they are range errors, for unbounded sizes the memory guard
(nn/footprint.py) must refuse them before anything is allocated. Sizes between the two,
which fit some machines and not others, are not drawn.
"""
from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

import torch
from hypothesis import strategies as st

import anyformer as af
from anyformer import registry
from anyformer.errors import AnyformerError

MODEL_KINDS = ("mixer", "ffn", "norm", "position", "encoder", "head")
# Values outside any declared range, or of the wrong type, for every kind of option.
NON_FINITE = (math.nan, math.inf, -math.inf)
WRONG_TYPES = ("x", [1, 2], {"a": 1})


@dataclass(frozen=True)
class Sizes:
    """How large the drawn values of unbounded counts may get (CI keeps them small)."""

    largest: int = 8
    dims: tuple[int, ...] = (8, 16, 32)
    depths: tuple[int, ...] = (1, 2, 3)
    lengths: tuple[int, ...] = (4, 8, 16)


CI = Sizes()
CAMPAIGN = Sizes(largest=32, dims=(4, 8, 16, 32, 48), depths=(1, 2, 3, 4), lengths=(2, 4, 8, 16, 24))


# ---------------------------------------------------------------- reading declared ranges

@dataclass(frozen=True)
class Domain:
    """What an option's annotation declares: its base type, bounds, and what else it takes."""

    base: Any  # int, float, bool, str, list, or object (anything else)
    lo: float | None = None
    lo_open: bool = False
    hi: float | None = None
    hi_open: bool = False
    optional: bool = False
    pair: bool = False  # also takes a [h, w] pair of the same
    item: Domain | None = None  # list items
    choices: tuple[Any, ...] = ()  # a Literal's values


def _strip(annotation: Any) -> tuple[Any, list[Any]]:
    meta: list[Any] = []
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        meta += extra
    flat: list[Any] = []
    for m in meta:  # a nested Field keeps its bounds in .metadata
        flat += list(getattr(m, "metadata", [])) or [m]
    return annotation, flat


def domain(annotation: Any, metadata: Any = ()) -> Domain:
    annotation, meta = _strip(annotation)
    meta = list(metadata) + meta
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        members = [domain(a) for a in args if a is not type(None)]
        main = next((m for m in members if m.base in (int, float)), members[0])
        pair = any(m.base is tuple for m in members)
        d = domain_bounds(main, meta)
        return Domain(d.base, d.lo, d.lo_open, d.hi, d.hi_open, type(None) in args, pair, d.item, d.choices)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return Domain(str, choices=typing.get_args(annotation))
    if origin is list:
        return Domain(list, item=domain(typing.get_args(annotation)[0]))
    if origin is tuple:
        return Domain(tuple, item=domain(typing.get_args(annotation)[0]))
    base = annotation if annotation in (int, float, bool, str) else object
    return domain_bounds(Domain(base), meta)


def domain_bounds(d: Domain, meta: list[Any]) -> Domain:
    lo, lo_open, hi, hi_open = d.lo, d.lo_open, d.hi, d.hi_open
    for m in meta:
        if getattr(m, "ge", None) is not None:
            lo, lo_open = m.ge, False
        if getattr(m, "gt", None) is not None:
            lo, lo_open = m.gt, True
        if getattr(m, "le", None) is not None:
            hi, hi_open = m.le, False
        if getattr(m, "lt", None) is not None:
            hi, hi_open = m.lt, True
    return Domain(d.base, lo, lo_open, hi, hi_open, d.optional, d.pair, d.item, d.choices)


@lru_cache(maxsize=None)
def options_of(kind: str, name: str) -> dict[str, tuple[Domain, Any]]:
    """option -> (its domain, its default), for the options a config can set."""
    schema = registry.options_schema(registry.get(kind, name))
    out = {}
    for option, info in schema.model_fields.items():
        d = domain(info.annotation, info.metadata)
        if d.base is object:  # callables (arch 'stack' block_fn): not config values
            continue
        out[option] = (d, None if info.is_required() else info.default)
    return out


# ---------------------------------------------------------------- drawing values

def valid_value(d: Domain, sizes: Sizes) -> st.SearchStrategy:
    """A value inside the declared domain, biased to small sizes."""
    if d.base is bool:
        return st.booleans()
    if d.choices:
        values = st.sampled_from(d.choices)
        return values | st.none() if d.optional else values
    if d.base is int:
        lo = int(d.lo + (1 if d.lo_open else 0)) if d.lo is not None else -2
        hi = int(d.hi - (1 if d.hi_open else 0)) if d.hi is not None else max(lo, 0) + sizes.largest
        values = st.integers(lo, max(lo, min(hi, lo + sizes.largest)))
    elif d.base is float:
        lo = d.lo if d.lo is not None else (-4.0 if d.hi is None else d.hi - 8.0)
        hi = d.hi if d.hi is not None else max(lo, 0.0) + 4.0
        # The bounds themselves (when allowed), round values inside, and anything between.
        typical = [v for v in (lo, hi, (lo + hi) / 2, 0.0, 0.1, 0.5, 1.0, 2.0)
                   if (lo < v or (v == lo and not d.lo_open)) and (v < hi or (v == hi and not d.hi_open))]
        values = st.floats(lo, hi, exclude_min=d.lo_open, exclude_max=d.hi_open, allow_nan=False, allow_infinity=False)
        values = st.sampled_from(typical) | values if typical else values
    elif d.base is list:
        values = st.lists(valid_value(d.item, sizes), min_size=1, max_size=3)
    else:
        return st.nothing()
    if d.pair:
        values = values | st.tuples(values, values).map(list)
    return values | st.none() if d.optional else values


def invalid_value(d: Domain) -> st.SearchStrategy:
    """A value outside the declared domain, of the wrong type, or absurdly large."""
    bad: list[Any] = list(WRONG_TYPES)
    if d.base in (int, float):
        bad += list(NON_FINITE)
        if d.lo is not None:
            bad += [d.lo - 1, d.lo - 1e6] + ([d.lo] if d.lo_open else [])
        else:
            bad += [-(10 ** 18)]
        if d.hi is not None:
            bad += [d.hi + 1] + ([d.hi] if d.hi_open else [])
        # Absurd sizes: past a bound, or for an unbounded size more than any machine holds,
        # which the memory guard (nn/footprint.py) refuses before allocating.
        bad += [10 ** 12, 10 ** 18, 1e30]
        if d.base is int:
            bad += [0.5, 2.5]
    if d.base is list:
        bad += [[-1], ["x"], 3]
    if d.base is bool:
        bad += ["maybe", 2]
    if d.base is str:
        bad = ["zzz", "", 3, None][: 4 if not d.optional else 3]
    if not d.optional:
        bad.append(None)
    return st.sampled_from(bad)


def string_value(default: Any) -> st.SearchStrategy:
    # A plain str option (no Literal of its choices): the default is the one valid value
    # known here.
    return st.just(default) if isinstance(default, str) else st.nothing()


@st.composite
def options_for(draw: st.DrawFn, kind: str, name: str, sizes: Sizes, corrupt: bool) -> dict[str, Any]:
    """Some options of a component: declared examples first, then random ones."""
    cls = registry.get(kind, name)
    opts: dict[str, Any] = dict(getattr(cls, "example_options", {}) or {}) if draw(st.booleans()) else {}
    table = options_of(kind, name)
    for option, (d, default) in table.items():
        if not draw(st.integers(0, 3)) == 0:  # about one option in four
            continue
        if d.base is str and not d.choices:
            if isinstance(default, str):
                opts[option] = draw(string_value(default))
        else:
            opts[option] = draw(valid_value(d, sizes))
    if corrupt and table:
        option = draw(st.sampled_from(sorted(table)))
        opts[option] = draw(invalid_value(table[option][0]))
    return opts


# ---------------------------------------------------------------- drawing configs

@lru_cache(maxsize=None)
def preset_parts(preset: str) -> dict[str, str]:
    """kind -> component name of a preset (its components' options merge by name)."""
    cfg = af.model_config(preset)
    return {k: getattr(cfg, k).name for k in (*MODEL_KINDS, "arch") if getattr(cfg, k) is not None}


def _spec(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, **opts}


@st.composite
def model_config(draw: st.DrawFn, sizes: Sizes = CI) -> dict[str, Any]:
    """A model config dict for `af.create`: a preset or a free composition, small sizes, and
    in two of five one value outside its declared range."""
    corrupt_where = draw(st.sampled_from(["none", "none", "none", "option", "field"]))
    config: dict[str, Any] = {}
    from_preset = draw(st.booleans())
    if from_preset:
        preset = draw(st.sampled_from(af.list_presets()))
        config["preset"] = preset
        parts = preset_parts(preset)
        swapped = draw(st.sets(st.sampled_from(("mixer", "ffn", "norm", "position", "head")), max_size=2))
    else:
        parts = {}
        swapped = {"mixer", "ffn", "norm", "position", "encoder", "head"}
        if draw(st.integers(0, 3)) == 0:
            swapped.add("arch")
    # The preset's own parts may get options too (merged into the preset's by name).
    tuned = {k for k in parts if k not in swapped and draw(st.integers(0, 3)) == 0}
    touched = sorted(swapped | tuned)
    corrupt_kind = draw(st.sampled_from(touched)) if corrupt_where == "option" and touched else None
    for kind in touched:
        name = parts[kind] if kind in tuned else draw(st.sampled_from(registry.list_components(kind)))
        config[kind] = _spec(name, draw(options_for(kind, name, sizes, corrupt=kind == corrupt_kind)))
    if from_preset and parts.get("encoder") == "patches" and draw(st.booleans()):
        # Smaller images keep image presets fast; also a grid the mixers must fit.
        config["encoder"] = {"name": "patches", "image_size": draw(st.sampled_from([8, 16])),
                             "patch_size": draw(st.sampled_from([2, 4]))}
    # Model fields: small, valid, or one of them corrupted.
    heads = draw(st.sampled_from([1, 2, 4]))
    dim = draw(st.sampled_from([d for d in sizes.dims if d % heads == 0] or [heads * 4]))
    fields: dict[str, Any] = {
        "dim": dim, "heads": heads, "depth": draw(st.sampled_from(sizes.depths)),
        "max_len": draw(st.sampled_from(sizes.lengths)),
    }
    if draw(st.booleans()):
        fields["causal"] = draw(st.booleans())
        fields["layout"] = draw(st.sampled_from(["sequential", "parallel", "macaron"]))
        fields["dropout"] = draw(st.sampled_from([0.0, 0.1, 0.5]))
        fields["drop_path"] = draw(st.sampled_from([0.0, 0.2]))
        fields["path_scale"] = draw(st.booleans())
        fields["final_norm"] = draw(st.booleans())
    if draw(st.integers(0, 5)) == 0:
        fields["schedule"] = draw(st.sampled_from([{"share": 1}, {"repeat": 2}, {"drop": [0]}, {"prune": ["0.ffn"]},
                                                   {"transition": "distill"}]))
    if corrupt_where == "field":
        field = draw(st.sampled_from(["dim", "heads", "depth", "max_len", "dropout", "drop_path", "causal", "layout"]))
        fields[field] = draw(st.sampled_from({
            "dim": [0, -1, 7, 2.5, "x"], "heads": [0, -2, 3, math.nan], "depth": [0, -1, 1.5],
            "max_len": [0, -8], "dropout": [1.0, -0.1, math.nan, math.inf], "drop_path": [1.0, math.inf],
            "causal": ["sometimes"], "layout": ["diagonal"],
        }[field]))
    if from_preset and "norm" in config:
        config["norm"]["placement"] = draw(st.sampled_from(["pre", "post", "peri"]))
    return {**config, **fields}


INPUT_VARIANTS = ("example", "example", "example", "short", "padded", "modalities", "empty_batch", "empty_length")


@st.composite
def cases(draw: st.DrawFn, sizes: Sizes = CI) -> dict[str, Any]:
    """One fuzz case: config, torch seed, batch size and input variant."""
    return {"config": draw(model_config(sizes)), "seed": draw(st.integers(0, 2 ** 16)),
            "batch": draw(st.sampled_from([1, 2, 3])), "input": draw(st.sampled_from(INPUT_VARIANTS))}


# ---------------------------------------------------------------- running a case

def _slice(x: Any, index: Any) -> Any:
    if isinstance(x, dict):
        return {k: _slice(v, index) for k, v in x.items()}
    return x[index]


def make_input(model: torch.nn.Module, case: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The encoder's own example input, then the case's variant of it."""
    x = model.encoder.example_input(batch=case["batch"])
    kwargs: dict[str, Any] = {}
    variant = case["input"]
    is_ids = isinstance(x, torch.Tensor) and not x.is_floating_point()
    if variant == "empty_batch":
        x = _slice(x, slice(0, 0))
    elif variant == "empty_length" and isinstance(x, torch.Tensor) and x.dim() in (2, 3) and (is_ids or x.dim() == 3):
        x = x[:, :0]
    elif variant == "short" and is_ids and x.shape[1] > 1:
        x = x[:, : max(1, x.shape[1] // 2)]
    elif variant == "padded" and is_ids and x.shape[1] > 1:
        mask = torch.ones(x.shape, dtype=torch.bool)
        mask[0, x.shape[1] // 2:] = False
        kwargs["mask"] = mask
    elif variant == "modalities" and is_ids and getattr(model, "modalities", None):
        kwargs["modality_ids"] = torch.randint(0, model.modalities, x.shape)
    return x, kwargs


def _outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _outputs(o)]
    return []


def _finite(out: Any) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in _outputs(out) if t.is_floating_point() or t.is_complex())


# Activations past this before anything overflowed float32 (3.4e38): the growth of an
# untrained stack, not a NaN some module made from ordinary values.
GROWTH = 1e9
GREW = f"overflow of activations already past {GROWTH:g} (an untrained stack that bounds nothing on its residual stream)"


def _batch_norms(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if hasattr(m, "running_var") and isinstance(getattr(m, "momentum", None), float)]


class Probe:
    """Forward hooks on every module: the first one (in execution order, innermost first)
    whose output is non-finite, and the largest magnitude any module output reached before."""

    def __init__(self) -> None:
        self.module: str | None = None
        self.peak = 0.0

    def attach(self, model: torch.nn.Module) -> None:
        for name, module in model.named_modules():
            module.register_forward_hook(self._hook(name or type(module).__name__))

    def _hook(self, name: str) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if self.module is not None:
                return
            if not _finite(output):
                self.module = f"{name} ({type(module).__name__})"
                return
            sizes = [float(t.detach().abs().max()) for t in _outputs(output) if t.is_floating_point() and t.numel()]
            self.peak = max([self.peak, *sizes])
        return hook


def settle_batch_statistics(model: torch.nn.Module, x: Any, kwargs: dict[str, Any]) -> None:
    """Set running statistics (BatchNorm's) from this batch before the eval pass: one step
    leaves them near their init (mean 0, var 1), and a deep pre-norm stack that normalises
    with those in eval grows its residual stream layer after layer until it overflows, which
    says nothing about the code. A training run's statistics have converged; momentum 1 for
    one pass (inside every declared range) gives the converged value on this batch."""
    stats = _batch_norms(model)
    if not stats:
        return
    saved = [m.momentum for m in stats]
    try:
        for m in stats:
            m.momentum = 1.0
        with torch.no_grad():
            model(x, **kwargs)
    finally:
        for m, momentum in zip(stats, saved):
            m.momentum = momentum


def _protocol(case: dict[str, Any], probe: Probe | None = None) -> str:
    """Build and run the case: '' when every output is finite, else the phase that was not
    ('training' or 'eval'). A `probe` watches every module of the model."""
    torch.manual_seed(case["seed"])
    model = af.create(case["config"])
    if probe is not None:
        probe.attach(model)
    x, kwargs = make_input(model, case)
    model.train()
    out = model(x, **kwargs)
    if not _finite(out):
        return "training"
    loss = sum(t.double().sum() for t in _outputs(out) if t.is_floating_point())
    if isinstance(loss, torch.Tensor) and loss.requires_grad:
        loss.backward()
    settle_batch_statistics(model, x, kwargs)
    model.eval()
    with torch.no_grad():
        out = model(x, **kwargs)
    return "" if _finite(out) else "eval"


def run_case(case: dict[str, Any]) -> tuple[str, str]:
    """('ran', '') when the model builds and runs train forward, backward and eval forward
    (running statistics settled on the batch first) with finite outputs; ('clean', message)
    for one AnyformerError of one line; otherwise ('crash', what happened): any other
    exception, a message of several lines, a non-finite output.

    A non-finite output is run again under a Probe. When some module output had already
    grown past GROWTH before the first non-finite one, the case ran ('ran', GREW): an
    untrained stack whose residual stream nothing bounds (pure RepBN's eta * x, BatchNorm
    running statistics in eval, a quadratic GLU) grows layer after layer, a property of the
    configuration. A NaN
    or infinity a module makes from ordinary inputs (0 / 0, an infinite table, an
    unstabilised exp) is a crash, named by that module."""
    try:
        failed = _protocol(case)
        if not failed:
            return "ran", ""
        probe = Probe()
        _protocol(case, probe)
        if probe.module is not None and probe.peak >= GROWTH:
            return "ran", GREW
        where = f" first in {probe.module}, activations up to {probe.peak:.3g} before" if probe.module else ""
        return "crash", f"non-finite output in {failed} mode{where}"
    except AnyformerError as err:
        text = str(err)
        if "\n" in text or not text.strip():
            return "crash", f"{type(err).__name__} without one line: {text!r}"
        return "clean", text
    except Exception as err:  # noqa: BLE001 - anything else is what the fuzz looks for
        return "crash", f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
