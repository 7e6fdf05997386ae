"""Errors effigy raises for bad input. Each message says what was wrong and what to do instead."""


class EffigyError(ValueError):
    """Base class: catching it at the CLI turns any bad input into one clear line."""


class QuantizationError(EffigyError):
    """A quantization request that cannot be honoured (bit-width, granularity, layer type, budget)."""


class CheckpointError(EffigyError):
    """A checkpoint that is missing, corrupt, a pickle, or made for another model."""
