"""The model layer: pure torch.nn, no I/O. Importing it registers every component."""
from anyformer.nn import block, heads, norms, positions  # noqa: F401  (registration)
from anyformer.nn import archs, encoders, ffn, mixers, transitions  # noqa: F401  (registration)
from anyformer.nn.model import AnyFormer

__all__ = ["AnyFormer"]
