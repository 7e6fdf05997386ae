"""The quantization recipes at real architecture sizes, with random weights: speed and memory only.

No DiT-XL-sized weights ship offline, and none are needed to measure what a recipe costs and saves:
the matmul shapes, the bytes and the kernels are those of the real model. Quality is not claimed
here; the output error relative to fp32 on the same random model is reported so that a fast but
wrong path shows. Every variant is built from the same seeded fp32 model, the calls are timed
interleaved (warm-up, then ``repeats`` rounds over all variants), and memory is measured twice:
bytes held (distinct tensor storages, :func:`effigy.memory.held_bytes`) in this process, and peak
RSS in a fresh process per variant that builds, converts and runs one call.
"""
from __future__ import annotations

import copy
import gc
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import nn

from effigy.bench.peers.quantizers import Bf16Call, quantize_dynamic_int8, torchao_w8a8
from effigy.bench.variants import RESULT_SCHEMA
from effigy.core import kernels
from effigy.errors import BenchError, EffigyError
from effigy.evaluate.measure import (
    Progress,
    interleaved_medians,
    machine_facts,
    no_progress,
    return_freed_memory_to_os,
    run_in_fresh_process,
)
from effigy.evaluate.report import SettingsRecord
from effigy.memory import held_bytes
from effigy.nn import find_targets
from effigy.nn.quantize import backends_of, quantize
from effigy.recipes import fast_cpu_variant, get_recipe
from effigy.registry import Registry

# name -> diffusers transformer arguments (DiT-XL/2: 28 blocks, hidden 16 x 72 = 1152, patch 2; PixArt-alpha: the
# same trunk with adaLN-single and cross-attention to 120 T5 tokens of 4,096 channels, without the 1,024-px
# resolution / aspect-ratio micro-conditions, a few tiny embedders)
ARCHITECTURES = {"dit-xl-2": dict(num_layers=28, num_attention_heads=16, attention_head_dim=72),
                 "dit-s-2": dict(num_layers=12, num_attention_heads=6, attention_head_dim=64),
                 "pixart-alpha": dict(num_layers=28, num_attention_heads=16, attention_head_dim=72,
                                      cross_attention_dim=1152, caption_channels=4096)}
TEXT_TOKENS = 120  # PixArt-alpha's T5 prompt length
SLOW_WITHOUT_VNNI = "torch._int_mm has no fast CPU kernel without VNNI (25-35x slower than fp32: `effigy bench kernels`)"


def default_variants() -> tuple[str, ...]:
    """Every variant, less the ``torch._int_mm`` ones on CPUs where one call would take minutes."""
    fast = tuple(v for v in VARIANTS if v != FROZEN)
    return fast if kernels.cpu_has_vnni() else tuple(v for v in fast if not uses_int_mm(v))


def chosen_variants(text: str) -> tuple[str, ...]:
    """The variants named in a comma-separated ``text`` (fp32 among them, as every ratio is against it), or
    the default ones for this CPU if ``text`` is empty."""
    chosen = tuple(v.strip() for v in text.split(",") if v.strip())
    if not chosen:
        return default_variants()
    for name in chosen:
        VARIANTS.get(name)
    if "fp32" not in chosen:
        raise BenchError(f"--variants {text!r}: include fp32 (every ratio is against it).")
    return chosen


def uses_int_mm(variant: str) -> bool:
    return " int " in f"{variant} "


@dataclass
class ScaleBenchSettings(SettingsRecord):
    architecture: str = "dit-xl-2"
    tokens: tuple[int, ...] = (256,)
    variants: tuple[str, ...] = field(default_factory=default_variants)
    cfg_batch: int = 2  # one classifier-free-guidance pair per call
    repeats: int = 3
    measure_memory: bool = True
    seed: int = 0


