"""The KTransformers engine (``infer_backend: ktransformers``): CPU/GPU hybrid inference of GGUF weights."""
