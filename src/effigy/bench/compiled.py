"""Compiled rows for the shipped-model benches (``bench quant``, ``demo``, ``bench mixdq``, ``bench litevar``).

The eager rows of those benches say what a quantized model costs when PyTorch runs it op by op; a user who
deploys it compiles it. These rows put FP and the chosen variants through :func:`effigy.compile` and time
them beside the eager FP in one interleaved run, so "latency vs FP" has both meanings side by side. The
crossover section answers the question the small shipped models raise (64 tokens per image: is any int8
kernel worth its per-call overhead?): at which batches compiled W8A8 keeps up with compiled FP on this CPU.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Callable

import torch
from torch import nn

from effigy.bench.variants import Variant, interleaved_ms_per_image
from effigy.evaluate.measure import Progress, interleaved_medians
from effigy.memory import held_bytes
from effigy.nn.compile import CompiledModel
from effigy.nn.compile import compile as effigy_compile
from effigy.nn.quantize import backends_of

log = logging.getLogger(__name__)

FP = "fp32"
SUFFIX = " compiled"
CROSSOVER_BATCHES = (2, 8, 32, 128)  # images per denoiser call (a CFG pair of rows each)
CROSSOVER_REPEATS = 5


def compiled_variants(variants: list[Variant], names: tuple[str, ...]) -> list[Variant]:
    """``<name> compiled`` for FP and each of ``names`` this run has: :func:`effigy.compile` of a copy (compiling
    moves quantized layers onto the graph backends, and the eager rows keep theirs)."""
    chosen = [v for v in variants if v.name == FP or v.name in names]
    return [Variant(v.name + SUFFIX, effigy_compile(copy.deepcopy(v.model)), v.config) for v in chosen]


def compiled_rows(variants: list[Variant], names: tuple[str, ...], latency_runs: dict[str, Callable],
                  denoiser_inputs: dict, repeats: int, progress: Progress) -> list[Variant]:
    """Compile FP and ``names``, check each against its eager model, and time them beside the eager FP.

    Args:
        variants: the bench's eager variants (FP first).
        names: which of them to compile besides FP.
        latency_runs: row key -> the timed run (``sample_latency`` of a suite), e.g. ``{"latency_ms_per_image":
            world.sample_latency}``; every key gets ``<key>`` in ms per image and ``latency_ratio_vs_fp`` /
            ``..._vs_fp_compiled`` ratios (suffixed like the key) measured in this run.
        denoiser_inputs: keyword inputs of one denoiser call, for the compiled-vs-eager output check.
        repeats: timing rounds after the warm-up.

    Returns:
        The compiled variants, each with its row.
    """
    eager = {v.name: v for v in variants}
    compiled = compiled_variants(variants, names)
    advance = progress("compiling (FP and W8A8 / W4A8 through effigy.compile)", len(compiled))
    first_run = next(iter(latency_runs.values()))
    for variant in compiled:
        source = eager[variant.name.removesuffix(SUFFIX)]
        start = time.perf_counter()
        first_run(variant.model)
        variant.row = {"variant": variant.name, "compiled": True, "first_call_s": time.perf_counter() - start,
                       "backend": _backends(variant.model),
                       "held_bytes": held_bytes(CompiledModel.uncompiled(variant.model)),
                       "output_error_vs_eager": _relative_error(variant.model, source.model, denoiser_inputs)}
        advance()
    baseline = Variant(FP, eager[FP].model)
    for key, run in latency_runs.items():
        _time_against_fp(baseline, compiled, key, run, repeats, progress)
    return compiled


def _time_against_fp(baseline: Variant, compiled: list[Variant], key: str, run: Callable, repeats: int,
                     progress: Progress) -> None:
    """Interleaved medians of ``run`` for the eager FP and every compiled variant; ms per image and ratios."""
    suffix = key.removeprefix("latency_ms_per_image")
    advance = progress(f"timing compiled{suffix.replace('_', ' ')}", repeats + 1)
    ms = interleaved_ms_per_image([baseline, *compiled], baseline.model, run, repeats, advance)
    for variant in compiled:
        variant.row[key] = ms[variant.name]
        variant.row[f"latency_ratio_vs_fp{suffix}"] = ms[variant.name] / ms[FP]
        variant.row[f"latency_ratio_vs_fp_compiled{suffix}"] = ms[variant.name] / ms[FP + SUFFIX]


def crossover(fp_model: nn.Module, quantized: nn.Module, denoiser_call: Callable[[int], dict], name: str,
              progress: Progress, batches: tuple[int, ...] = CROSSOVER_BATCHES,
              repeats: int = CROSSOVER_REPEATS, rows_per_image: int = 2) -> dict:
    """At which batches (images per denoiser call; ``rows_per_image`` 2 for a CFG pair, 1 for a guidance-distilled
    student) compiled ``quantized`` is at least as fast as compiled FP: one denoiser call each, interleaved,
    static shapes (one graph per batch, as a server with fixed batches has).

    Returns:
        ``{"variant", "rows": [{images, fp32 compiled ms, <name> compiled ms, speedup_vs_fp_compiled}],
        "at_least_fp_compiled_at_images": [...], "behind_at_images": [...]}``
    """
    models = {FP + SUFFIX: effigy_compile(copy.deepcopy(fp_model), dynamic=False),
              name + SUFFIX: effigy_compile(copy.deepcopy(CompiledModel.uncompiled(quantized)), dynamic=False)}
    advance = progress(f"where compiled {name} keeps up with compiled FP (batches {batches})", len(batches))
    rows = []
    for images in batches:
        inputs = denoiser_call(rows_per_image * images)
        calls = {label: (lambda m=model: _prediction(m, inputs)) for label, model in models.items()}
        seconds, _ = interleaved_medians(calls, repeats)
        rows.append({"images": images, **{f"{label} ms": 1000 * s for label, s in seconds.items()},
                     "speedup_vs_fp_compiled": seconds[FP + SUFFIX] / seconds[name + SUFFIX]})
        advance()
    ahead = [r["images"] for r in rows if r["speedup_vs_fp_compiled"] >= 1]
    log.info("compiled %s at least as fast as compiled FP at %s images per call", name, ahead or "no")
    return {"variant": name, "repeats": repeats, "rows": rows, "at_least_fp_compiled_at_images": ahead,
            "behind_at_images": [r["images"] for r in rows if r["images"] not in ahead]}


def crossover_sentence(section: dict) -> str:
    """One line for a report and the terminal: where compiled W8A8 keeps up with compiled FP."""
    ahead, behind = section["at_least_fp_compiled_at_images"], section["behind_at_images"]
    name = section["variant"]
    if not behind:
        return f"Compiled {name} is at least as fast as compiled FP at every batch measured ({_listed(ahead)} images)."
    if not ahead:
        return f"Compiled {name} is behind compiled FP at every batch measured ({_listed(behind)} images per call)."
    return (f"Compiled {name} is at least as fast as compiled FP at {_listed(ahead)} images per call and behind it "
            f"at {_listed(behind)} on this CPU.")


def _listed(values: list[int]) -> str:
    return ", ".join(map(str, values))


def _prediction(model: nn.Module, inputs: dict) -> torch.Tensor:
    output = model(**inputs)
    return getattr(output, "sample", output)


@torch.no_grad()
def _relative_error(compiled: nn.Module, eager: nn.Module, inputs: dict) -> float:
    """Relative L2 distance of the compiled model's denoiser output from its eager model's (kernel rounding)."""
    got, want = _prediction(compiled, inputs).float(), _prediction(eager, inputs).float()
    return ((got - want).norm() / want.norm()).item()


def _backends(model: nn.Module) -> str:
    """The matmul paths of a model's quantized layers (``float`` for none)."""
    return "+".join(backends_of(CompiledModel.uncompiled(model))) or "float"
