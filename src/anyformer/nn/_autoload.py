"""Component packages autoload their modules through the registry's helper."""
from anyformer.registry import import_submodules

__all__ = ["import_submodules"]
