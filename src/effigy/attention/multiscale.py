"""LiteVAR plans (https://arxiv.org/abs/2411.17178) for next-scale prediction transformers: where to keep
attention (multi-diagonal windowed attention, MDWA) and where to share it across the CFG halves (ASC),
designed from calibrated generations.

At a fine scale a query attends, within each coarser scale's keys, mostly to the keys at its own spatial
position: each (query scale, key scale) block of the attention map is close to a 2-D diagonal. A mask plan
keeps, per (layer, head, query scale, key scale), the band of the smallest half-width ``w`` that holds
``coverage`` of that block's calibrated attention mass (a key (ky, kx) of a key scale of side ``s_k`` is kept for
the query (qy, qx) of a scale of side ``s_q`` when both ``|ky - cy|`` and ``|kx - cx|`` are at most ``w``, with
``c = floor((q + 0.5) * s_k / s_q)``; near a border the window shifts inward so that every query keeps
``(2w + 1)^2`` keys), and drops the blocks that hold less than ``drop_mass`` of the rows' mass.
The first ``full_scales`` scales attend fully (they are tiny).

ASC: at a (layer, scale) whose conditional and unconditional attention outputs differ by at most
``asc_threshold`` (relative L1, measured on the same calibration generations), the unconditional half
reuses the conditional half's output.

The plan is data (JSON) recording the model it was made for; :mod:`effigy.attention.litevar` applies it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from effigy.attention.cfg import halves_disagreement
from effigy.attention.processor import _merge_heads, _project
from effigy.errors import PlanError
from effigy.serialize import config_from_dict, config_to_dict

FULL = -1  # a block kept whole
DROPPED = -2  # a block left out
PLAN_FORMAT = "effigy-litevar-plan/1"


def side_offsets(scales: tuple[int, ...]) -> list[int]:
    """Where each scale's tokens start in the full sequence."""
    out, start = [], 0
    for side in scales:
        out.append(start)
        start += side * side
    return out


def band_keys(query_side: int, key_side: int, half_width: int) -> list[list[int]]:
    """For each query of a ``query_side`` map, the keys of a ``key_side`` map in the (2w+1) x (2w+1) window
    around its position (local indices, row-major). Near a border the window is shifted inward rather than
    clipped, so every query keeps the same number of keys (no padding when they are gathered)."""
    span = min(2 * half_width + 1, key_side)

    def window(c: int) -> range:
        low = min(max(c - half_width, 0), key_side - span)
        return range(low, low + span)

    rows = []
    for qy in range(query_side):
        for qx in range(query_side):
            cy, cx = (int((c + 0.5) * key_side / query_side) for c in (qy, qx))
            rows.append([ky * key_side + kx for ky in window(cy) for kx in window(cx)])
    return rows


def band_matrix(query_side: int, key_side: int, half_width: int) -> torch.Tensor:
    """[query_side^2, key_side^2] float64 of 1 where :func:`band_keys` keeps the pair, else 0."""
    keep = torch.zeros(query_side * query_side, key_side * key_side, dtype=torch.float64)
    for row, keys in enumerate(band_keys(query_side, key_side, half_width)):
        keep[row, keys] = 1.0
    return keep


