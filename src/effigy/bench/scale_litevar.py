"""The LiteVAR section of ``effigy bench scale``: LiteVAR's MDWA and ASC with a fixed plan on a random next-scale
transformer of VAR-d16's size (VAR's depth rule: ``d`` layers of ``d`` heads of 64; 10 scales, 680 tokens), against
dense attention, with W8A8 compiled beside them (issue 42).

Whole generations (every scale's forward against the KV cache, CFG-combined logits, top-k sampling, the next
scale's input from the sampled codes) are timed, variants interleaved, with the seconds inside the attention modules
(projections included), and each row's resident memory in a fresh process. Random weights: speed only, every table
says so.
"""
from __future__ import annotations

import copy
import gc
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effigy.attention.litevar import apply_litevar, remove_litevar
from effigy.attention.multiscale import FULL, LiteVARPlan, mdwa_signature, var_attention_layers
from effigy.bench.scale_attention import medians, timed
from effigy.evaluate.measure import Progress, no_progress, reset_peak_rss, rss_mib, run_in_fresh_process
from effigy.evaluate.report import SettingsRecord
from effigy.memory import held_bytes

VAR_D16_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # VAR's 256-px schedule: 680 tokens
VAR_CODEBOOK, VAR_LATENT, VAR_CLASSES = 4096, 32, 1000


@dataclass
class LiteVARScaleSettings(SettingsRecord):
    depth: int = 16  # VAR-d{depth}: depth layers, depth heads of 64
    images: int = 1  # one class label per image; the batch is twice this (CFG)
    repeats: int = 3  # timed rounds after the warm-up round (which also compiles)
    full_side: int = 4  # query and key scales of at most this side are kept whole
    own_half_width: int = 2  # band half-width over the query's own scale and the one before it
    coarse_half_width: int = 1  # band half-width over coarser scales larger than full_side
    asc_from_scale: int = 2  # ASC shares the attention of every layer from this scale on
    guidance: float = 4.0
    top_k: int = 600
    compiled: bool = True  # the compiled rows (fp32 and W8A8)
    memory: bool = True  # resident memory of each row in a fresh process
    seed: int = 0


def build_var(depth: int, seed: int) -> nn.Module:
    """A random VAR-d``depth`` of effigy's VAR class (gates randomized too: no block starts as the identity)."""
    from effigy.models.var.transformer import VARConfig, VARTransformer

    torch.manual_seed(seed)
    config = VARConfig(num_layers=depth, num_attention_heads=depth, attention_head_dim=64, scales=VAR_D16_SCALES,
                       latent_dim=VAR_LATENT, codebook_size=VAR_CODEBOOK, num_classes=VAR_CLASSES)
    model = VARTransformer(config).eval()
    for block in model.blocks:
        nn.init.normal_(block.ada[1].weight, std=0.02)
    return model


def fixed_plan(signature: dict, settings: LiteVARScaleSettings, mdwa: bool = True, asc: bool = True) -> LiteVARPlan:
    """The section's LiteVAR plan, the same on every layer and head: scales of at most ``full_side`` whole; over a
    larger key scale a band of ``own_half_width`` (the query's own scale and the one before it) or
    ``coarse_half_width`` (coarser ones); ASC on every layer from ``asc_from_scale`` on. ``signature``: the model's
    :func:`~effigy.attention.multiscale.mdwa_signature`."""
    scales = signature["scales"]

    def width(query: int, key: int) -> int:
        if not mdwa or scales[query] <= settings.full_side or scales[key] <= settings.full_side:
            return FULL
        return settings.own_half_width if key >= query - 1 else settings.coarse_half_width

    rows = [[width(q, k) for k in range(q + 1)] for q in range(len(scales))]
    windows = [[rows for _ in range(signature["heads"])] for _ in range(signature["num_layers"])]
    shared = [[asc and q >= settings.asc_from_scale for q in range(len(scales))] for _ in windows]
    return LiteVARPlan(windows, list(scales), 1.0, 0.0, settings.full_side, signature,
                       cfg_shared=shared if asc else [], asc_threshold=None)


