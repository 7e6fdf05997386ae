"""PM-KVQ's progressive mixed-precision KV cache as a ``transformers.Cache``.

Per layer, tokens live in three places, in order:
  sink    the first ``sink`` tokens (attention sinks), fp16 for good
  main    chunks flushed from the window, all at the layer's current width
  recent  the newest tokens (up to ``window + chunk``), fp16
When ``recent`` holds a full chunk beyond the window, the oldest ``chunk`` tokens move to ``main``.
Each layer starts ``main`` at 16 bits; when its bytes exceed the layer's budget, the whole main cache
is halved (16 -> 8 -> 4 -> 2), from the stored integers. Going below the layer's lowest allowed width
(its block-wise allocation) raises :class:`KVBudgetError`.

Between decoding steps a layer holds only the packed main cache (one stack of chunks, with fp16 scales
and zero points), the fp16 sink and the fp16 window. ``update`` dequantizes the main cache into the
keys and values it returns: a transient that lives for that layer's attention call only.
"""
from __future__ import annotations

import math

import torch
from transformers.cache_utils import Cache, DynamicLayer

from effigy.errors import KVBudgetError
from effigy.kvcache.quantizer import KV_BITS, KVChunk, chunk_nbytes


class ProgressiveKVLayer(DynamicLayer):
    """One attention layer's progressive cache (see module docstring)."""

    def __init__(self, budget_bytes: float, min_bits: int = 2, start_bits: int = 16, sink: int = 1, window: int = 128,
                 chunk: int | None = None, group_size: int = 32, layer_index: int = 0) -> None:
        super().__init__()
        if min_bits not in KV_BITS or start_bits not in KV_BITS or min_bits > start_bits:
            raise KVBudgetError(f"KV widths must be among {KV_BITS} with min_bits <= start_bits; got {min_bits}, "
                                f"{start_bits}")
        self.budget_bytes, self.min_bits, self.bits = budget_bytes, min_bits, start_bits
        self.sink, self.window, self.chunk = sink, window, chunk or max(window, 1)
        if self.chunk < 1 or window < 0 or sink < 0:
            raise KVBudgetError(f"need chunk >= 1, window >= 0, sink >= 0; got {chunk}, {window}, {sink}")
        self.group_size, self.layer_index = group_size, layer_index
        self.main_keys: KVChunk | None = None  # every flushed chunk, joined along tokens into one packed block
        self.main_values: KVChunk | None = None
        self.main_tokens = 0
        self.width_history: list[tuple[int, int]] = [(0, start_bits)]  # (sequence length, bits) at each change
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.sink_keys = key_states[..., :0, :].half()
        self.sink_values = value_states[..., :0, :].half()
        self.keys, self.values = self.sink_keys.clone(), self.sink_values.clone()  # the recent window

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.length += key_states.shape[-2]
        room = self.sink - self.sink_keys.shape[-2]
        if room > 0:
            self.sink_keys = torch.cat([self.sink_keys, key_states[..., :room, :].half()], -2)
            self.sink_values = torch.cat([self.sink_values, value_states[..., :room, :].half()], -2)
            key_states, value_states = key_states[..., room:, :], value_states[..., room:, :]
        self.keys = torch.cat([self.keys, key_states.half()], -2)
        self.values = torch.cat([self.values, value_states.half()], -2)
        self._flush()
        return self._assemble(self.sink_keys, self.main_keys, self.keys, self.key_view), \
            self._assemble(self.sink_values, self.main_values, self.values, lambda t: t)

    def _assemble(self, sink: torch.Tensor, main: KVChunk | None, recent: torch.Tensor, view) -> torch.Tensor:
        """sink + dequantized main + recent, written straight into one tensor of the model's dtype."""
        n_sink, n_main = sink.shape[-2], self.main_tokens
        out = recent.new_empty((*recent.shape[:-2], n_sink + n_main + recent.shape[-2], recent.shape[-1]),
                               dtype=self.dtype)
        out[..., :n_sink, :] = sink
        if main is not None:
            main.dequantize_into(view(out[..., n_sink:n_sink + n_main, :]))
        out[..., n_sink + n_main:, :] = recent
        return out

    def _flush(self) -> None:
        while self.keys.shape[-2] >= self.window + self.chunk:
            # without a budget nothing narrows, so every full chunk goes in one step (the groups are the same
            # as chunk by chunk); with one, chunk by chunk, so that each halving happens where it would
            tokens = self.chunk
            if self.budget_bytes == float("inf"):
                tokens *= (self.keys.shape[-2] - self.window) // self.chunk
            k, v = self.keys[..., :tokens, :], self.values[..., :tokens, :]
            self.keys, self.values = self.keys[..., tokens:, :], self.values[..., tokens:, :]
            self._append_main(self.quantize_keys(k), KVChunk.from_float(v, self.bits, self.group_size), tokens)
            while self.main_nbytes > self.budget_bytes:
                self._halve()
        if self.keys.untyped_storage().nbytes() > self.keys.nbytes:  # a slice of a long prefill: keep only it
            self.keys, self.values = self.keys.clone(), self.values.clone()

    def quantize_keys(self, keys: torch.Tensor) -> KVChunk:
        """Keys are grouped along head_dim like values (PM-KVQ); KIVI-style layers override this."""
        return KVChunk.from_float(keys, self.bits, self.group_size)

    def key_view(self, keys: torch.Tensor) -> torch.Tensor:
        """``keys`` [.., tokens, head_dim] seen in the layout :meth:`quantize_keys` stores."""
        return keys

    key_axis = 2  # the axis of the stored key blocks that grows with tokens

    def _append_main(self, keys: KVChunk, values: KVChunk, tokens: int) -> None:
        if self.main_keys is None:
            self.main_keys, self.main_values = keys, values
        else:
            self.main_keys = self.main_keys.appended(keys, self.key_axis)
            self.main_values = self.main_values.appended(values, 2)
        self.main_tokens += tokens

    def _halve(self) -> None:
        if self.bits <= self.min_bits:
            raise KVBudgetError(
                f"layer {self.layer_index}: {self.main_nbytes:,} bytes of KV at {self.bits} bits exceed its budget of "
                f"{self.budget_bytes:,.0f} bytes at sequence length {self.length}, and {self.min_bits} bits is its "
                "lowest allowed width. Raise budget_mb, lower the allocation's widths, or generate fewer tokens.")
        self.bits //= 2
        self.main_keys, self.main_values = self.main_keys.narrow(self.bits), self.main_values.narrow(self.bits)
        self.width_history.append((self.length, self.bits))

    def main_tokens_at(self, length: int) -> int:
        """Tokens the main cache holds at sequence ``length`` (after the sink, less the recent window, whole
        chunks only)."""
        after_sink = max(0, length - self.sink)
        return self.chunk * max(0, (after_sink - self.window) // self.chunk)

    @property
    def main_chunks(self) -> int:
        return self.main_tokens // self.chunk

    @property
    def main_nbytes(self) -> int:
        return 0 if self.main_keys is None else self.main_keys.nbytes + self.main_values.nbytes

    @property
    def nbytes(self) -> int:
        """Bytes this layer holds: main cache (packed + scales) plus the fp16 sink and window."""
        if not self.is_initialized:
            return 0
        fp16 = sum(t.numel() * 2 for t in (self.sink_keys, self.sink_values, self.keys, self.values))
        return self.main_nbytes + fp16

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def reset(self) -> None:
        self.__init__(self.budget_bytes, self.min_bits, self.width_history[0][1], self.sink, self.window, self.chunk,
                      self.group_size, self.layer_index)


def main_cache_bytes(bits: int, tokens: int, batch: int, kv_heads: int, head_dim: int, group_size: int) -> int:
    """Keys plus values of ``tokens`` main-cache tokens at ``bits``."""
    return 2 * chunk_nbytes((batch, kv_heads, tokens, head_dim), bits, group_size)


class PMKVQCache(Cache):
    """Progressive mixed-precision KV cache (PM-KVQ, https://arxiv.org/abs/2505.18610), a ``transformers.Cache``:
    ``model.generate(past_key_values=PMKVQCache(model, budget_mb=4.0))``.

    Args:
        model_or_config: the causal LM (or its config): layers, KV heads and head size come from it.
        budget_mb: main-cache memory for all layers together (MiB); None for no budget.
        allocation: one final width per layer (``effigy kvquant calibrate``), with ``target_length``.
        sink / window: tokens kept in fp16 at the start and at the end.
        group_size: KV elements per fp16 scale and zero point (a divisor of head_dim).

    ``budget_mb`` is the main-cache memory for all layers together. With ``allocation`` (one final
    width per layer, e.g. from :func:`effigy.kvcache.allocate.allocate_kv_bits`) and ``target_length``,
    each layer's budget is what its final width needs at that length, and the layer may not go below
    it; without, the budget is split evenly and every layer may go down to ``min_bits``.
    ``start_bits=None`` starts each layer at its final width (no progressive narrowing: an ablation).
    ``budget_mb=None`` sets no budget (fixed-width baselines).
    """

    layer_class = ProgressiveKVLayer

    def __init__(self, model_or_config, budget_mb: float | None, allocation: list[int] | None = None,
                 target_length: int | None = None, sink: int = 1, window: int = 128, chunk: int | None = None,
                 group_size: int = 32, batch_size: int = 1, start_bits: int | None = 16, min_bits: int = 2) -> None:
        config = getattr(model_or_config, "config", model_or_config)
        if not hasattr(config, "get_text_config"):
            raise KVBudgetError(f"PMKVQCache needs a transformers causal LM (or its config); got "
                                f"{type(model_or_config).__name__}.")
        config = config.get_text_config(decoder=True)
        layers, kv_heads, head_dim = kv_geometry(config)
        if type(group_size) is not int or group_size < 1 or head_dim % group_size:
            raise KVBudgetError(f"group_size={group_size!r} does not divide head_dim={head_dim}; pick a divisor.")
        if budget_mb is not None and not (math.isfinite(budget_mb) and budget_mb > 0):
            raise KVBudgetError(f"budget_mb must be a positive finite number (or None for no budget), got {budget_mb}")
        budget = float("inf") if budget_mb is None else budget_mb * 2**20
        if allocation is None:
            budgets, floors = [budget / layers] * layers, [min_bits] * layers
        else:
            if len(allocation) != layers:
                raise KVBudgetError(f"allocation has {len(allocation)} widths for a model with {layers} layers")
            if target_length is None:
                raise KVBudgetError("an allocation needs target_length: the length its widths were planned for")
            main_tokens = max(0, target_length - sink)
            budgets = [main_cache_bytes(b, main_tokens, batch_size, kv_heads, head_dim, group_size) for b in allocation]
            if sum(budgets) > budget:
                raise KVBudgetError(f"the allocation needs {sum(budgets) / 2**20:.2f} MiB at {target_length} tokens, "
                                    f"more than budget_mb={budget_mb}; allocate again for this budget")
            floors = list(allocation)
        self.budget_bytes = budget
        self.geometry = (batch_size, kv_heads, head_dim, group_size)
        super().__init__(layers=[self.layer_class(b, f, f if start_bits is None else start_bits, sink, window, chunk,
                                                  group_size, i) for i, (b, f) in enumerate(zip(budgets, floors))])

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self.layers)

    def widths(self) -> list[int]:
        return [layer.bits for layer in self.layers]

    def fits(self, length: int) -> bool:
        """Whether every layer holds ``length`` tokens within its budget at its lowest allowed width."""
        batch, kv_heads, head_dim, group_size = self.geometry
        return all(main_cache_bytes(layer.min_bits, layer.main_tokens_at(length), batch, kv_heads, head_dim,
                                    group_size) <= layer.budget_bytes for layer in self.layers)

    def check_fits(self, length: int) -> None:
        """Refuse, before any work, a sequence the budget cannot hold even at the lowest widths (otherwise the
        generation fails only when it gets there, minutes in).

        Raises:
            KVBudgetError: naming the longest sequence the budget holds.
        """
        if self.fits(length):
            return
        low, high = 0, length  # the longest length that fits, by bisection (fits is monotone in length)
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if self.fits(middle) else (low, middle - 1)
        raise KVBudgetError(f"{length:,} tokens (prompt and new tokens) do not fit the KV budget of "
                            f"{self.budget_bytes / 2**20:g} MiB even at the lowest widths; it holds {low:,}. Raise "
                            "--budget-mb or ask for fewer --max-new-tokens.")


def kv_geometry(config) -> tuple[int, int, int]:
    """(layers, key/value heads, head_dim) of a decoder config."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, kv_heads, head_dim
