"""Model files: the embedded default model and GGUF conversion (transformers is imported only when used)."""
