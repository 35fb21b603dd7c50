"""Data: vocabulary, simplification, sources, tokenizer, datasets and batches."""
