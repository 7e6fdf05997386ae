"""effigy: make generative vision and language models cheap to run and trustworthy to deploy."""
from effigy.attention import AttentionPlan, apply_ditfastattn, calibrate_plan, remove_ditfastattn
from effigy.checkpoint import load, save
from effigy.core.quant import QuantSpec
from effigy.errors import CheckpointError, EffigyError, QuantizationError
from effigy.models import register_model_class  # noqa: F401  (registers effigy's own model classes for load)
from effigy.nn import QuantConfig, QuantLinear
from effigy.nn.compile import compile
from effigy.nn.quantize import quantize, set_backend, weight_nbytes

__version__ = "0.1.0"

__all__ = [
    "AttentionPlan",
    "CheckpointError",
    "PMKVQCache",
    "EffigyError",
    "QuantConfig",
    "QuantLinear",
    "QuantSpec",
    "QuantizationError",
    "apply_ditfastattn",
    "calibrate_plan",
    "compile",
    "load",
    "quantize",
    "remove_ditfastattn",
    "save",
    "set_backend",
    "weight_nbytes",
]


def __getattr__(name: str):
    """``effigy.PMKVQCache`` without importing transformers' cache code at ``import effigy``."""
    if name == "PMKVQCache":
        from effigy.kvcache.progressive import PMKVQCache

        return PMKVQCache
    raise AttributeError(f"module 'effigy' has no attribute {name!r}")