@dataclass(frozen=True)
class _CodebookConfig:  # what VARTransformer.generate checks and reads of a tokenizer's config
    scales: tuple[int, ...]
    latent_dim: int
    codebook_size: int
    latent_size: int


class _RandomCodebook:
    """A stand-in tokenizer for speed runs, so that the section times :meth:`VARTransformer.generate` itself: each
    scale's sampled codes, embedded by a random codebook and resized to the next scale, are the next scale's input
    (what VAR's tokenizer does, minus its refinement convolutions and its decoder)."""

    def __init__(self, scales: tuple[int, ...], generator: torch.Generator) -> None:
        self.config = _CodebookConfig(tuple(scales), VAR_LATENT, VAR_CODEBOOK, scales[-1])
        self.codebook = torch.randn(VAR_CODEBOOK, VAR_LATENT, generator=generator)

    def next_scale_input(self, index: int, f_hat: torch.Tensor, indices: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        scales = self.config.scales
        if index + 1 == len(scales):
            return f_hat, None
        maps = self.codebook[indices].transpose(1, 2).unflatten(-1, (scales[index], scales[index]))
        return f_hat, F.interpolate(maps, size=scales[index + 1], mode="bilinear").flatten(2).transpose(1, 2)

    def decode_latent(self, f_hat: torch.Tensor) -> torch.Tensor:
        return f_hat


class _Generation:
    """One seeded, guided generation of ``settings.images`` random class labels by ``model``."""

    def __init__(self, model: nn.Module, settings: LiteVARScaleSettings) -> None:
        generator = torch.Generator().manual_seed(settings.seed)
        self.model, self.settings = model, settings
        self.tokenizer = _RandomCodebook(model.scales, generator)
        self.labels = torch.randint(0, VAR_CLASSES, (settings.images,), generator=generator)

    def __call__(self) -> torch.Tensor:
        return self.model.generate(self.tokenizer, self.labels, self.settings.guidance, self.settings.top_k,
                                   seed=self.settings.seed)


def _compiled_blocks(model: nn.Module) -> nn.Module:
    """``model`` with every block under :func:`effigy.compile` (the generation loop and the head stay eager: one
    compiled graph per scale, shared by the blocks: static shapes, since the attention processors read the
    scale index as a plain int)."""
    from effigy.nn.compile import compile as effigy_compile

    model.blocks = nn.ModuleList(effigy_compile(block, dynamic=False) for block in model.blocks)
    return model


def _w8a8(model: nn.Module) -> nn.Module:
    from effigy.nn.quantize import quantize
    from effigy.recipes import get_recipe

    return quantize(model, get_recipe("litevar-w8a8"))


@dataclass
class _Row:
    model: nn.Module
    plan: LiteVARPlan | None  # None: dense attention
    compiled: bool = False  # a compiled row's plan is applied once (a new processor would recompile every round)


# row name -> (W8A8, compiled, plan: None (dense), "mdwa", "asc" or "both")
ROWS = {"dense (fp32, eager)": (False, False, None), "MDWA": (False, False, "mdwa"), "ASC": (False, False, "asc"),
        "MDWA + ASC": (False, False, "both"), "dense (fp32, compiled)": (False, True, None),
        "MDWA + ASC (fp32, compiled)": (False, True, "both"), "W8A8 compiled": (True, True, None),
        "W8A8 compiled + MDWA + ASC": (True, True, "both")}


def build_row(name: str, fp_model: nn.Module, settings: LiteVARScaleSettings, in_place: bool = False) -> _Row:
    """The row ``name``: eager rows run ``fp_model`` itself (the plan goes on around each run); a compiled row its
    own copy (``fp_model`` itself if ``in_place``), quantized where it says, plan applied, blocks compiled."""
    quantized, compiled, kind = ROWS[name]
    plan = None if kind is None else fixed_plan(mdwa_signature(fp_model), settings, mdwa=kind != "asc",
                                                asc=kind != "mdwa")
    if not compiled:
        return _Row(fp_model, plan)
    model = fp_model if in_place else copy.deepcopy(fp_model)
    if quantized:
        model = _w8a8(model)
    if plan is not None:
        apply_litevar(model, plan)
    return _Row(_compiled_blocks(model), plan, compiled=True)


def run_litevar_section(settings: LiteVARScaleSettings, progress: Progress = no_progress) -> dict:
    """Dense, MDWA, ASC, both, and the compiled rows (fp32 and W8A8): generation seconds (medians of interleaved
    rounds), seconds inside attention (eager rows: hooks would break a compiled graph), bytes held, and the resident
    memory of each row in a fresh process; the plan's kept pairs."""
    fp_model = build_var(settings.depth, settings.seed)
    names = [name for name, (_q, compiled, _k) in ROWS.items() if settings.compiled or not compiled]
    rows = {name: build_row(name, fp_model, settings) for name in names}
    generations = {name: _Generation(row.model, settings) for name, row in rows.items()}
    seconds = {name: [] for name in rows}
    attention = {name: [] for name in rows}
    first = {}
    advance = progress(f"LiteVAR section, VAR-d{settings.depth} (variant x round)", len(rows) * (settings.repeats + 1))
    for round_index in range(settings.repeats + 1):  # round 0 warms up and compiles
        for name, row in rows.items():
            elapsed, inside = _timed_generation(generations[name], row)
            if round_index:
                seconds[name].append(elapsed)
                attention[name].append(inside)
            else:
                first[name] = elapsed
            advance()
    held = {name: held_bytes(row.model) for name, row in rows.items()}
    signature = mdwa_signature(fp_model)
    del rows, generations, fp_model
    memory = {name: {} for name in names}
    advance = progress("resident memory, a fresh process per row", len(names) if settings.memory else 0)
    for name in names if settings.memory else ():
        memory[name] = run_in_fresh_process(_fresh_process_memory, settings.to_dict(), name)
        advance()
    both = fixed_plan(signature, settings)
    return {"settings": settings.to_dict(), "model": signature,
            "rows": _rows(seconds, attention, first, held, memory),
            "kept_pairs": both.kept_fraction(), "asc_shared": both.shared_fraction(),
            "plan": {"windows_per_query_scale": both.windows[0][0], "cfg_shared_per_scale": both.cfg_shared[0]}}


def _fresh_process_memory(settings: dict, name: str) -> dict:
    """In a fresh process: build the row (in place), run one generation. RSS once built and the peak during the
    generation (the peak counter reset before it), MiB."""
    settings = LiteVARScaleSettings(**settings)
    row = build_row(name, build_var(settings.depth, settings.seed), settings, in_place=True)
    gc.collect()
    built, reset = rss_mib()["rss_mib"], reset_peak_rss()
    _timed_generation(_Generation(row.model, settings), row)
    peak = rss_mib()["peak_rss_mib"]
    return {"rss_built_mib": built, "peak_rss_generation_mib": peak if reset else None}


def _timed_generation(generation: _Generation, row: _Row) -> tuple[float, float | None]:
    """(seconds, seconds inside the attention modules or None for a compiled row)."""
    eager_plan = row.plan is not None and not row.compiled
    if eager_plan:
        apply_litevar(row.model, row.plan)
    try:
        return timed(generation, row.model, None if row.compiled else var_attention_layers(row.model))
    finally:
        if eager_plan:
            remove_litevar(row.model)


def _rows(seconds: dict, attention: dict, first: dict, held: dict, memory: dict) -> list[dict]:
    dense_run, dense_attention = medians(seconds["dense (fp32, eager)"], attention["dense (fp32, eager)"])
    rows = []
    for name in seconds:
        run, inside = medians(seconds[name], attention[name])
        rows.append({"variant": name, "generation_s": round(run, 3), "speedup": round(dense_run / run, 3),
                     "attention_s": None if inside is None else round(inside, 3),
                     "attention_speedup": None if inside is None else round(dense_attention / inside, 3),
                     "first_generation_s": round(first[name], 1), "held_mib": round(held[name] / 2 ** 20, 1),
                     **{k: None if v is None else round(v, 1) for k, v in memory[name].items()}})
    return rows
