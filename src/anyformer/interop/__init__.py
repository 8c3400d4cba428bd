"""Models in and out: Hugging Face checkpoints (interop.hf), ONNX export (interop.onnx).

Engine layer: uses nn, tasks and the bottom; never train, bench or report. transformers,
tokenizers and onnx are optional extras (`pip install anyformer[hf,onnx]`), imported only
inside the functions that need them, with a one-line error saying which extra to install."""
