"""diffusers' own step-caching hooks, run on effigy's samplers the way a diffusers pipeline runs them.

A pipeline tells the hooks the current timestep (callback) and sets a cache context around each
denoiser call, and resets the hooks' state after a run. ``DiffusersCache`` does the same from a
forward pre-hook on the transformer, so PyramidAttentionBroadcast, FasterCache, FirstBlockCache,
TaylorSeer and MagCache can be measured on exactly the runs DiTFastAttn is measured on.

Two of them need more than a pipeline's bookkeeping. FasterCache reads a CFG batch as
``[unconditional; conditional]`` (diffusers pipelines' order) while effigy's sampler runs
``[conditional; unconditional]``: the halves are swapped around the transformer call. MagCache needs
per-step magnitude ratios of the model: :func:`magcache_ratios` runs diffusers' own calibration mode.
"""
from __future__ import annotations

import ast
import contextlib
import io
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from effigy.attention.plan import self_attention_layers
from effigy.attention.processor import FlopTally, core_flops, projection_flops, timestep_of
from effigy.errors import BenchError, UnknownNameError
from effigy.nn.hooks import ModelHook, attach_hook, detach_hook
from effigy.registry import Registry

SELF_ATTENTION_PATTERN = r"transformer_blocks\.\d+\.attn1"  # diffusers' defaults also catch cross-attention
CFG_BATCH_KWARGS = ("hidden_states", "encoder_hidden_states", "timestep", "encoder_attention_mask", "class_labels")


def _swap_halves(x):
    if torch.is_tensor(x) and x.shape[0] % 2 == 0 and x.shape[0] > 0:
        first, second = x.chunk(2)
        return torch.cat([second, first])
    return x


def _swap_cfg_inputs(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``[cond; uncond]`` -> ``[uncond; cond]`` for hooks that read diffusers pipelines' batch order."""
    return tuple(map(_swap_halves, args)), {k: _swap_halves(v) if k in CFG_BATCH_KWARGS else v
                                            for k, v in kwargs.items()}


def _swap_cfg_output(module: nn.Module, args: tuple, output):
    if torch.is_tensor(output):
        return _swap_halves(output)
    if isinstance(output, tuple):
        return (_swap_halves(output[0]), *output[1:])
    output.sample = _swap_halves(output.sample)
    return output


def magcache_ratios(transformer: nn.Module, run: Callable[[], object], num_steps: int) -> list[float]:
    """MagCache's per-step residual-magnitude ratios for this model and schedule, from diffusers' own
    calibration mode (which prints them at the end of every sampling run); averaged over the runs."""
    cache = DiffusersCache("magcache", 0.0, num_steps)
    printed = io.StringIO()
    attach_hook(transformer, cache)
    try:
        with contextlib.redirect_stdout(printed):
            run()
    finally:
        detach_hook(transformer, cache.name)
    lines = printed.getvalue().splitlines()
    runs = [ast.literal_eval(line) for line in lines if line.startswith("[") and line.endswith("]")]
    if not runs or any(len(r) != num_steps for r in runs):
        raise BenchError(f"MagCache calibration produced {len(runs)} runs of ratios, expected runs of "
                           f"{num_steps} steps; does the sampler call the transformer once per step?")
    return [sum(step) / len(runs) for step in zip(*runs)]


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


class AttentionCounter(ModelHook):
    """Counting processors around the self-attention layers' own: what each variant really computed."""

    name = "attention-counter"

    def __init__(self) -> None:
        self.tally, self.originals = FlopTally(), []

    def attach(self, transformer: nn.Module) -> None:
        layers = self_attention_layers(transformer)
        self.originals = [layer.processor for layer in layers]
        for layer in layers:
            layer.set_processor(CountingProcessor(layer.processor, self.tally))

    def detach(self, transformer: nn.Module) -> None:
        for layer, processor in zip(self_attention_layers(transformer), self.originals):
            layer.set_processor(processor)


def count_attention(transformer: nn.Module) -> tuple[FlopTally, Callable[[], None]]:
    """Attach an :class:`AttentionCounter`; returns its tally and the undo."""
    counter = attach_hook(transformer, AttentionCounter())
    return counter.tally, lambda: detach_hook(transformer, AttentionCounter.name)


def _pab(cache: "DiffusersCache"):  # recompute self-attention every `setting` steps, over the whole schedule
    from diffusers.hooks import PyramidAttentionBroadcastConfig

    return PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=int(cache.setting),
                                           spatial_attention_timestep_skip_range=(-1, 1001),
                                           current_timestep_callback=lambda: cache.timestep)