@dataclass
class LiteVARPlan:
    """``windows[layer][head][query_scale][key_scale]``: a half-width, FULL or DROPPED (MDWA);
    ``cfg_shared[layer][scale]``: the unconditional half reuses the conditional half's output (ASC)."""

    FORMAT: ClassVar[str] = PLAN_FORMAT

    windows: list[list[list[list[int]]]]
    scales: list[int]
    coverage: float
    drop_mass: float
    full_scales: int
    model: dict = field(default_factory=dict)
    cfg_shared: list[list[bool]] = field(default_factory=list)  # empty: no ASC
    asc_threshold: float | None = None
    cfg_disagreement: list[list[float]] = field(default_factory=list)  # the calibration's measurement

    @classmethod
    def full(cls, model: nn.Module) -> LiteVARPlan:
        """The plan that keeps everything and shares nothing (it must then equal full attention)."""
        signature = mdwa_signature(model)
        n = len(signature["scales"])
        windows = [[[[FULL] * (q + 1) for q in range(n)] for _ in range(signature["heads"])]
                   for _ in range(signature["num_layers"])]
        return cls(windows, list(signature["scales"]), 1.0, 0.0, n, signature)

    def shares_cfg(self, layer: int, scale: int) -> bool:
        return bool(self.cfg_shared) and self.cfg_shared[layer][scale]

    def shared_fraction(self) -> float:
        """Share of (layer, scale) attention calls whose unconditional half is shared."""
        flags = [f for row in self.cfg_shared for f in row]
        return sum(flags) / len(flags) if flags else 0.0

    def check_model(self, model: nn.Module) -> None:
        signature = mdwa_signature(model)
        if signature != self.model:
            raise PlanError(f"this LiteVAR plan was made for {self.model}, not for this model ({signature}); "
                            "design a plan for it with `effigy accelerate --model ... --recipe litevar-...`.")
        layers, n = signature["num_layers"], len(signature["scales"])
        if list(self.scales) != list(signature["scales"]):
            raise PlanError(f"the plan's scales {list(self.scales)[:12]} are not the model's {list(signature['scales'])}; "
                            "the file is damaged: design the plan again.")
        if self.cfg_shared and (len(self.cfg_shared) != layers or any(len(r) != n for r in self.cfg_shared)):
            raise PlanError(f"the plan's cfg_shared table must be [{layers} layers][{n} scales]; the file is damaged.")
        if not all(isinstance(f, bool) for row in self.cfg_shared for f in row):
            raise PlanError("the plan's cfg_shared entries must be true or false; the file is damaged.")
        if not (isinstance(self.full_scales, int) and 0 <= self.full_scales <= n and 0 < self.coverage <= 1
                and 0 <= self.drop_mass < 1):
            raise PlanError(f"the plan needs full_scales in 0..{n}, coverage in (0, 1] and drop_mass in [0, 1); "
                            "the file is damaged.")
        self._check_windows(layers, signature["heads"])

    def _check_windows(self, layers: int, heads: int) -> None:
        """``windows`` is [layers][heads][query scale][key scales up to it] of FULL, DROPPED or a half-width
        (an integer from 0 to the key scale's side), and every query keeps some keys: a row that drops every
        block would attend to nothing."""
        n = len(self.scales)
        shape = f"[{layers} layers][{heads} heads][{n} query scales][1..{n} key scales]"
        if len(self.windows) != layers or any(len(layer) != heads for layer in self.windows) or any(
                len(head) != n or any(len(row) != q + 1 for q, row in enumerate(head))
                for layer in self.windows for head in layer):
            raise PlanError(f"the plan's windows must be {shape}; the file is damaged or made for another model.")
        for layer, by_head in enumerate(self.windows):
            for head, rows in enumerate(by_head):
                for q, row in enumerate(rows):
                    where = f"windows[{layer}][{head}][{q}]"
                    if not all(type(w) is int and (w in (FULL, DROPPED) or 0 <= w <= self.scales[k])
                               for k, w in enumerate(row)):
                        raise PlanError(f"the plan's {where} holds {row}: each entry is {FULL} (full), {DROPPED} "
                                        "(dropped) or a half-width from 0 to the key scale's side.")
                    if all(w == DROPPED for w in row):
                        raise PlanError(f"the plan's {where} drops every key scale: those queries would attend to "
                                        "nothing. Keep at least the query's own scale.")

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
    def from_dict(cls, data: dict) -> LiteVARPlan:
        return config_from_dict(cls, data, PlanError)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> LiteVARPlan:
        from effigy.serialize import read_json_file

        return cls.from_dict(read_json_file(Path(path), "a LiteVAR plan", PlanError))


