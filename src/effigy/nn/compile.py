"""``effigy.compile(model)``: a quantized (or float) model compiled onto the CPU's fast integer kernels.

Why a function of its own, not a bare ``torch.compile``: PyTorch reaches its fast CPU integer GEMMs only
through inductor, and only for a graph of a given shape (symmetric per-token int8 activations,
``torch._int_mm`` on an int8 weight constant, then the scales and the bias). This function puts every
quantized layer that can run so on that graph (:class:`~effigy.nn.backends.GraphInt8Backend`: 8-bit weights
as one int8 matrix, the same bytes as the packed grid), leaves 4-bit layers packed (``int``: unpacked
inside the graph, so the held bytes stay 4-bit; ``int4``: PyTorch's int4 kernel), and picks inductor's
settings for this CPU, measured (docs/kernels.md, benchmarks/results/checks/compiled_int8_lowering.md):

- CPUs with VNNI (measured on an AMD EPYC with AVX512-VNNI): the fused ``_int_mm`` graph, no freezing. There
  freezing lowered the graph to oneDNN's ``qlinear_pointwise``, which took 29.6 s a call against 7.2 ms, and
  freezing with max-autotune failed to lower it. On AMX CPUs freezing and max-autotune (C++ GEMM templates on
  AMX int8 tiles) may win; ask for them (``freezing=True, max_autotune=True``): a compile that fails with them
  falls back to the default with one logged line.
- CPUs without VNNI: ``torch._int_mm`` has no fast kernel there; quantized layers keep their backend
  (logged), and the rest of the graph is compiled.

Calls run under ``torch.no_grad()`` (freezing needs it; a compiled quantized model is for inference).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch
from torch import nn

from effigy.core import kernels
from effigy.errors import QuantizationError
from effigy.nn.quant_linear import QuantLinear
from effigy.nn.quantize import backends_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompileSettings:
    """Inductor's settings for one CPU, and why."""

    isa: str
    freezing: bool
    max_autotune: bool
    reason: str

    def inductor_config(self) -> dict:
        """What :func:`torch._inductor.config.patch` sets around each call (freezing is read at compile time
        from the global config, not from ``torch.compile(options=...)``)."""
        config = {"freezing": self.freezing}
        if self.max_autotune:
            config.update(max_autotune=True, max_autotune_gemm_backends="CPP,ATEN")
        return config


def compile_settings(freezing: bool | None = None, max_autotune: bool | None = None) -> CompileSettings:
    """The settings for this CPU (``None``: effigy's measured choice; a bool overrides it).

    Measured (benchmarks/results/checks/compiled_int8_lowering.md, an AMD EPYC with AVX512-VNNI): the fused
    ``_int_mm`` graph without freezing ran 4.3x fp32 eager on one DiT-XL/2 layer; with freezing, oneDNN's int8
    linear took 29.6 s a call; with freezing and max-autotune this graph failed to lower. Freezing and
    max-autotune stay off by default on every CPU; on AMX they are worth trying (``freezing=True``), and a
    compile that fails with them falls back (:class:`CompiledModel`)."""
    isa = kernels.cpu_isa_class()
    if isa == "AMX":
        reason = "AMX: fused torch._int_mm; freezing / max-autotune not measured faster with this graph here yet"
    elif kernels.cpu_has_vnni():
        reason = "VNNI without AMX: fused torch._int_mm; freezing off (oneDNN's int8 linear measured 29.6 s a call)"
    else:
        reason = "no VNNI: torch._int_mm has no fast kernel here; quantized layers keep their backend"
    return CompileSettings(isa, bool(freezing), bool(max_autotune), reason)


