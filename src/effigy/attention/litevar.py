"""LiteVAR's attention at run time (https://arxiv.org/abs/2411.17178): one processor per attention layer of a
next-scale transformer that applies a :class:`~effigy.attention.multiscale.LiteVARPlan` during cached
generation, and optionally LiteVAR's low-bit attention.

- MDWA: per head, each coarser key scale is kept whole, banded (each query's window around its position) or
  dropped. The kept pairs become one additive mask per (layer, scale) ([1, heads, queries, keys]: 0 or -inf,
  built once and shared by the layers with the same windows), and the attention runs as one
  ``scaled_dot_product_attention`` call over all heads. That computes every pair (the masked ones too): on CPU
  at VAR's sizes (up to 680 keys) no kernel that skips pairs beats it (gathering each query's keys takes 27-35x
  its time, ``flex_attention`` block masks run at 0.18-0.88x its speed: benchmarks/results/checks/mdwa_kernels.md), so the
  FLOPs are counted as computed (every pair) and the plan's kept pairs are counted beside them. A (layer,
  scale) whose heads all keep every key runs unmasked, bit for bit dense attention.
- ASC: at a shared (layer, scale) the queries, the attention core and the output projection run on the
  conditional half only and its output goes to both halves (:mod:`effigy.attention.cfg`, DiTFastAttn's CFG
  sharing); the unconditional keys and values are still projected, because later scales may read them.
- Attention quantization (:class:`AttentionQuant`): queries and keys at per-token dynamic scales, the
  attention probabilities at a static 8-bit scale over [0, 1]. This is fake quantization (simulation of
  the numerics, no integer attention kernel), named so in every result.

Every processor counts the attention FLOPs it computed against what full attention would have cost.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effigy.attention.cfg import conditional_half, to_both_halves
from effigy.attention.multiscale import (
    DROPPED,
    FULL,
    LiteVARPlan,
    _cached_projection,
    band_matrix,
    var_attention_layers,
)
from effigy.attention.processor import FlopTally, _merge_heads
from effigy.core.quant import QuantSpec, fake_quantize, qparams_from_range
from effigy.errors import PlanError
from effigy.nn.hooks import ModelHook, attach_hook, detach_hook


@dataclass(frozen=True)
class AttentionQuant:
    """Simulated low-bit attention: per-token ``qk_bits`` queries and keys, ``probs_bits`` probabilities
    on a static [0, 1] grid."""

    qk_bits: int = 8
    probs_bits: int = 8

    def __post_init__(self) -> None:
        QuantSpec(bits=self.qk_bits)  # the core's own bit-width check and message
        QuantSpec(bits=self.probs_bits)

    def queries_or_keys(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize(x, QuantSpec(bits=self.qk_bits, granularity="token", dynamic=True))

    def probabilities(self, probs: torch.Tensor) -> torch.Tensor:
        spec = QuantSpec(bits=self.probs_bits, granularity="tensor", symmetric=False)
        scale, zero = qparams_from_range(torch.zeros(()), torch.ones(()), spec)
        return fake_quantize(probs, spec, scale, zero)


class LiteVARProcessor:
    """Attention under the plan's MDWA mask, on the halves the plan says (ASC)."""

    def __init__(self, plan: LiteVARPlan, layer: int, quant: AttentionQuant | None = None) -> None:
        self.plan, self.layer, self.quant = plan, layer, quant
        # built now, not at the first call: inside a compiled model the call is traced, and a lookup is all it sees
        self.masks = [scale_mask(plan, layer, scale) for scale in range(len(plan.scales))]
        self.shared = [plan.shares_cfg(layer, scale) for scale in range(len(plan.scales))]
        self.pairs_computed = 0  # (query, key) pairs evaluated, over the batch rows that ran
        self.pairs_kept = 0  # of those, the pairs the plan keeps (the rest are masked out)
        self.pairs_full = 0
        self.kept_core_flops = 0  # QK^T and AV FLOPs of the kept pairs (what a pair-skipping kernel would compute)
        self.flops = FlopTally()

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask: torch.Tensor | None = None, kv_cache=None, scale_index: int | None = None
                 ) -> torch.Tensor:
        # Reads only per-scale lists built at init (no layer number, no strings): inside a compiled model every
        # layer then shares one graph per scale. The FLOPs are counted in eager runs only.
        shared = scale_index is not None and self.shared[scale_index]
        if shared and hidden_states.shape[0] % 2:
            raise PlanError(f"layer {self.layer}, scale {scale_index}: CFG sharing needs a [conditional; "
                            f"unconditional] batch, got {hidden_states.shape[0]} rows.")
        query, key, value = _cached_projection(
            attn, hidden_states, kv_cache, scale_index,
            "LiteVAR attention runs in cached generation (one scale at a time); generate with use_cache=True.",
            conditional_half(hidden_states, "ASC") if shared else None)
        if shared:  # the conditional rows of the cache; the unconditional keys stay cached for later scales
            key, value = conditional_half(key, "ASC"), conditional_half(value, "ASC")
        mask = self.masks[scale_index]
        out = mdwa_attention(query, key, value, None if mask is None else mask.additive, self.quant)
        out = attn.to_out[0](_merge_heads(out))
        if not torch.compiler.is_compiling():
            self._count(attn, hidden_states.shape[0], query.shape[0], query.shape[2], key.shape[2], mask, shared)
        return to_both_halves(out) if shared else out

    def _count(self, attn: nn.Module, batch: int, computed_batch: int, new: int, seen: int,
               mask: ScaleMask | None, shared: bool) -> None:
        heads, head_dim = attn.heads, attn.inner_dim // attn.heads
        pairs = heads * new * seen  # the masked kernel evaluates every pair
        kept = computed_batch * (pairs if mask is None else mask.kept_pairs)
        self.pairs_full += batch * pairs
        self.pairs_computed += computed_batch * pairs
        self.pairs_kept += kept
        self.kept_core_flops += 4 * head_dim * kept
        qo = 2 * new * (attn.to_q.in_features * attn.inner_dim + attn.inner_dim * attn.to_out[0].out_features)
        kv = 2 * new * 2 * attn.to_k.in_features * attn.inner_dim
        core = 4 * head_dim * pairs
        technique = ("mdwa" if mask is not None else "full") + ("+asc" if shared else "")
        self.flops.add(technique, computed_batch * (qo + core) + batch * kv, computed_batch * core,
                       batch * (qo + kv + core), batch * core)


