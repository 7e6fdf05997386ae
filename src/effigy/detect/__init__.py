"""Detectors of what generators produce and of presentation attacks: face anti-spoofing (``fas``), deepfake
detection in the AuthGuard style (``deepfake``), the digital-attack harness with active liveness
(``robustness``); ``batches`` maps a detector over face batches."""
