"""Normalisation layers, one module per family; every module here is imported so that its
norms register. Contract: `build("norm", name, dim)`; forward(x [B, L, D], mask=None) -> x.

The names below are re-exported so that `from anyformer.nn.norms import LayerNorm` (the
path of the former single module) keeps working."""
from anyformer.nn.norms.batchnorm import TokenBatchNorm
from anyformer.nn.norms.folding import fold_batchnorm, fold_into
from anyformer.nn.norms.layernorm import LayerNorm
from anyformer.nn.norms.none import NoNorm
from anyformer.nn.norms.prepbn import ProgressiveRepBatchNorm, RepBatchNorm
from anyformer.nn.norms.rmsnorm import RMSNorm
from anyformer.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["LayerNorm", "NoNorm", "ProgressiveRepBatchNorm", "RMSNorm", "RepBatchNorm", "TokenBatchNorm",
           "fold_batchnorm", "fold_into"]