def build_dit(architecture: str, tokens: int, seed: int, num_layers: int | None = None) -> nn.Module:
    """A seeded random diffusers transformer of ``architecture``'s size at ``tokens`` tokens (a class-conditional
    ``DiTTransformer2DModel``, or a text-conditional ``PixArtTransformer2DModel`` for ``pixart-alpha``), with
    ``num_layers`` of its blocks where given (its own depth otherwise)."""
    from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel

    side = int(round(tokens ** 0.5)) * 2  # patch 2
    if (side // 2) ** 2 != tokens:
        raise EffigyError(f"{tokens} tokens is not a square number of 2x2 patches: use 256, 1024 or 4096")
    torch.manual_seed(seed)
    shape = dict(in_channels=4, out_channels=8, sample_size=side, patch_size=2)
    sizes = {**ARCHITECTURES[architecture], **({} if num_layers is None else {"num_layers": num_layers})}
    if architecture == "pixart-alpha":
        return PixArtTransformer2DModel(**sizes, **shape, norm_type="ada_norm_single",
                                        norm_elementwise_affine=False, norm_eps=1e-6,
                                        use_additional_conditions=False).eval()
    return DiTTransformer2DModel(**sizes, **shape, num_embeds_ada_norm=1000).eval()


def dit_inputs(model: nn.Module, batch: int, seed: int) -> dict:
    """One CFG call's inputs: conditional and null class (DiT), or a random prompt's and the empty prompt's T5
    features (PixArt), for ``batch // 2`` pairs."""
    g = torch.Generator().manual_seed(seed + 1)
    side = model.config.sample_size
    inputs = {"hidden_states": torch.randn(batch, 4, side, side, generator=g), "timestep": torch.full((batch,), 500)}
    if getattr(model.config, "caption_channels", None):
        text = torch.randn(batch, TEXT_TOKENS, model.config.caption_channels, generator=g)
        return {**inputs, "encoder_hidden_states": text, "added_cond_kwargs": {"resolution": None, "aspect_ratio": None}}
    return {**inputs, "class_labels": torch.tensor([7, 1000] * (batch // 2))[:batch]}


def _w8a8_targets(model: nn.Module) -> list[str]:
    w8a8 = get_recipe("vidit-q-w8a8")
    return sorted(find_targets(model, w8a8.include, w8a8.ignore))


def _torchao(model: nn.Module) -> nn.Module:
    w8a8 = get_recipe("vidit-q-w8a8")
    return torchao_w8a8(model, w8a8.include, w8a8.ignore, in_place=True)


def _effigy(recipe: str, backend: str, weight_from: str | None = None) -> Callable[[nn.Module], nn.Module]:
    """effigy's ``recipe`` on ``backend`` (with the weight spec of ``weight_from`` where the kernel needs
    another grouping: the int4 kernel takes groups of at most 256 channels)."""
    def build(model: nn.Module) -> nn.Module:
        config = get_recipe(recipe)
        if backend == "fbgemm":
            config = fast_cpu_variant(config)
        else:
            weight = get_recipe(weight_from).weight if weight_from else config.weight
            config = replace(config, weight=weight, backend=backend, name=f"{recipe} {backend}")
        return quantize(model, config)
    return build


# name -> convert(model) in place: the rows of the model section
VARIANTS: Registry[Callable[[nn.Module], nn.Module]] = Registry("scale-bench variant")
VARIANTS.register("fp32", lambda model: model)
VARIANTS.register("bf16", Bf16Call)
VARIANTS.register("quantize_dynamic int8", lambda model: quantize_dynamic_int8(model, _w8a8_targets(model)))
VARIANTS.register("torchao w8a8", _torchao)
for _backend in ("reference", "int", "fbgemm", "auto"):
    VARIANTS.register(f"vidit-q-w8a8 {_backend}", _effigy("vidit-q-w8a8", _backend))
VARIANTS.register("rtn-w4a8 int (unpack per call)", _effigy("rtn-w4a8", "int"))
VARIANTS.register("rtn-w4a8 int4 kernel (fake A8)", _effigy("rtn-w4a8", "int4", weight_from="rtn-w4a16"))
VARIANTS.register("rtn-w4a16 int4", _effigy("rtn-w4a16", "int4"))


def _compiled(build: Callable[[nn.Module], nn.Module], **settings) -> Callable[[nn.Module], nn.Module]:
    """``build`` then :func:`effigy.compile` with this CPU's settings, or ``settings`` (compiled at the first call)."""
    from effigy.nn.compile import compile as effigy_compile

    return lambda model: effigy_compile(build(model), **settings)


# compiled rows: every float and integer path under the same inductor settings (docs/kernels.md)
for _name, _build in (("fp32", lambda model: model), ("bf16", Bf16Call), ("torchao w8a8", _torchao),
                      ("vidit-q-w8a8", _effigy("vidit-q-w8a8", "reference")),
                      ("rtn-w4a8", _effigy("rtn-w4a8", "reference")),
                      ("rtn-w4a16 int4", _effigy("rtn-w4a16", "int4")),
                      # W4A16 as the name says: 16-bit (bf16) activations, the 4-bit grid unpacked inside the graph
                      ("rtn-w4a16 bf16", lambda model: Bf16Call(_effigy("rtn-w4a16", "reference")(model)))):
    VARIANTS.register(f"{_name} compiled", _compiled(_build))
# for AMX CPUs, where inductor's C++ GEMM template has int8 tiles: asked for, never a default row (on the AVX512-VNNI
# EPYC it fails to lower and falls back, with one logged line; freezing alone took 29.6 s a layer call there)
FROZEN = "vidit-q-w8a8 compiled freezing+max-autotune"
VARIANTS.register(FROZEN, _compiled(_effigy("vidit-q-w8a8", "reference"), freezing=True, max_autotune=True))


def build_variant(name: str, fp_model: nn.Module, in_place: bool = False) -> nn.Module:
    """The variant ``name`` of ``fp_model`` (a copy unless ``in_place``)."""
    return VARIANTS.get(name)(fp_model if in_place else copy.deepcopy(fp_model))


def linear_bytes(model: nn.Module, names: list[str]) -> int:
    """Bytes held by the named (quantized or float) linear layers of ``model``."""
    modules = dict(model.named_modules())
    return held_bytes([modules[n] for n in names if n in modules])


@torch.no_grad()
def first_call_seconds(models: dict[str, nn.Module], inputs: dict, progress: Progress = no_progress) -> dict[str, float]:
    """Seconds of each model's first call: the compile time of a compiled model (and its first run)."""
    import time

    advance = progress("first calls (compiling)", len(models))
    seconds = {}
    for name, model in models.items():
        start = time.perf_counter()
        model(**inputs)
        seconds[name] = time.perf_counter() - start
        advance()
    return seconds


@torch.no_grad()
def time_interleaved(models: dict[str, nn.Module], inputs: dict, repeats: int,
                     progress: Progress = no_progress) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Median seconds of one call per model (a warm-up each, then ``repeats`` rounds over all models),
    and each model's output."""
    advance = progress("timing, interleaved", repeats + 1)
    calls = {name: (lambda m=model: m(**inputs).sample) for name, model in models.items()}
    return interleaved_medians(calls, repeats, advance)


def _fresh_process_memory(architecture: str, tokens: int, seed: int, name: str, batch: int) -> dict:
    """In a fresh process: build the fp32 model, convert it, run one call. Peak RSS up to the converted
    model, RSS once converted, and the peak of the call alone (the kernel's peak counter reset after
    conversion), in MiB."""
    from effigy.evaluate.measure import reset_peak_rss, rss_mib

    model = build_variant(name, build_dit(architecture, tokens, seed), in_place=True)
    inputs = dit_inputs(unwrapped(model), batch, seed)
    gc.collect()
    built = rss_mib()
    reset = reset_peak_rss()
    with torch.no_grad():
        model(**inputs)
    called = rss_mib()
    return {"peak_rss_build_mib": built["peak_rss_mib"], "rss_converted_mib": built["rss_mib"],
            "peak_rss_call_mib": called["peak_rss_mib"] if reset else None, "rss_after_call_mib": called["rss_mib"]}


def unwrapped(model: nn.Module) -> nn.Module:
    """The diffusers model inside a compiled model and a :class:`Bf16Call` (or the model itself)."""
    from effigy.nn.compile import CompiledModel

    model = CompiledModel.uncompiled(model)
    return model.model if isinstance(model, Bf16Call) else model


@torch.no_grad()
def run_model_section(settings: ScaleBenchSettings, tokens: int, progress: Progress = no_progress) -> list[dict]:
    return_freed_memory_to_os()
    fp_model = build_dit(settings.architecture, tokens, settings.seed)
    inputs = dit_inputs(fp_model, settings.cfg_batch, settings.seed)
    targets = sorted(find_targets(fp_model, get_recipe("vidit-q-w8a8").include, get_recipe("vidit-q-w8a8").ignore))
    fp_linear_bytes, fp_bytes = linear_bytes(fp_model, targets), held_bytes(fp_model)
    advance = progress(f"building variants at {tokens} tokens", len(settings.variants))
    models = {}
    for name in settings.variants:
        models[name] = build_variant(name, fp_model)
        gc.collect()
        return_freed_memory_to_os()
        advance()
    first_call = first_call_seconds(models, inputs, progress)
    seconds, outputs = time_interleaved(models, inputs, settings.repeats, progress)
    reference = outputs["fp32"]
    rows = []
    for name, model in models.items():
        inner = unwrapped(model)
        rows.append({"variant": name, "tokens": tokens, "backends": _backends(inner),
                     "held_bytes": held_bytes(inner), "held_bytes_ratio": held_bytes(inner) / fp_bytes,
                     "linear_held_bytes_ratio": linear_bytes(inner, targets) / fp_linear_bytes,
                     "latency_s": seconds[name], "latency_ratio_vs_fp32": seconds[name] / seconds["fp32"],
                     "speedup_vs_fp32": seconds["fp32"] / seconds[name],
                     "speedup_vs_bf16_compiled": seconds["bf16 compiled"] / seconds[name] if "bf16 compiled" in seconds
                     else None, "first_call_s": first_call[name], "compiled": name.endswith(" compiled"),
                     "relative_output_error": ((outputs[name] - reference).norm() / reference.norm()).item()})
    del models, outputs
    gc.collect()
    if settings.measure_memory:
        advance = progress(f"peak RSS, a fresh process per variant at {tokens} tokens", len(rows))
        for row in rows:
            row.update(run_in_fresh_process(_fresh_process_memory, settings.architecture, tokens, settings.seed,
                                            row["variant"], settings.cfg_batch))
            advance()
    return rows


def _backends(model: nn.Module) -> str:
    return ",".join(backends_of(model)) or "-"


def run_scale_bench(settings: ScaleBenchSettings, progress: Progress = no_progress,
                    layer_tokens: tuple[int, ...] = (64, 256, 1024, 4096), kv=None) -> dict:
    """The model section at each of ``settings.tokens``, the per-layer section (skipped if ``layer_tokens`` is
    empty), and (if ``kv`` is given,
    a :class:`effigy.bench.scale_kv.KVScaleSettings`) the KV-cache section."""
    from effigy.bench.scale_layers import run_layer_section

    rows = [row for tokens in settings.tokens for row in run_model_section(settings, tokens, progress)]
    skipped = {} if kernels.cpu_has_vnni() else {v: SLOW_WITHOUT_VNNI for v in VARIANTS
                                         if v not in settings.variants and uses_int_mm(v)}
    result = {"benchmark": "scale", "schema": RESULT_SCHEMA, "architecture": settings.architecture, "weights": "random (seeded)",
              "skipped": skipped,
              "settings": settings.to_dict(), "machine": machine_facts(), "rows": rows,
              "layers": run_layer_section(layer_tokens, settings.repeats + 2, settings.seed, progress) if layer_tokens
              else []}
    if kv is not None:
        from effigy.bench.scale_kv import run_kv_section

        result["kv"] = run_kv_section(kv, progress)
    return result