@dataclass
class ScaleMask:
    """The plan's kept pairs of one (layer, query scale), as the additive mask the attention adds to its
    logits."""

    additive: torch.Tensor  # [1, heads, queries, keys]: 0 where kept, -inf where not
    kept_pairs: int  # over all heads


def scale_mask(plan: LiteVARPlan, layer: int, scale: int) -> ScaleMask | None:
    """The plan's mask of ``layer`` at query scale ``scale``; None where every head keeps every key.

    Masks are kept by content (the heads' windows rows and the scales), so layers with the same windows, and the same
    plan applied again, reuse one mask instead of building it again."""
    rows = tuple(tuple(head[scale]) for head in plan.windows[layer])
    if all(w == FULL for row in rows for w in row):
        return None
    return _mask_of(rows, tuple(plan.scales), scale)


@functools.lru_cache(maxsize=128)
def _mask_of(rows: tuple, scales: tuple, scale: int) -> ScaleMask:
    keep = torch.stack([_head_keep(row, scales, scale) for row in rows])
    additive = torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
    return ScaleMask(additive.unsqueeze(0), int(keep.sum()))


def _head_keep(row: tuple, scales: tuple[int, ...], scale: int) -> torch.Tensor:
    """[queries, keys] booleans of one head's windows row (one entry per key scale up to ``scale``)."""
    side, blocks = scales[scale], []
    for key_scale, width in enumerate(row):
        key_side = scales[key_scale]
        if width == FULL:
            blocks.append(torch.ones(side * side, key_side * key_side, dtype=torch.bool))
        elif width == DROPPED:
            blocks.append(torch.zeros(side * side, key_side * key_side, dtype=torch.bool))
        else:
            blocks.append(band_matrix(side, key_side, width).bool())
    return torch.cat(blocks, 1)


