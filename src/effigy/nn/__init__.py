"""Quantized layers with real packed integer weights, and module replacement by name patterns."""
from effigy.nn.config import QuantConfig
from effigy.nn.quant_linear import BACKENDS, QuantLinear
from effigy.nn.replace import find_targets, replace_modules

__all__ = ["BACKENDS", "QuantConfig", "QuantLinear", "find_targets", "replace_modules"]
