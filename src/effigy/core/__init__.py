"""Numeric core: quantization specs and arithmetic, bit packing, integer kernels. No model knowledge."""
from effigy.core.quant import (
    EMAObserver,
    MinMaxObserver,
    QuantSpec,
    QuantizationError,
    compute_qparams,
    dequantize,
    fake_quantize,
    quantize,
)
from effigy.core.packing import pack, packed_nbytes, unpack

__all__ = [
    "EMAObserver",
    "MinMaxObserver",
    "QuantSpec",
    "QuantizationError",
    "compute_qparams",
    "dequantize",
    "fake_quantize",
    "pack",
    "packed_nbytes",
    "quantize",
    "unpack",
]
