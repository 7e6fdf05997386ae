"""diffusers' own step-caching hooks, run on effigy's samplers the way a diffusers pipeline runs them.

A pipeline tells the hooks the current timestep (callback) and sets a cache context around each
denoiser call, and resets the hooks' state after a run. ``DiffusersCache`` does the same from a
forward pre-hook on the transformer, so PyramidAttentionBroadcast, FirstBlockCache and TaylorSeer
can be measured on exactly the runs DiTFastAttn is measured on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from effigy.attention.plan import self_attention_layers
from effigy.attention.processor import FlopTally, core_flops, projection_flops, timestep_of


class CountingProcessor:
    """Wraps a processor and counts the full self-attention FLOPs of the calls that really ran
    (a hook that returns a cached output never reaches the processor)."""

    def __init__(self, inner, tally: FlopTally) -> None:
        self.inner, self.tally = inner, tally

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, *args, **kwargs):
        batch, tokens, _ = hidden_states.shape
        core = batch * core_flops(attn, tokens * tokens)
        self.tally.add("full", batch * projection_flops(attn, tokens) + core, core, 0.0, 0.0)
        return self.inner(attn, hidden_states, *args, **kwargs)


def count_attention(transformer: nn.Module) -> tuple[FlopTally, Callable[[], None]]:
    """Install counting processors on the self-attention layers; returns the tally and an undo."""
    tally = FlopTally()
    layers = self_attention_layers(transformer)
    originals = [layer.processor for layer in layers]
    for layer in layers:
        layer.set_processor(CountingProcessor(layer.processor, tally))

    def undo() -> None:
        for layer, processor in zip(layers, originals):
            layer.set_processor(processor)

    return tally, undo


@dataclass
class DiffusersCache:
    """One diffusers caching method at one setting: ``install`` / ``remove`` on a transformer."""

    method: str  # "pab", "fbc", "taylorseer"
    setting: float
    num_steps: int
    timestep: float = 1000.0
    step: int = -1
    _handles: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"diffusers-{self.method}"

    def config(self):
        from diffusers.hooks import FirstBlockCacheConfig, PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig

        if self.method == "pab":  # recompute self-attention every `setting` steps, over the whole schedule
            return PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=int(self.setting),
                                                   spatial_attention_timestep_skip_range=(-1, 1001),
                                                   current_timestep_callback=lambda: self.timestep)
        if self.method == "fbc":  # skip the remaining blocks while the first block's residual barely moves
            return FirstBlockCacheConfig(threshold=float(self.setting))
        if self.method == "taylorseer":  # full compute every `setting` steps, Taylor-extrapolated in between
            # diffusers' default patterns ("^transformer_blocks.*attn", full match) miss DiT/PixArt's "attn1"
            return TaylorSeerCacheConfig(cache_interval=int(self.setting), disable_cache_before_step=2,
                                         taylor_factors_dtype=torch.float32,
                                         cache_identifiers=[r"transformer_blocks\.\d+\.attn1"])
        raise ValueError(f"unknown diffusers cache method {self.method!r}")

    def install(self, transformer: nn.Module) -> None:
        from diffusers.hooks import (HookRegistry, apply_first_block_cache, apply_pyramid_attention_broadcast,
                                     apply_taylorseer_cache)

        apply = {"pab": apply_pyramid_attention_broadcast, "fbc": apply_first_block_cache,
                 "taylorseer": apply_taylorseer_cache}[self.method]
        apply(transformer, self.config())
        HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()
        self.step, self.timestep = -1, 1000.0
        self._handles = [transformer.register_forward_pre_hook(self._before_call, with_kwargs=True)]

    def _before_call(self, module: nn.Module, args, kwargs) -> None:
        from diffusers.hooks import HookRegistry
        from diffusers.hooks.hooks import CacheContext, _set_cache_context

        timestep = timestep_of(args, kwargs)
        if self.step < 0 or timestep > self.timestep:  # a new sampling run: what a pipeline's reset does
            HookRegistry.check_if_exists_or_initialize(module).reset_stateful_hooks()
            self.step = 0
        else:
            self.step += 1
        self.timestep = timestep
        _set_cache_context(module, CacheContext("cfg-batch", step_index=self.step,
                                                num_inference_steps=self.num_steps, timestep=timestep))

    def remove(self, transformer: nn.Module) -> None:
        from diffusers.hooks import HookRegistry

        for handle in self._handles:
            handle.remove()
        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        for child in (registry, *registry._get_child_registries()):
            for name in list(child.hooks):
                child.remove_hook(name, recurse=False)
        registry.invalidate_child_registries_cache()
