"""Using a trained or imported run: generation now (predict comes next). Engine layer: it
reads runs through catalog and tokenizers through tasks, never train, bench or report."""
