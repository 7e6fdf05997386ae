"""Numeric core: quantization specs and arithmetic, bit packing, integer kernels. No model knowledge."""
from effigy.core.packing import pack, packed_nbytes, unpack
from effigy.core.quant import (
    EMAObserver,
    MinMaxObserver,
    QuantizationError,
    QuantSpec,
    compute_qparams,
    dequantize,
    fake_quantize,
    quantize,
)

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
