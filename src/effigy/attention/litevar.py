"""LiteVAR's attention at run time (https://arxiv.org/abs/2411.17178): one processor per attention layer of a
next-scale transformer that applies a :class:`~effigy.attention.multiscale.LiteVARPlan` during cached
generation, and optionally LiteVAR's low-bit attention.

- MDWA: per head, each coarser key scale is a block: kept whole (a dense product with the cached keys),
  banded (each query's window gathered from the cache; windows shift inward at borders, so every query of a
  block gathers the same number of keys and nothing is padded) or dropped; the blocks' logits share one
  softmax. So the cost is the kept pairs', not a full attention matrix with entries masked out; a (layer,
  scale) whose heads all keep every key runs dense attention, bit for bit the unmasked result.
- ASC: at a shared (layer, scale) the queries, the attention core and the output projection run on the
  conditional half only and its output goes to both halves (:mod:`effigy.attention.cfg`, DiTFastAttn's CFG
  sharing); the unconditional keys and values are still projected, because later scales may read them.
- Attention quantization (:class:`AttentionQuant`): queries and keys at per-token dynamic scales, the
  attention probabilities at a static 8-bit scale over [0, 1]. This is fake quantization (simulation of
  the numerics, no integer attention kernel), named so in every result.

Every processor counts the attention FLOPs it computed against what full attention would have cost.
"""
from __future__ import annotations

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
    band_keys,
    side_offsets,
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


@dataclass
class _KeyBlock:
    """One key scale (or a run of whole key scales) as one query scale's head reads it."""

    start: int  # global position of the block's first key
    size: int  # keys in the block
    index: torch.Tensor | None = None  # [nq, m] each query's band keys (local to the block); None: the whole block


@dataclass
class _ScaleGather:
    """How one (layer, query scale) computes its kept pairs: per head, the key blocks it reads: whole
    key scales as dense blocks, banded ones as each query's window gathered from the cache, dropped ones not
    at all."""

    heads: list[list[_KeyBlock]]
    pairs: int  # (query, key) pairs evaluated (the plan's kept pairs), over all heads


class LiteVARProcessor:
    """Attention that computes only the plan's kept (query, key) pairs, on the halves the plan says."""

    def __init__(self, plan: LiteVARPlan, layer: int, quant: AttentionQuant | None = None,
                 ) -> None:
        self.plan, self.layer, self.quant = plan, layer, quant
        self.gathers: dict[int, _ScaleGather | None] = {}
        self.pairs_computed = 0  # (query, key) pairs evaluated, over the batch rows that ran
        self.pairs_full = 0
        self.flops = FlopTally()

    def gather_for(self, scale: int) -> _ScaleGather | None:
        if scale not in self.gathers:
            rows = [head[scale] for head in self.plan.windows[self.layer]]
            dense = all(w == FULL for row in rows for w in row)
            self.gathers[scale] = None if dense else _pack(rows, self.plan, scale)
        return self.gathers[scale]

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask: torch.Tensor | None = None, kv_cache=None, scale_index: int | None = None
                 ) -> torch.Tensor:
        shared = scale_index is not None and self.plan.shares_cfg(self.layer, scale_index)
        where = f"layer {self.layer}, scale {scale_index}"
        query, key, value = _cached_projection(
            attn, hidden_states, kv_cache, scale_index,
            "LiteVAR attention runs in cached generation (one scale at a time); generate with use_cache=True.",
            conditional_half(hidden_states, where) if shared else None)
        if shared:  # the conditional rows of the cache; the unconditional keys stay cached for later scales
            key, value = conditional_half(key, where), conditional_half(value, where)
        gather = self.gather_for(scale_index)
        out = _attention(query, key, value, gather, self.quant)
        out = attn.to_out[0](_merge_heads(out))
        self._count(attn, hidden_states.shape[0], query.shape[0], query.shape[2], key.shape[2], gather, shared)
        return to_both_halves(out) if shared else out

    def _count(self, attn: nn.Module, batch: int, computed_batch: int, new: int, seen: int,
               gather: _ScaleGather | None, shared: bool) -> None:
        heads, head_dim = attn.heads, attn.inner_dim // attn.heads
        pairs = heads * new * seen if gather is None else gather.pairs
        self.pairs_full += batch * heads * new * seen
        self.pairs_computed += computed_batch * pairs
        qo = 2 * new * (attn.to_q.in_features * attn.inner_dim + attn.inner_dim * attn.to_out[0].out_features)
        kv = 2 * new * 2 * attn.to_k.in_features * attn.inner_dim
        core, full_core = 4 * head_dim * pairs, 4 * head_dim * heads * new * seen
        technique = ("mdwa" if gather is not None else "full") + ("+asc" if shared else "")
        self.flops.add(technique, computed_batch * (qo + core) + batch * kv, computed_batch * core,
                       batch * (qo + kv + full_core), batch * full_core)


