"""Tasks: datasets + loss + metrics. Every module here is imported so its tasks register."""
from anyformer.registry import import_submodules

import_submodules(__name__, __path__)
