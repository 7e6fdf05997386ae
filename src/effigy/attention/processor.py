"""DiTFastAttn as diffusers attention processors plus one forward pre-hook on the transformer.

The hook tells a shared ``FastAttnState`` which denoising step the transformer is running (from the
timestep it is called with); each block's ``DiTFastAttnProcessor`` looks up its technique in the plan
and reads or writes that block's cache (last output, window residual). Nothing else in the model
changes, so it composes with quantized linears (``effigy.quantize`` before or after).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from effigy.attention.cfg import conditional_half, to_both_halves
from effigy.attention.plan import CFG_SHARED, FULL, SHARE_STEP, WINDOWED, AttentionPlan, self_attention_layers
from effigy.attention.window import band_attention, band_pairs, half_window_for
from effigy.errors import PlanError
from effigy.nn.hooks import ModelHook, attach_hook, detach_hook


@dataclass
class BlockCache:
    output: torch.Tensor | None = None  # attention output (after to_out) at the last step that ran
    residual: torch.Tensor | None = None  # full minus window attention (before to_out) at the last full step


@dataclass
class FlopTally:
    """Attention FLOPs actually computed vs what full attention would have cost, per technique.

    ``module`` counts the q/k/v/out projections plus the attention core; ``core`` only QK^T and AV.
    """

    module: dict[str, float] = field(default_factory=dict)
    core: dict[str, float] = field(default_factory=dict)
    full_module: float = 0.0
    full_core: float = 0.0

    def add(self, technique: str, module: float, core: float, full_module: float, full_core: float) -> None:
        self.module[technique] = self.module.get(technique, 0.0) + module
        self.core[technique] = self.core.get(technique, 0.0) + core
        self.full_module += full_module
        self.full_core += full_core

    def fractions(self) -> dict:
        return {"module_fraction": sum(self.module.values()) / max(self.full_module, 1.0),
                "core_fraction": sum(self.core.values()) / max(self.full_core, 1.0),
                "module_by_technique": {t: v / max(self.full_module, 1.0) for t, v in self.module.items()}}


class FastAttnState:
    """Where the run is (step), what the plan says, and each block's cache.

    ``row`` overrides the plan for the current step (the search sets it); ``writing`` False runs a
    step without touching the caches (the search's trial forwards).
    """

    def __init__(self, num_blocks: int, window_fraction: float, plan: AttentionPlan | None = None,
                 cfg: bool = True) -> None:
        self.plan = plan
        self.window_fraction = window_fraction
        self.cfg = cfg
        self.caches = [BlockCache() for _ in range(num_blocks)]
        self.step = -1
        self.last_timestep: float | None = None
        self.row: list[str] | None = None
        self.writing = True
        self.searching = False
        self.flops = FlopTally()

    def begin_call(self, timestep: float) -> None:
        """Advance one denoising step; a timestep above the last one starts a new sampling run."""
        if self.last_timestep is None or timestep > self.last_timestep:
            self.step = 0
            self.caches = [BlockCache() for _ in self.caches]
        else:
            self.step += 1
        self.last_timestep = timestep
        if self.plan is not None and not self.searching:
            self._check_timestep(timestep)

    def _check_timestep(self, timestep: float) -> None:
        plan = self.plan
        if self.step >= plan.num_steps or int(round(timestep)) != plan.timesteps[self.step]:
            raise PlanError(f"the plan was calibrated for a {plan.num_steps}-step run with timesteps "
                            f"{plan.timesteps}; step {self.step} of this run has timestep {timestep:g}. "
                            "Sample with the same scheduler and number of steps, or recalibrate")

    def technique(self, block: int) -> str:
        if self.row is not None:
            return self.row[block]
        return self.plan.techniques[self.step][block] if self.plan is not None else FULL

    def needs_residual(self, block: int) -> bool:
        """Compute the window residual at a full step only if a later step will use it."""
        if self.searching or self.plan is None:
            return True
        for row in self.plan.techniques[self.step + 1:]:
            if row[block] in WINDOWED:
                return True
            if row[block] == FULL:
                return False
        return False


def timestep_of(args: tuple, kwargs: dict) -> float:
    timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
    if timestep is None:
        raise PlanError("DiTFastAttn needs the transformer to be called with a `timestep`")
    return float(torch.as_tensor(timestep).flatten()[0])


class DiTFastAttnProcessor:
    """Self-attention processor for one block: full, window + residual, CFG-shared or step-shared."""

    def __init__(self, state: FastAttnState, block: int) -> None:
        self.state = state
        self.block = block

    @torch.compiler.disable
    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        """Runs eagerly inside a compiled model (a graph break): it reads the step and the caches as Python state,
        which compiled code would guard on and recompile for at every step."""
        _check_supported(attn, hidden_states, encoder_hidden_states, attention_mask)
        state, cache = self.state, self.state.caches[self.block]
        technique = state.technique(self.block)
        batch, tokens, _ = hidden_states.shape
        if technique == SHARE_STEP:
            if cache.output is None or cache.output.shape != (batch, tokens, attn.inner_dim if attn.out_dim is None else attn.out_dim):
                raise PlanError(f"block {self.block}: step sharing needs this block's output from the previous step")
            out = cache.output
            self._count(attn, technique, batch, tokens, computed_batch=0, pairs=0)
        else:
            out = self._compute(attn, hidden_states, technique, cache)
        if state.writing:
            cache.output = out
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor

    def _compute(self, attn: nn.Module, hidden_states: torch.Tensor, technique: str, cache: BlockCache) -> torch.Tensor:
        state = self.state
        batch, tokens, _ = hidden_states.shape
        shared = technique in CFG_SHARED
        if shared and not state.cfg:
            raise PlanError(f"block {self.block}: CFG sharing needs a [conditional; unconditional] batch, got {batch}")
        x = conditional_half(hidden_states, f"block {self.block}") if shared else hidden_states
        q, k, v = _project(attn, x)
        half = half_window_for(tokens, state.window_fraction)
        pairs = tokens * tokens
        if technique in WINDOWED:
            if cache.residual is None:
                raise PlanError(f"block {self.block}: window attention needs a residual from an earlier full step")
            core = _merge_heads(band_attention(q, k, v, half, attn.scale)) + cache.residual[: x.shape[0]]
            pairs = band_pairs(tokens, half)
        else:
            core = _merge_heads(F.scaled_dot_product_attention(q, k, v, scale=attn.scale))
            if technique == FULL and state.needs_residual(self.block):
                window = _merge_heads(band_attention(q, k, v, half, attn.scale))
                if state.writing:
                    cache.residual = core - window
                pairs += band_pairs(tokens, half)
        out = attn.to_out[1](attn.to_out[0](core))
        self._count(attn, technique, batch, tokens, computed_batch=x.shape[0], pairs=pairs)
        return to_both_halves(out) if shared else out

    def _count(self, attn: nn.Module, technique: str, batch: int, tokens: int, computed_batch: int, pairs: int) -> None:
        projections, full_core = projection_flops(attn, tokens), core_flops(attn, tokens * tokens)
        core = computed_batch * core_flops(attn, pairs)
        self.state.flops.add(technique, computed_batch * projections + core, core,
                             batch * (projections + full_core), batch * full_core)


def projection_flops(attn: nn.Module, tokens: int) -> int:
    """FLOPs of one image's q, k, v and output projections."""
    inner = attn.inner_dim
    return 2 * tokens * (3 * attn.to_q.in_features * inner + inner * attn.to_out[0].out_features)


def core_flops(attn: nn.Module, pairs: int) -> int:
    """FLOPs of QK^T and AV over ``pairs`` query-key pairs (all heads)."""
    return 4 * pairs * attn.inner_dim


def _check_supported(attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states, attention_mask) -> None:
    problems = []
    if encoder_hidden_states is not None:
        problems.append("cross-attention input")
    if attention_mask is not None:
        problems.append("an attention mask")
    if hidden_states.ndim != 3:
        problems.append(f"{hidden_states.ndim}-D hidden states")
    if getattr(attn, "spatial_norm", None) is not None or getattr(attn, "group_norm", None) is not None:
        problems.append("spatial/group norm inside attention")
    if problems:
        raise PlanError("DiTFastAttn processor supports token self-attention only; this layer has "
                        + ", ".join(problems))


def _project(attn: nn.Module, x: torch.Tensor, query_x: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query, key and value as (batch, heads, tokens, head_dim), with the layer's q/k norms; the queries of
    ``query_x`` when given (a CFG-shared layer projects queries for the conditional half only)."""
    heads = attn.heads
    q, k, v = (proj(x if query_x is None or proj is not attn.to_q else query_x).unflatten(-1, (heads, -1))
               .transpose(1, 2) for proj in (attn.to_q, attn.to_k, attn.to_v))
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    return q, k, v


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).flatten(2)


class DiTFastAttnHook(ModelHook):
    """DiTFastAttn on a transformer: its processors on every self-attention layer and (unless the caller drives
    the steps, as the plan search does) a pre-hook that advances the step at each call."""

    name = "ditfastattn"

    def __init__(self, state: FastAttnState, step_hook: bool = True) -> None:
        self.state, self.step_hook = state, step_hook
        self.originals: list = []

    def attach(self, transformer: nn.Module) -> None:
        layers = self_attention_layers(transformer)
        self.originals = [layer.processor for layer in layers]
        for index, layer in enumerate(layers):
            layer.set_processor(DiTFastAttnProcessor(self.state, index))
        if self.step_hook:
            self.register(transformer, self._begin_call, with_kwargs=True)

    def _begin_call(self, _module: nn.Module, args, kwargs) -> None:
        self.state.begin_call(timestep_of(args, kwargs))

    def detach(self, transformer: nn.Module) -> None:
        self.unregister(transformer)
        for layer, processor in zip(self_attention_layers(transformer), self.originals):
            layer.set_processor(processor)

    def reset(self) -> None:
        """The next call starts a new sampling run (fresh caches, step 0)."""
        self.state.last_timestep = None


def apply_ditfastattn(pipe_or_transformer: nn.Module, plan: AttentionPlan) -> FastAttnState:
    """Apply a calibrated DiTFastAttn plan (https://arxiv.org/abs/2406.08552) as diffusers attention processors.

    Args:
        pipe_or_transformer: a diffusers transformer, or a pipeline holding one as ``.transformer``.
        plan: from :func:`effigy.calibrate_plan` or ``AttentionPlan.load``; checked against the model.
    Returns:
        The run state; its ``flops`` tally says what each technique computed. ``remove_ditfastattn``
        restores the original processors.
    """
    transformer = getattr(pipe_or_transformer, "transformer", pipe_or_transformer)
    if not isinstance(plan, AttentionPlan):
        raise PlanError(f"apply_ditfastattn needs an AttentionPlan (calibrate_plan or AttentionPlan.load); got "
                        f"{type(plan).__name__}.")
    if not isinstance(transformer, nn.Module) or not self_attention_layers(transformer):
        raise PlanError(f"apply_ditfastattn needs a diffusers transformer with self-attention layers (or a pipeline "
                        f"holding one); got {type(transformer).__name__}.")
    plan.check_model(transformer)
    state = FastAttnState(len(self_attention_layers(transformer)), plan.window_fraction, plan, plan.cfg)
    attach_hook(transformer, DiTFastAttnHook(state))
    return state


def remove_ditfastattn(pipe_or_transformer: nn.Module) -> bool:
    """Restore the processors :func:`apply_ditfastattn` replaced.

    Returns:
        Whether DiTFastAttn was applied (removing it from a model without it does nothing, like every
        ``remove_*`` of effigy: :func:`effigy.nn.hooks.detach_hook`).
    """
    transformer = getattr(pipe_or_transformer, "transformer", pipe_or_transformer)
    return detach_hook(transformer, DiTFastAttnHook.name) is not None
