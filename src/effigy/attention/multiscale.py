"""LiteVAR's multi-diagonal windowed attention (MDWA, https://arxiv.org/abs/2411.17178) for next-scale
prediction transformers.

At a fine scale a query attends, within each coarser scale's keys, mostly to the keys at its own spatial
position: each (query scale, key scale) block of the attention map is close to a 2-D diagonal. A mask plan
keeps, per (layer, head, query scale, key scale), the band of the smallest half-width ``w`` that holds
``coverage`` of that block's calibrated attention mass (a key (ky, kx) of a key scale of side ``s_k`` is kept for
the query (qy, qx) of a scale of side ``s_q`` when both ``|ky - cy|`` and ``|kx - cx|`` are at most ``w``, with
``c = floor((q + 0.5) * s_k / s_q)``), and drops the blocks that hold less than ``drop_mass`` of the rows' mass.
The first ``full_scales`` scales attend fully (they are tiny).

The plan is data (JSON) recording the model it was made for. Applying it gathers each query's kept keys
from the KV cache (a fixed-width index per query, padded with -inf logits), so the attention cost really is
the kept pairs', not a full attention matrix with entries masked out; a (layer, scale) whose heads all keep
every key runs dense attention, bit for bit the unmasked result.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from effigy.attention.processor import _merge_heads, _project
from effigy.errors import PlanError
from effigy.serialize import config_from_dict, config_to_dict

FULL = -1  # a block kept whole
DROPPED = -2  # a block left out
MDWA_FORMAT = "effigy-mdwa-plan/1"


def side_offsets(scales: tuple[int, ...]) -> list[int]:
    """Where each scale's tokens start in the full sequence."""
    out, start = [], 0
    for side in scales:
        out.append(start)
        start += side * side
    return out


def band_keys(query_side: int, key_side: int, half_width: int) -> list[list[int]]:
    """For each query of a ``query_side`` map, the keys of a ``key_side`` map within ``half_width`` of its
    position (local indices, row-major)."""
    rows = []
    for qy in range(query_side):
        for qx in range(query_side):
            cy, cx = (int((c + 0.5) * key_side / query_side) for c in (qy, qx))
            rows.append([ky * key_side + kx for ky in range(max(cy - half_width, 0), min(cy + half_width + 1, key_side))
                         for kx in range(max(cx - half_width, 0), min(cx + half_width + 1, key_side))])
    return rows


def _band_matrix(query_side: int, key_side: int, half_width: int) -> torch.Tensor:
    keep = torch.zeros(query_side * query_side, key_side * key_side, dtype=torch.float64)
    for row, keys in enumerate(band_keys(query_side, key_side, half_width)):
        keep[row, keys] = 1.0
    return keep


@dataclass
class MDWAPlan:
    """``windows[layer][head][query_scale][key_scale]``: a half-width, FULL or DROPPED."""

    FORMAT: ClassVar[str] = MDWA_FORMAT

    windows: list[list[list[list[int]]]]
    scales: list[int]
    coverage: float
    drop_mass: float
    full_scales: int
    model: dict = field(default_factory=dict)

    @classmethod
    def full(cls, model: nn.Module) -> MDWAPlan:
        """The plan that keeps everything (MDWA must then equal full attention)."""
        signature = mdwa_signature(model)
        n = len(signature["scales"])
        windows = [[[[FULL] * (q + 1) for q in range(n)] for _ in range(signature["heads"])]
                   for _ in range(signature["num_layers"])]
        return cls(windows, list(signature["scales"]), 1.0, 0.0, n, signature)

    def check_model(self, model: nn.Module) -> None:
        signature = mdwa_signature(model)
        if signature != self.model:
            raise PlanError(f"this MDWA plan was made for {self.model}, not for this model ({signature}); "
                            "design a plan for it with `effigy accelerate --model ... --recipe litevar-...`.")

    def key_indices(self, layer: int, head: int, query_scale: int) -> list[list[int]] | None:
        """Each query's kept keys (global positions) at ``query_scale``; None when every key is kept."""
        row = self.windows[layer][head][query_scale]
        if all(w == FULL for w in row):
            return None
        offsets, side = side_offsets(tuple(self.scales)), self.scales[query_scale]
        kept: list[list[int]] = [[] for _ in range(side * side)]
        for key_scale, width in enumerate(row):
            if width == DROPPED:
                continue
            key_side = self.scales[key_scale]
            local = (band_keys(side, key_side, key_side if width == FULL else width))
            for q, keys in enumerate(local):
                kept[q].extend(offsets[key_scale] + k for k in keys)
        return kept

    def kept_fraction(self) -> float:
        """Kept (query, key) pairs over the block-causal pairs, over all layers, heads and scales."""
        offsets = side_offsets(tuple(self.scales))
        kept = total = 0
        for layer in range(len(self.windows)):
            for head in range(len(self.windows[layer])):
                for q, side in enumerate(self.scales):
                    seen = offsets[q] + side * side
                    total += side * side * seen
                    keys = self.key_indices(layer, head, q)
                    kept += side * side * seen if keys is None else sum(len(k) for k in keys)
        return kept / max(total, 1)

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MDWAPlan:
        return config_from_dict(cls, data, PlanError)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> MDWAPlan:
        from effigy.serialize import read_json_file

        return cls.from_dict(read_json_file(Path(path), "an MDWA plan", PlanError))