def _attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, gather: _ScaleGather | None,
               quant: AttentionQuant | None) -> torch.Tensor:
    if quant is not None:
        query, key = quant.queries_or_keys(query), quant.queries_or_keys(key)
    if gather is None:
        if quant is None:
            return F.scaled_dot_product_attention(query, key, value)
        probs = (query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])).softmax(-1)
        return quant.probabilities(probs) @ value
    return torch.stack([block_attention(query[:, h], key[:, h], value[:, h], blocks, quant)
                        for h, blocks in enumerate(gather.heads)], 1)


def block_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, blocks: list[_KeyBlock],
                    quant: AttentionQuant | None = None) -> torch.Tensor:
    """One head's attention of ``query`` [B, nq, d] over the kept keys only: logits of each block (dense, or
    each query's gathered band) are joined before one softmax, and each block's share of the probabilities
    weights its own values."""
    logits = []
    for block in blocks:
        keys = key[:, block.start: block.start + block.size]
        if block.index is None:
            logits.append(query @ keys.transpose(-1, -2))
        else:
            logits.append(torch.einsum("bqd,bqmd->bqm", query, keys[:, block.index]))  # keys gathered [B, nq, m, d]
    probs = (torch.cat(logits, -1) / math.sqrt(query.shape[-1])).softmax(-1)
    if quant is not None:
        probs = quant.probabilities(probs)
    out, at = 0, 0
    for block in blocks:
        values = value[:, block.start: block.start + block.size]
        width = block.size if block.index is None else block.index.shape[-1]
        share = probs[..., at: at + width]
        out = out + (share @ values if block.index is None else
                     torch.einsum("bqm,bqmd->bqd", share, values[:, block.index]))
        at += width
    return out


def _pack(rows: list[list[int]], plan: LiteVARPlan, scale: int) -> _ScaleGather:
    """The blocks each head reads at ``scale``, from its row of windows (one per key scale)."""
    side = plan.scales[scale]
    offsets = side_offsets(tuple(plan.scales))
    layouts, pairs = [], 0
    for row in rows:
        blocks = []
        for key_scale, width in enumerate(row):
            start, size = offsets[key_scale], plan.scales[key_scale] ** 2
            if width == FULL:
                _append_dense(blocks, start, size)
                pairs += side * side * size
            elif width != DROPPED:
                index = torch.tensor(band_keys(side, plan.scales[key_scale], width), dtype=torch.long)
                blocks.append(_KeyBlock(start, size, index))
                pairs += index.numel()
        layouts.append(blocks)
    return _ScaleGather(layouts, pairs)


def _append_dense(blocks: list[_KeyBlock], start: int, size: int) -> None:
    """A whole key scale as a dense block, merged with the previous one when they touch."""
    last = blocks[-1] if blocks else None
    if last is not None and last.index is None and last.start + last.size == start:
        last.size += size
    else:
        blocks.append(_KeyBlock(start, size))


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
    full attention would have cost."""
    module = sum(sum(p.flops.module.values()) for p in processors)
    core = sum(sum(p.flops.core.values()) for p in processors)
    return {"module_flops": module, "core_flops": core,
            "full_module_flops": sum(p.flops.full_module for p in processors),
            "full_core_flops": sum(p.flops.full_core for p in processors)}
