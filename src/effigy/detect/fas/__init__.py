"""Face anti-spoofing (arXiv 2503.22984): the prototype base model, its optimal-transport test-time adaptors
and their baselines."""