def mdwa_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                   quant: AttentionQuant | None = None) -> torch.Tensor:
    """Attention of ``query`` [B, heads, nq, d] over ``key`` / ``value`` [B, heads, seen, d] under an additive
    ``mask`` (broadcast over the batch; None: dense), with simulated low-bit numerics when ``quant`` is given.

    One call over all heads: the kernel LiteVAR runs (see the module docstring for why masked, not gathered).
    """
    if quant is None:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    query, key = quant.queries_or_keys(query), quant.queries_or_keys(key)
    logits = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
    probs = (logits if mask is None else logits + mask).softmax(-1)
    return quant.probabilities(probs) @ value


def apply_litevar(model: nn.Module, plan: LiteVARPlan, quant: AttentionQuant | None = None) -> list[LiteVARProcessor]:
    """Install LiteVAR's attention on every attention layer of a next-scale transformer.

    Args:
        model: effigy's VAR transformer (or any model with ``blocks[*].attn`` diffusers attention and ``scales``).
        plan: from :func:`~effigy.attention.multiscale.design_litevar_plan` or ``LiteVARPlan.load``; checked
            against the model first.
        quant: simulated low-bit attention, or None for float attention.
    Returns:
        The processors, one per layer; their ``flops`` and ``pairs_computed`` say what was computed.
        :func:`remove_litevar` restores the previous processors.

    >>> processors = apply_litevar(var, design_litevar_plan(var, tokenizer, labels, asc_threshold=0.4))  # doctest: +SKIP
    """
    if not isinstance(plan, LiteVARPlan):
        raise PlanError(f"apply_litevar needs a LiteVARPlan (design_litevar_plan or LiteVARPlan.load), got "
                        f"{type(plan).__name__}.")
    plan.check_model(model)
    processors = [LiteVARProcessor(plan, k, quant) for k in range(len(var_attention_layers(model)))]
    attach_hook(model, LiteVARHook(processors))
    return processors


class LiteVARHook(ModelHook):
    """LiteVAR's processors on every attention layer of a VAR; detaching puts the previous ones back."""

    name = "litevar"

    def __init__(self, processors: list[LiteVARProcessor]) -> None:
        self.processors, self.originals = processors, []

    def attach(self, model: nn.Module) -> None:
        layers = var_attention_layers(model)
        self.originals = [layer.processor for layer in layers]
        for layer, processor in zip(layers, self.processors):
            layer.set_processor(processor)

    def detach(self, model: nn.Module) -> None:
        for layer, processor in zip(var_attention_layers(model), self.originals):
            layer.set_processor(processor)


def remove_litevar(model: nn.Module) -> bool:
    """Put back the processors :func:`apply_litevar` replaced.

    Returns:
        Whether LiteVAR was applied (on a model without it this does nothing, like every ``remove_*``).
    """
    return detach_hook(model, LiteVARHook.name) is not None


def total_flops(processors: list[LiteVARProcessor]) -> dict:
    """Attention FLOPs computed over all layers: module (projections + core) and core (QK^T, AV), with what
    full attention would have cost, and the core FLOPs of the pairs the plan keeps (what a kernel that skipped
    the masked pairs would compute)."""
    module = sum(sum(p.flops.module.values()) for p in processors)
    core = sum(sum(p.flops.core.values()) for p in processors)
    return {"module_flops": module, "core_flops": core,
            "kept_core_flops": sum(p.kept_core_flops for p in processors),
            "full_module_flops": sum(p.flops.full_module for p in processors),
            "full_core_flops": sum(p.flops.full_core for p in processors)}
