"""The caches PM-KVQ is compared with, built from the same parts so that only the method differs.

fp16_cache      every token in fp16 (the reference for memory)
rtn_cache       round-to-nearest at fixed bits from the first token: no sink, no window, no budget
kivi_cache      KIVI-style: keys quantized per channel (over a chunk of tokens), values per token,
                the newest ``residual`` tokens kept in fp16
"""
from __future__ import annotations

import torch

from effigy.kvcache.progressive import PMKVQCache, ProgressiveKVLayer
from effigy.kvcache.quantizer import KVChunk


def fp16_cache(model, group_size: int = 32) -> PMKVQCache:
    return PMKVQCache(model, None, sink=0, window=0, chunk=1, group_size=group_size, start_bits=16, min_bits=16)


def rtn_cache(model, bits: int, group_size: int = 32) -> PMKVQCache:
    return PMKVQCache(model, None, sink=0, window=0, chunk=1, group_size=group_size, start_bits=bits, min_bits=bits)


class KIVILayer(ProgressiveKVLayer):
    """Keys grouped per channel over the flushed chunk of tokens (KIVI's finding: key outliers sit in
    fixed channels); values grouped along head_dim per token."""

    def quantize_keys(self, keys: torch.Tensor) -> KVChunk:
        return KVChunk.from_float(keys.transpose(-1, -2), self.bits, self.chunk)

    def key_view(self, keys: torch.Tensor) -> torch.Tensor:
        return keys.transpose(-1, -2)

    key_axis = 3  # stored keys are [batch, heads, head_dim, tokens]: chunks join as groups of the last axis


class KIVICache(PMKVQCache):
    layer_class = KIVILayer


def kivi_cache(model, bits: int, residual: int = 128, group_size: int = 32) -> KIVICache:
    return KIVICache(model, None, sink=0, window=0, chunk=residual, group_size=group_size, start_bits=bits,
                     min_bits=bits)


def transformers_fp8_cache(model):
    """transformers' own ``QuantizedCache`` with its fp8 backend (the one that needs no extra package:
    quanto and hqq would pull other builds), with the bytes it holds: float8 keys and values (1 byte
    each; a per-tensor scale frozen at the first update) plus nothing in full precision."""
    from transformers.cache_utils import QuantizedCache

    class _Fp8Cache(QuantizedCache):
        @property
        def nbytes(self) -> int:
            total = 0
            for layer in self.layers:
                for stored in (layer._quantized_keys, layer._quantized_values):
                    if stored is not None:
                        total += stored[0].numel() * stored[0].element_size() + 4
            return total

    return _Fp8Cache(backend="fp8", config=model.config)
