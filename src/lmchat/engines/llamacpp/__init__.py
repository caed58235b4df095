"""The llama.cpp engine (``infer_backend: llamacpp``): GGUF models through ``llama-cpp-python``."""
