"""Registered components, one module per family; every module here is imported."""
from anyformer.registry import import_submodules

import_submodules(__name__, __path__)
