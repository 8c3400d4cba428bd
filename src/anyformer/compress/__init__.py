"""Make a chosen model cheaper: drop redundant layers, quantize, prune structurally. Each
method reads a run directory and writes a new ordinary one (`eval`, `bench`, `compare`,
`predict` and `export` take it), measured before and after in the same process."""
from anyformer.compress.job import compress

__all__ = ["compress"]
