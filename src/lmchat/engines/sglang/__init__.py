"""The SGLang engine (``infer_backend: sglang``): ``sglang.Engine`` in-process, through its async API."""
