"""Task heads, one module per family; every module here is imported so that its heads
register. Contract: `(tokens [B, L, D], mask Bool[B, L] | None, hidden_states) -> output`;
`hidden_states` holds every layer's output for heads that pool across layers; such a head
may declare `check_hidden_states(count)`, which the model calls at build with the number of
layer outputs it will pass (model.depth). A head's `problem` class attribute names its
family (classification, lm, forecast).

The names below are re-exported so that `from anyformer.nn.heads import ClsHead` (the path
of the former single module) keeps working."""
from anyformer.nn.heads.classifier import AttentionPoolHead, ClassifierHead, ClsHead, LastHead, MeanHead
from anyformer.nn.heads.forecast import ForecastHead
from anyformer.nn.heads.lm import LMHead
from anyformer.nn.heads.multilayer import MLPClassifierHead, MultiLayerPoolingHead, pool_tokens
from anyformer.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["AttentionPoolHead", "ClassifierHead", "ClsHead", "ForecastHead", "LMHead", "LastHead",
           "MLPClassifierHead", "MeanHead", "MultiLayerPoolingHead", "pool_tokens"]