def _fastercache(cache: "DiffusersCache"):
    """Attention every `setting` steps (extrapolated between), and the unconditional branch every 5th step
    (rebuilt from the conditional one's frequencies in between), over diffusers' default timestep ranges."""
    from diffusers.hooks import FasterCacheConfig

    return FasterCacheConfig(spatial_attention_block_skip_range=int(cache.setting),
                             spatial_attention_block_identifiers=(SELF_ATTENTION_PATTERN,),
                             current_timestep_callback=lambda: cache.timestep, tensor_format="BCHW",
                             attention_weight_callback=lambda _: 0.5,
                             _unconditional_conditional_input_kwargs_identifiers=CFG_BATCH_KWARGS)


def _magcache(cache: "DiffusersCache"):  # skip all blocks while the accumulated residual-magnitude error < setting
    from diffusers.hooks import MagCacheConfig

    if cache.mag_ratios is None:
        return MagCacheConfig(calibrate=True, num_inference_steps=cache.num_steps)
    return MagCacheConfig(threshold=float(cache.setting), num_inference_steps=cache.num_steps,
                          mag_ratios=list(cache.mag_ratios))


def _fbc(cache: "DiffusersCache"):  # skip the remaining blocks while the first block's residual barely moves
    from diffusers.hooks import FirstBlockCacheConfig

    return FirstBlockCacheConfig(threshold=float(cache.setting))


def _taylorseer(cache: "DiffusersCache"):
    """Full compute every `setting` steps, Taylor-extrapolated in between; diffusers' default patterns
    ("^transformer_blocks.*attn", full match) miss DiT/PixArt's "attn1"."""
    from diffusers.hooks import TaylorSeerCacheConfig

    return TaylorSeerCacheConfig(cache_interval=int(cache.setting), disable_cache_before_step=2,
                                 taylor_factors_dtype=torch.float32, cache_identifiers=[SELF_ATTENTION_PATTERN])


@dataclass(frozen=True)
class CacheMethod:
    """A diffusers caching hook: how to build its config for a setting, and the ``diffusers.hooks`` function
    that applies it; ``cfg_order_swapped``: it reads a CFG batch as [uncond; cond]."""

    build_config: Callable[["DiffusersCache"], object]
    apply: str
    cfg_order_swapped: bool = False


METHODS: Registry[CacheMethod] = Registry("diffusers cache method", UnknownNameError)
METHODS.register("pab", CacheMethod(_pab, "apply_pyramid_attention_broadcast"))
METHODS.register("fastercache", CacheMethod(_fastercache, "apply_faster_cache", cfg_order_swapped=True))
METHODS.register("fbc", CacheMethod(_fbc, "apply_first_block_cache"))
METHODS.register("taylorseer", CacheMethod(_taylorseer, "apply_taylorseer_cache"))
METHODS.register("magcache", CacheMethod(_magcache, "apply_mag_cache"))


@dataclass
class DiffusersCache(ModelHook):
    """One diffusers caching method at one setting, attached to a transformer as a :class:`ModelHook`
    (``attach_hook`` / ``detach_hook``)."""

    method: str  # a name in METHODS
    setting: float
    num_steps: int
    mag_ratios: list[float] | None = None  # MagCache only: from magcache_ratios; None calibrates
    timestep: float = 1000.0
    step: int = -1

    @property
    def name(self) -> str:
        return f"diffusers-{self.method}"

    def config(self):
        return METHODS.get(self.method).build_config(self)

    def attach(self, transformer: nn.Module) -> None:
        import diffusers.hooks
        from diffusers.hooks import HookRegistry

        method = METHODS.get(self.method)
        getattr(diffusers.hooks, method.apply)(transformer, self.config())
        HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()
        self.step, self.timestep = -1, 1000.0
        self.register(transformer, self._before_call, with_kwargs=True)
        if method.cfg_order_swapped:
            self.register(transformer, self._swap_cfg_inputs, with_kwargs=True)
            self.register(transformer, self._swap_cfg_output, "after")

    def _swap_cfg_inputs(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return _swap_cfg_inputs(module, args, kwargs)

    def _swap_cfg_output(self, module: nn.Module, args: tuple, output):
        return _swap_cfg_output(module, args, output)

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

    def reset(self) -> None:
        self.step = -1  # the next call starts a new sampling run

    def detach(self, transformer: nn.Module) -> None:
        from diffusers.hooks import HookRegistry

        self.unregister(transformer)
        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        for child in (registry, *registry._get_child_registries()):
            for name in list(child.hooks):
                child.remove_hook(name, recurse=False)
        registry.invalidate_child_registries_cache()
