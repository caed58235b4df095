"""The vLLM engine (``infer_backend: vllm``): vLLM's in-process async engine on one or more GPUs."""
