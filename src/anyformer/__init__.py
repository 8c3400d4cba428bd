"""anyformer: build any Transformer variant from interchangeable parts, train it, and
measure what each design choice buys and costs.

    import anyformer as af
    model = af.create("vit", num_classes=10)
    mixer = af.build("mixer", "linear", dim=128, heads=4, max_len=512)
    af.list_components("mixer")
    model, config = af.from_hf("path/to/hf-checkpoint")   # a local Hugging Face checkpoint
    af.predictor("runs/bert-text-csv")(["a new sentence"])  # a trained run on raw inputs
    af.pipeline("configs/digits-compress.yaml", "runs/digits-compress")  # train -> compress -> eval
    af.search("digits", "space.yaml", objectives="quality,latency", trials=30, workers=2, out="runs/search")
    af.study("train-large-then-compress", task="digits", sizes="32x1,64x2", budget_s=30, out="runs/tltc")
"""
from __future__ import annotations

# The catalog first: it registers every component before anything is looked up.
from anyformer.catalog import create, load_run as load
from anyformer.compress import compress
from anyformer.config import ModelConfig, model_config
from anyformer.errors import AnyformerError, ConfigError, DataError, ShapeError, TrainingError
from anyformer.infer.predict import Predictor, predictor
from anyformer.interop.hf.convert import from_hf
from anyformer.presets import list_presets
from anyformer.registry import build, list_components, register
from anyformer.search import search
from anyformer.studies import continual, pipeline, study

__version__ = "0.1.0"

__all__ = [
    "AnyformerError", "ConfigError", "DataError", "ShapeError", "TrainingError", "ModelConfig", "Predictor",
    "build", "compress", "continual", "create", "from_hf", "list_components", "list_presets", "load", "model_config", "pipeline", "predictor", "register", "search", "study",
]
