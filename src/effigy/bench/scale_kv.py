"""KV caches at long contexts: bytes held, peak RSS and decode speed against transformers' caches.

At 2k and 8k tokens (SmolLM2-135M's context is 8k) the real model prefills the same random token ids
through each cache in chunks, then the caches decode in turns, one token each per round, so that
every cache sees the same machine state. At 32k tokens only memory is measured, on caches of
SmolLM2's geometry filled with random keys and values (no model runs: there is no quality claim
at 32k, and the cache is what holds the memory).
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

import torch
from transformers import DynamicCache, LlamaConfig

from effigy.bench.kvquant import equal_memory_budget_mb
from effigy.evaluate.measure import Progress, no_progress, rss_mib, run_in_fresh_process
from effigy.evaluate.report import SettingsRecord
from effigy.kvcache.baselines import fp16_cache, kivi_cache, transformers_fp8_cache
from effigy.kvcache.progressive import PMKVQCache, kv_geometry
from effigy.memory import held_bytes
from effigy.registry import Registry

# SmolLM2-135M's shape, for the memory-only 32k run
SMOLLM2_SHAPE = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=32768)


@dataclass
class KVScaleSettings(SettingsRecord):
    lengths: tuple[int, ...] = (2048, 8192)
    memory_length: int = 32768
    caches: tuple[str, ...] = field(default_factory=lambda: CACHES.names())
    decode_tokens: int = 16
    prefill_chunk: int = 1024
    window: int = 32
    sink: int = 1
    group_size: int = 32
    seed: int = 0


def _pm_kvq(bits: float):
    def build(model, length: int, s: "KVScaleSettings"):
        budget = equal_memory_budget_mb(model.config, bits, length, s.sink, s.window, s.group_size)
        return PMKVQCache(model, budget, None, sink=s.sink, window=s.window, group_size=s.group_size)
    return build


# name -> build(model, length, settings): a fresh cache for ``model`` sized for ``length`` tokens
CACHES: Registry[Callable] = Registry("KV cache")
CACHES.register("DynamicCache fp32", lambda model, _length, _s: DynamicCache(config=model.config))
CACHES.register("fp16", lambda model, _length, s: fp16_cache(model, s.group_size))
CACHES.register("pm-kvq @4b", _pm_kvq(4.0))
CACHES.register("pm-kvq @8b", _pm_kvq(8.0))
CACHES.register("kivi 4-bit", lambda model, _length, s: kivi_cache(model, 4, s.window, s.group_size))
CACHES.register("transformers QuantizedCache fp8", lambda model, _length, _s: transformers_fp8_cache(model))


def make_cache(name: str, model, length: int, s: "KVScaleSettings"):
    """A fresh cache ``name`` for ``model`` (a model, or anything with a ``config``) sized for ``length``.
    PM-KVQ gets the equal-memory budget at ``length`` split evenly over layers (no calibrated
    allocation: widths change speed little, and calibration is the kvquant bench's subject)."""
    return CACHES.get(name)(model, length, s)


@torch.no_grad()
def prefill(model, cache, ids: torch.Tensor, chunk: int) -> torch.Tensor:
    """Feed ``ids`` through ``cache`` in chunks; returns the greedy next token."""
    for start in range(0, ids.shape[1], chunk):
        logits = model(ids[:, start:start + chunk], past_key_values=cache, use_cache=True).logits
    return logits[:, -1:].argmax(-1)


@torch.no_grad()
def decode_interleaved(model, caches: dict, first: dict, tokens: int) -> dict[str, float]:
    """Median seconds per decoded token for each cache, the caches taking turns token by token."""
    times: dict[str, list[float]] = {name: [] for name in caches}
    current = dict(first)
    for _ in range(tokens):
        for name, cache in caches.items():
            start = time.perf_counter()
            logits = model(current[name], past_key_values=cache, use_cache=True).logits
            current[name] = logits[:, -1:].argmax(-1)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def run_length(model, length: int, s: KVScaleSettings, progress: Progress) -> list[dict]:
    ids = torch.randint(100, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(s.seed))
    advance = progress(f"prefill {length} tokens", len(s.caches))
    caches, first = {}, {}
    for name in s.caches:
        caches[name] = make_cache(name, model, length + s.decode_tokens, s)
        first[name] = prefill(model, caches[name], ids, s.prefill_chunk)
        advance()
    seconds = decode_interleaved(model, caches, first, s.decode_tokens)
    base = seconds["DynamicCache fp32"]
    return [{"cache": name, "tokens": length, "held_bytes": held_bytes(cache),
             "counted_bytes": getattr(cache, "nbytes", None), "tokens_per_s": 1 / seconds[name],
             "tokens_per_s_ratio_vs_dynamic": base / seconds[name]} for name, cache in caches.items()]


def _filled_cache_memory(name: str, length: int, s: KVScaleSettings) -> dict:
    """In a fresh process: a cache of SmolLM2's geometry filled with ``length`` random tokens per layer."""
    config = LlamaConfig(**SMOLLM2_SHAPE)
    owner = SimpleNamespace(config=config)
    layers, kv_heads, head_dim = kv_geometry(config)
    gc.collect()
    before = rss_mib()["rss_mib"]
    cache = make_cache(name, owner, length, s)
    g = torch.Generator().manual_seed(s.seed)
    for _ in range(0, length, s.prefill_chunk):
        for layer in range(layers):
            k, v = (torch.randn(1, kv_heads, s.prefill_chunk, head_dim, generator=g) for _ in range(2))
            cache.update(k, v, layer)
    after = rss_mib()
    return {"cache": name, "tokens": length, "held_bytes": held_bytes(cache), "counted_bytes": getattr(cache, "nbytes", None),
            "rss_growth_mib": after["rss_mib"] - before, "peak_rss_mib": after["peak_rss_mib"]}


def run_kv_section(s: KVScaleSettings, progress: Progress = no_progress) -> dict:
    from effigy.models.encoders.llm import load_smollm2

    model, _ = load_smollm2()
    rows = [row for length in s.lengths for row in run_length(model, length, s, progress)]
    advance = progress(f"memory at {s.memory_length} tokens, a fresh process per cache", len(s.caches))
    memory = []
    for name in s.caches:
        memory.append(run_in_fresh_process(_filled_cache_memory, name, s.memory_length, s))
        advance()
    return {"settings": s.to_dict(), "model": "SmolLM2-135M-Instruct (GGUF Q4_1, dequantized to float32)",
            "rows": rows, "memory_only": memory}
