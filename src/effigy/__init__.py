"""effigy: make generative vision and language models cheap to run and trustworthy to deploy."""
from effigy.api import load, quantize, save, set_backend, weight_nbytes
from effigy.core.quant import QuantSpec
from effigy.errors import CheckpointError, EffigyError, QuantizationError
from effigy.nn import QuantConfig, QuantLinear

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "EffigyError",
    "QuantConfig",
    "QuantLinear",
    "QuantSpec",
    "QuantizationError",
    "load",
    "quantize",
    "save",
    "set_backend",
    "weight_nbytes",
]
