"""VAR (next-scale prediction) on the digits world: the multi-scale VQ tokenizer and the transformer."""
