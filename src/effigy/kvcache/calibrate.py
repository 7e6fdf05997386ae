"""PM-KVQ calibration: per-layer, per-width KV sensitivity and the block-wise bit allocation.

Sensitivity of layer l at b bits is mean |(Q_b(x) - x) * dL/dx| over the keys (after RoPE) and the
values (after v_proj) of short calibration sequences: the first-order change of the language-model
loss if that layer's cache were stored at b bits. The keys and values, and their gradients, are
caught where the model hands them to its cache, so no model code is patched.

Positional interpolation: the calibration sequences are short, but long chain-of-thought runs put
keys at large positions, where RoPE rotates them further. Giving the short sequences position ids
stretched by ``stretch`` (0, s, 2s, ...) shows the model's long-context key statistics at short cost.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicLayer

from effigy.errors import KVBudgetError, QuantizationError
from effigy.kvcache.progressive import kv_geometry
from effigy.kvcache.quantizer import KVChunk, chunk_nbytes
from effigy.mixedprec import SensitivityTable, allocate

CANDIDATE_KV_BITS = (16, 8, 4, 2)


class _CatchingLayer(DynamicLayer):
    """A plain cache layer that keeps its key/value tensors in the autograd graph for their gradients."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        key_states.retain_grad()
        value_states.retain_grad()
        self.caught = (key_states, value_states)
        return super().update(key_states, value_states, *args, **kwargs)


def kv_sensitivity(model: nn.Module, sequences: list[torch.Tensor], bits: tuple[int, ...] = (8, 4, 2),
                   stretch: float = 1.0, group_size: int = 32,
                   progress: Callable[[], None] = lambda: None) -> SensitivityTable:
    """Sensitivity table {layer_index: {bits: score}} (16 bits scores 0) with each layer's element count
    per token as its size."""
    layers, kv_heads, head_dim = kv_geometry(model.config.get_text_config(decoder=True))
    scores = {str(i): {16: 0.0, **{b: 0.0 for b in bits}} for i in range(layers)}
    for ids in sequences:
        ids = ids.reshape(1, -1)
        cache = Cache(layers=[_CatchingLayer() for _ in range(layers)])
        positions = (torch.arange(ids.shape[1]) * stretch).round().long().unsqueeze(0)
        with torch.enable_grad():
            model.zero_grad(set_to_none=True)
            loss = model(ids, labels=ids, position_ids=positions, past_key_values=cache, use_cache=True).loss
            loss.backward()
        for i, layer in enumerate(cache.layers):
            for tensor in layer.caught:
                x, grad = tensor.detach().float(), tensor.grad.float()
                for b in bits:
                    error = KVChunk.from_float(x, b, group_size).dequantize() - x
                    scores[str(i)][b] += (error * grad).abs().mean().item() / len(sequences)
        model.zero_grad(set_to_none=True)
        progress()
    sizes = {str(i): 2 * kv_heads * head_dim for i in range(layers)}
    return SensitivityTable(scores, sizes, {str(i): "loss" for i in range(layers)})


def allocate_kv_bits(table: SensitivityTable, budget_mb: float, target_length: int, kv_heads: int, head_dim: int,
                     group_size: int = 32, sink: int = 1, batch_size: int = 1) -> list[int]:
    """One final width per layer (ILP of :mod:`effigy.mixedprec`) whose main caches at
    ``target_length`` fit ``budget_mb`` together, scales and zero points included."""
    tokens = max(1, target_length - sink)
    shape = (batch_size, kv_heads, tokens, head_dim)
    cost = lambda _layer, bits: 8 * 2 * chunk_nbytes(shape, bits, group_size)  # keys + values, scales included
    try:
        assignment = allocate(table, int(budget_mb * 2**20 * 8), cost)
    except QuantizationError as error:
        raise KVBudgetError(f"KV budget of {budget_mb} MiB at {target_length} tokens: {error}") from None
    return [assignment.bits[str(i)] for i in range(len(table.scores))]
