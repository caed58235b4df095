"""The Hugging Face transformers engine (imports torch; loaded only when chosen)."""
