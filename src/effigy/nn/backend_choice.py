"""``backend="auto"``: time the exact matmul paths once per layer shape on this machine and keep the fastest.

Why measure instead of a fixed rule: which path wins depends on the CPU (fbgemm's 8-bit activations
need VNNI, ``torch._int_mm`` is slow without it) and on the layer shape, and the margins are too
small to guess. "Exact" means the integer result equals the reference definition: the int4 kernel is
a candidate for weight-only layers (its bf16 activations are what A16 means), not where activations
are quantized, which it can only simulate.
"""
from __future__ import annotations

import logging
import statistics
import time

import torch

from effigy.errors import QuantizationError

log = logging.getLogger(__name__)

CANDIDATES = ("fbgemm", "int", "int4", "reference")
TIMING_TOKENS = 256
_CHOICES: dict[tuple, str] = {}


def choose_backend(layer) -> str:
    """The fastest exact backend for ``layer``'s shape and specs, timed once per process and cached.

    Args:
        layer: a ``QuantLinear`` (only its shape and specs are read; its weights are not touched).

    Returns:
        The chosen backend's name.
    """
    key = _shape_key(layer)
    if key not in _CHOICES:
        timings = {name: _seconds(layer, name) for name in _exact_candidates(layer)}
        _CHOICES[key] = min(timings, key=timings.get)
        log.info("backend auto for %dx%d w%d: %s (%s)", layer.out_features, layer.in_features, layer.weight_spec.bits,
                 _CHOICES[key], ", ".join(f"{n} {t * 1e3:.2f} ms" for n, t in timings.items()))
    return _CHOICES[key]


def _shape_key(layer) -> tuple:
    act = layer.act_spec
    return (layer.in_features, layer.out_features, layer.weight_spec, act, layer.bias is not None,
            layer.input_divisor is not None, layer.rotated, torch.get_num_threads())


def _exact_candidates(layer) -> list[str]:
    names = []
    for name in CANDIDATES:
        if name == "int4" and layer.act_spec is not None:
            continue
        try:
            layer.check_backend(name)
        except QuantizationError:
            continue
        names.append(name)
    return names


@torch.no_grad()
def _seconds(layer, backend: str, repeats: int = 3) -> float:
    probe = type(layer)(layer.in_features, layer.out_features, layer.weight_spec, layer.act_spec,
                        layer.bias is not None, backend, balanced=layer.input_divisor is not None,
                        rotated=layer.rotated)
    x = torch.randn(TIMING_TOKENS, layer.in_features)
    probe(x)  # warm-up: first calls allocate and pick kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        probe(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
