"""Errors effigy raises for bad input. Each message says what was wrong and what to do instead.

Every user-facing raise in effigy is one of these; the CLI turns any of them into one line and exit
code 2.
"""


class EffigyError(ValueError):
    """Base class: catching it at the CLI turns any bad input into one clear line."""


class QuantizationError(EffigyError):
    """A quantization request that cannot be honoured (bit-width, granularity, layer type, budget)."""


class CheckpointError(EffigyError):
    """A checkpoint that is missing, corrupt, a pickle, or made for another model."""


class PlanError(EffigyError):
    """A DiTFastAttn plan that does not fit the model or the sampling run it is applied to."""


class KVBudgetError(EffigyError):
    """A KV-cache memory budget or allocation that cannot hold the requested context."""


class UnknownNameError(EffigyError):
    """A name that no registry entry has (recipe, zoo model, world, cache, variant)."""


class ModelError(EffigyError):
    """A model called outside what it supports (sampling steps, prediction type, call order)."""


class WorldError(EffigyError):
    """An offline data world asked for a split, kind or scene it does not have."""


class MetricError(EffigyError):
    """A metric or statistic given inputs it cannot summarise (too few items, unequal lengths)."""


class BenchError(EffigyError):
    """A benchmark asked for settings it cannot honour, or a kernel that disagrees with exact arithmetic."""


class ScoreMatrixError(EffigyError):
    """A FlashEval score matrix or prompt subset that is malformed, too small, or made for other prompts."""


class SparseError(EffigyError):
    """Sparse tensors or sparse layers that do not fit together."""


class AdaptationError(EffigyError):
    """A test-time adaptation asked for with target samples it cannot use (none, unlabelled, one class)."""


class DatasetError(EffigyError):
    """A team's dataset folder or index that does not follow the layout it claims (a missing split, an empty
    class, an unreadable index)."""


class ImageError(WorldError):
    """An image file or upload that is not a PNG, JPEG, WebP or BMP of sane size (decided by its bytes)."""
