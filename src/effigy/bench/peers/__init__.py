"""Other libraries' methods as benchmark rows: torchao, quantize_dynamic, bf16, diffusers' caching hooks."""
