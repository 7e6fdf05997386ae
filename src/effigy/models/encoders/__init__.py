"""Pretrained encoders loaded offline: the MiniLM text encoder and the causal LMs (SmolLM2, any GGUF or folder)."""