def _cached_projection(attn: nn.Module, hidden_states: torch.Tensor, kv_cache, scale_index: int | None,
                       refusal: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query of the new tokens, and keys / values of everything cached so far (the new tokens appended)."""
    if kv_cache is None or scale_index is None:
        raise PlanError(refusal)
    query, key, value = _project(attn, hidden_states)
    key, value = kv_cache.extend(key, value)
    return query, key, value


def var_attention_layers(model: nn.Module) -> list[nn.Module]:
    blocks = getattr(model, "blocks", None)
    if blocks is None or not all(hasattr(b, "attn") for b in blocks) or not hasattr(model, "scales"):
        raise PlanError(f"{type(model).__name__} is not a next-scale transformer (blocks with `attn`, `scales`); "
                        "MDWA applies to effigy's VAR models.")
    return [block.attn for block in blocks]


def mdwa_signature(model: nn.Module) -> dict:
    layers = var_attention_layers(model)
    return {"class": type(model).__name__, "num_layers": len(layers), "heads": int(layers[0].heads),
            "scales": [int(s) for s in model.scales]}


class AttentionMassRecorder:
    """A processor that runs full attention and adds each (head, query scale, key scale, half-width) band's
    share of the attention mass, and each block's, into ``mass`` (summed over queries and samples)."""

    def __init__(self, scales: tuple[int, ...], heads: int) -> None:
        self.scales, n = scales, len(scales)
        self.widths = max(scales) + 1  # half-widths 0..max side (the last covers any block)
        self.band_mass = torch.zeros(heads, n, n, self.widths, dtype=torch.float64)
        self.rows = torch.zeros(heads, n, dtype=torch.float64)  # queries seen, x samples
        self._bands = {(q, k): torch.stack([_band_matrix(scales[q], scales[k], w) for w in range(self.widths)])
                       for q in range(n) for k in range(q + 1)}  # [widths, nq, nk] 0/1

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask: torch.Tensor | None = None, kv_cache=None, scale_index: int | None = None
                 ) -> torch.Tensor:
        query, key, value = _cached_projection(attn, hidden_states, kv_cache, scale_index,
                                               "MDWA calibration records cached generation (one scale at a time).")
        probs = (query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])).softmax(-1)
        self._add(probs.detach().double(), scale_index)
        return attn.to_out[0](_merge_heads(probs @ value))

    def _add(self, probs: torch.Tensor, q: int) -> None:
        offsets = side_offsets(self.scales)
        self.rows[:, q] += probs.shape[0] * probs.shape[2]
        for k in range(q + 1):
            block = probs[..., offsets[k]: offsets[k] + self.scales[k] ** 2].sum(0)  # [H, nq, nk]
            self.band_mass[:, q, k] += torch.einsum("hqk,wqk->hw", block, self._bands[(q, k)])


def windows_from_mass(recorders: list[AttentionMassRecorder], coverage: float, drop_mass: float,
                      full_scales: int) -> list[list[list[list[int]]]]:
    """Per (layer, head, query scale, key scale): the smallest half-width whose band holds ``coverage`` of
    the block's mass; DROPPED when the block holds under ``drop_mass`` of its rows' mass; FULL when the
    band must cover the whole key map, and at the first ``full_scales`` scales."""
    windows = []
    for rec in recorders:
        n = len(rec.scales)
        per_head = []
        for h in range(rec.band_mass.shape[0]):
            rows = []
            for q in range(n):
                row = []
                for k in range(q + 1):
                    block = rec.band_mass[h, q, k, -1]
                    share = block / max(float(rec.rows[h, q]), 1.0)
                    enough = (rec.band_mass[h, q, k] >= coverage * block).nonzero()
                    width = int(enough[0]) if len(enough) else rec.widths - 1
                    if q < full_scales or width >= rec.scales[k] - 1:
                        row.append(FULL)
                    elif share < drop_mass:
                        row.append(DROPPED)
                    else:
                        row.append(width)
                rows.append(row)
            per_head.append(rows)
        windows.append(per_head)
    return windows