def _cached_projection(attn: nn.Module, hidden_states: torch.Tensor, kv_cache, scale_index: int | None,
                       refusal: str, query_states: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query of the new tokens (of ``query_states`` when given), and keys / values of everything cached so
    far (the new tokens appended)."""
    if kv_cache is None or scale_index is None:
        raise PlanError(refusal)
    query, key, value = _project(attn, hidden_states, query_states)
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
    share of the attention mass, and each block's, into ``mass`` (summed over queries and samples); on a
    guided batch it also records how far the unconditional half's output is from the conditional half's
    (relative L1, averaged over calls per scale), which ASC decides on."""

    def __init__(self, scales: tuple[int, ...], heads: int, guided: bool = False) -> None:
        self.scales, n = scales, len(scales)
        self.widths = max(scales) + 1  # half-widths 0..max side (the last covers any block)
        self.band_mass = torch.zeros(heads, n, n, self.widths, dtype=torch.float64)
        self.rows = torch.zeros(heads, n, dtype=torch.float64)  # queries seen, x samples
        self.guided = guided
        self.disagreement = torch.zeros(n, dtype=torch.float64)
        self.calls = torch.zeros(n, dtype=torch.float64)
        self._bands = {(q, k): torch.stack([band_matrix(scales[q], scales[k], w) for w in range(self.widths)])
                       for q in range(n) for k in range(q + 1)}  # [widths, nq, nk] 0/1

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask: torch.Tensor | None = None, kv_cache=None, scale_index: int | None = None
                 ) -> torch.Tensor:
        query, key, value = _cached_projection(attn, hidden_states, kv_cache, scale_index,
                                               "LiteVAR calibration records cached generation (one scale at a time).")
        probs = (query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])).softmax(-1)
        self._add(probs.detach().double(), scale_index)
        out = attn.to_out[0](_merge_heads(probs @ value))
        if self.guided:
            self.disagreement[scale_index] += halves_disagreement(out)
            self.calls[scale_index] += 1
        return out

    def _add(self, probs: torch.Tensor, q: int) -> None:
        offsets = side_offsets(self.scales)
        self.rows[:, q] += probs.shape[0] * probs.shape[2]
        for k in range(q + 1):
            block = probs[..., offsets[k]: offsets[k] + self.scales[k] ** 2].sum(0)  # [H, nq, nk]
            self.band_mass[:, q, k] += torch.einsum("hqk,wqk->hw", block, self._bands[(q, k)])

    def mean_disagreement(self) -> list[float]:
        return (self.disagreement / self.calls.clamp_min(1)).tolist()


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
                    elif share < drop_mass and k != q:  # a query always keeps its own scale's band
                        row.append(DROPPED)
                    else:
                        row.append(width)
                rows.append(row)
            per_head.append(rows)
        windows.append(per_head)
    return windows


@torch.no_grad()
def design_litevar_plan(model: nn.Module, tokenizer: nn.Module, class_labels: torch.Tensor, coverage: float = 0.95,
                        drop_mass: float = 0.01, full_scales: int = 3, asc_threshold: float | None = None,
                        guidance_scale: float = 3.0, seed: int = 0, top_k: int = 0) -> LiteVARPlan:
    """Design MDWA windows (and, with ``asc_threshold``, ASC) from cached generations of ``class_labels``.

    Args:
        model: a next-scale transformer (effigy's VAR).
        tokenizer: its tokenizer (generation needs the next-scale inputs).
        class_labels: one calibration sample per label.
        coverage: the share of each block's attention mass its band must keep (1.0 keeps every key).
        drop_mass: blocks holding less than this share of their rows' mass are dropped.
        full_scales: the first scales that always attend fully.
        asc_threshold: share the conditional half's attention output with the unconditional half at every
            (layer, scale) where they differ by at most this (relative L1); None: no ASC.
        guidance_scale, seed, top_k: the calibration generation's settings (ASC needs guidance_scale != 0).
    Returns:
        The plan.
    """
    if asc_threshold is not None and guidance_scale == 0:
        raise PlanError("ASC shares attention across the CFG halves: calibrate with guidance_scale != 0.")
    layers = var_attention_layers(model)
    scales = tuple(int(s) for s in model.scales)
    recorders = [AttentionMassRecorder(scales, int(layer.heads), guidance_scale != 0) for layer in layers]
    previous = [layer.processor for layer in layers]
    try:
        for layer, recorder in zip(layers, recorders):
            layer.processor = recorder
        model.generate(tokenizer, class_labels, guidance_scale, top_k=top_k, seed=seed)
    finally:
        for layer, processor in zip(layers, previous):
            layer.processor = processor
    windows = windows_from_mass(recorders, coverage, drop_mass, full_scales)
    disagreement = [r.mean_disagreement() for r in recorders] if guidance_scale != 0 else []
    shared = [] if asc_threshold is None else [[d <= asc_threshold for d in row] for row in disagreement]
    return LiteVARPlan(windows, list(scales), coverage, drop_mass, full_scales, mdwa_signature(model), shared,
                       asc_threshold, disagreement)
