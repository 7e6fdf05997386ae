"""Detectors of what generators produce and of presentation attacks: face anti-spoofing (``fas``)."""