@torch.no_grad()
def design_mdwa_plan(model: nn.Module, tokenizer: nn.Module, class_labels: torch.Tensor, coverage: float = 0.95,
                     drop_mass: float = 0.01, full_scales: int = 3, guidance_scale: float = 3.0,
                     seed: int = 0) -> MDWAPlan:
    """Design the masks from cached generations of ``class_labels`` (the calibration set).

    Args:
        model: a next-scale transformer (effigy's VAR).
        tokenizer: its tokenizer (generation needs the next-scale inputs).
        class_labels: one calibration sample per label.
        coverage: the share of each block's attention mass its band must keep.
        drop_mass: blocks holding less than this share of their rows' mass are dropped.
        full_scales: the first scales that always attend fully.
        guidance_scale, seed: the calibration generation's settings.
    Returns:
        The plan.
    """
    layers = var_attention_layers(model)
    scales = tuple(int(s) for s in model.scales)
    recorders = [AttentionMassRecorder(scales, int(layer.heads)) for layer in layers]
    previous = [layer.processor for layer in layers]
    try:
        for layer, recorder in zip(layers, recorders):
            layer.processor = recorder
        model.generate(tokenizer, class_labels, guidance_scale, seed=seed)
    finally:
        for layer, processor in zip(layers, previous):
            layer.processor = processor
    windows = windows_from_mass(recorders, coverage, drop_mass, full_scales)
    return MDWAPlan(windows, list(scales), coverage, drop_mass, full_scales, mdwa_signature(model))


@dataclass
class _ScaleGather:
    index: torch.Tensor  # [H, nq, m] global key positions
    valid: torch.Tensor  # [H, nq, m] False where padded


class MDWAProcessor:
    """Attention that computes only the plan's kept (query, key) pairs at each scale; counts them."""

    def __init__(self, plan: MDWAPlan, layer: int, previous: object = None) -> None:
        self.plan, self.layer, self.previous = plan, layer, previous  # previous: restored by remove_mdwa
        self.gathers: dict[int, _ScaleGather | None] = {}
        self.pairs_computed = 0
        self.pairs_full = 0

    def gather_for(self, scale: int) -> _ScaleGather | None:
        if scale not in self.gathers:
            heads = [self.plan.key_indices(self.layer, h, scale) for h in range(len(self.plan.windows[self.layer]))]
            self.gathers[scale] = None if all(k is None for k in heads) else _pack(heads, self.plan, scale)
        return self.gathers[scale]

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask: torch.Tensor | None = None, kv_cache=None, scale_index: int | None = None
                 ) -> torch.Tensor:
        query, key, value = _cached_projection(
            attn, hidden_states, kv_cache, scale_index,
            "MDWA runs in cached generation (one scale at a time); generate with use_cache=True.")
        gather = self.gather_for(scale_index)
        self.pairs_full += query.shape[1] * query.shape[2] * key.shape[2]
        if gather is None:
            self.pairs_computed += query.shape[1] * query.shape[2] * key.shape[2]
            out = F.scaled_dot_product_attention(query, key, value)
        else:
            self.pairs_computed += int(gather.valid.sum())
            out = gathered_attention(query, key, value, gather)
        return attn.to_out[0](_merge_heads(out))


def _pack(heads: list[list[list[int]] | None], plan: MDWAPlan, scale: int) -> _ScaleGather:
    seen = side_offsets(tuple(plan.scales))[scale] + plan.scales[scale] ** 2
    rows = [[list(range(seen))] * plan.scales[scale] ** 2 if keys is None else keys for keys in heads]
    width = max(len(r) for keys in rows for r in keys)
    index = torch.zeros(len(rows), len(rows[0]), width, dtype=torch.long)
    valid = torch.zeros(index.shape, dtype=torch.bool)
    for h, keys in enumerate(rows):
        for q, r in enumerate(keys):
            index[h, q, : len(r)] = torch.tensor(r, dtype=torch.long)
            valid[h, q, : len(r)] = True
    return _ScaleGather(index, valid)


def gathered_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       gather: _ScaleGather) -> torch.Tensor:
    """Attention of ``query`` [B, H, nq, d] over each query's gathered keys only (padding at -inf)."""
    b, h, nq, d = query.shape
    flat = gather.index.reshape(1, h, -1, 1).expand(b, h, -1, d)
    keys = key.gather(2, flat).view(b, h, nq, -1, d)
    values = value.gather(2, flat).view(b, h, nq, -1, d)
    logits = torch.einsum("bhqd,bhqmd->bhqm", query, keys) / math.sqrt(d)
    logits = logits.masked_fill(~gather.valid, float("-inf"))
    return torch.einsum("bhqm,bhqmd->bhqd", logits.softmax(-1), values)


def apply_mdwa(model: nn.Module, plan: MDWAPlan) -> list[MDWAProcessor]:
    """Install the plan's processors on every attention layer (after checking the plan fits the model)."""
    plan.check_model(model)
    layers = var_attention_layers(model)
    processors = [MDWAProcessor(plan, k, layer.processor) for k, layer in enumerate(layers)]
    for layer, processor in zip(layers, processors):
        layer.set_processor(processor)
    return processors


def remove_mdwa(model: nn.Module) -> None:
    """Put back the processors :func:`apply_mdwa` replaced."""
    for layer in var_attention_layers(model):
        if isinstance(layer.processor, MDWAProcessor):
            layer.set_processor(layer.processor.previous)
