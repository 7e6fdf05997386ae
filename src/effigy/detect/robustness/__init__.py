"""Robustness of face anti-spoofing to the digital-attack taxonomy (arXiv 2406.03684), and active
challenge-response liveness."""