class CompiledModel(nn.Module):
    """A model compiled by :func:`compile`: called like the model (under ``no_grad`` and this CPU's inductor
    settings); attributes the model has (``config``, ``dtype``, ...) read through."""

    def __init__(self, model: nn.Module, settings: CompileSettings, **compile_kwargs) -> None:
        super().__init__()
        self.model = model
        self.compiled = torch.compile(model, **compile_kwargs)
        self.settings, self.compile_kwargs = settings, compile_kwargs

    def forward(self, *args, **kwargs):
        from torch._inductor import config

        try:
            with torch.no_grad(), config.patch(self.settings.inductor_config()), _enough_recompiles():
                return self.compiled(*args, **kwargs)
        except Exception as error:  # torch's compile errors have no common base; only a failed lowering is retried
            if not (self.settings.freezing or self.settings.max_autotune) or not _failed_lowering(error):
                raise
            log.warning("compiling with freezing / max-autotune failed (%s); compiling without them",
                        str(error).split("\n")[0][:120])
            self.settings = replace(self.settings, freezing=False, max_autotune=False,
                                    reason=f"{self.settings.reason}; freezing / max-autotune failed to compile")
            torch._dynamo.reset()
            self.compiled = torch.compile(self.model, **self.compile_kwargs)
            return self.forward(*args, **kwargs)

    @staticmethod
    def uncompiled(model: nn.Module) -> nn.Module:
        """The model inside ``model`` if it is a compiled one, else ``model`` (what holds the bytes)."""
        return model.model if isinstance(model, CompiledModel) else model

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


def _enough_recompiles():
    """Dynamo's limit on compiled variants of one code object, raised to at least 64 during a call.

    Every model of one class shares its ``forward`` code object, and dynamo's default limit (8) counts the
    graphs of all of them: an FP, a W8A8 and a W4A8 copy at a few batch sizes pass it, and past it a call
    silently runs eagerly (measured: a bench's "compiled" rows timing eager code)."""
    limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch._dynamo.config.patch(recompile_limit=limit)


def _failed_lowering(error: Exception) -> bool:
    """Whether ``error`` is inductor failing to compile the graph (what freezing / max-autotune can cause)."""
    kind = type(error).__name__
    return "Inductor" in kind or "BackendCompilerFailed" in kind


def compile(model: nn.Module, freezing: bool | None = None, max_autotune: bool | None = None,
            **compile_kwargs) -> CompiledModel:
    """Compile ``model`` onto this CPU's fast kernels.

    Args:
        model: a model quantized by :func:`effigy.quantize` (or loaded by :func:`effigy.load`), or a float model.
        freezing: inductor's freezing (weights become constants; the int8 graph is lowered to oneDNN); off by
            default (measured slower or failing; see :func:`compile_settings`).
        max_autotune: inductor's GEMM autotuning with the C++ / ATen backends (AMX int8 tiles); off by default.
        compile_kwargs: passed to ``torch.compile`` (``dynamic``, ``fullgraph``, ...).

    Returns:
        The compiled model: call it like ``model``. Compilation happens at the first call (seconds to minutes);
        ``compiled.settings`` says which inductor settings were chosen and why.
    """
    settings = compile_settings(freezing, max_autotune)
    moved = to_graph_backends(model, settings)
    log.info("effigy.compile on %s: freezing %s, max-autotune %s (%s); %d quantized layers on graph-int8",
             settings.isa, settings.freezing, settings.max_autotune, settings.reason, moved)
    return CompiledModel(model, settings, **compile_kwargs)


def to_graph_backends(model: nn.Module, settings: CompileSettings) -> int:
    """Put every quantized layer that can run on :class:`~effigy.nn.backends.GraphInt8Backend` there (where the
    CPU has a fast ``_int_mm``); 4-bit layers stay packed (``int4`` kept; others on ``int``, unpacked inside the
    graph). Returns how many layers are on graph-int8."""
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    if layers and not kernels.cpu_has_vnni():
        log.warning("no VNNI on this CPU: torch._int_mm is slow here, so %d quantized layers keep their backends "
                    "(%s) and only the rest of the model is compiled", len(layers), ", ".join(backends_of(model)))
        return 0
    moved = 0
    for layer in layers:
        target = "graph-int8" if layer.weight_spec.bits == 8 else ("int4" if layer.backend == "int4" else "int")
        try:
            layer.backend = target
            moved += target == "graph-int8"
        except QuantizationError as why:
            log.info("%s stays on backend %s: %s", layer.extra_repr(), layer.backend, why)
    return moved
