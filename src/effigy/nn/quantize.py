"""The quantize algorithm: ``quantize(model, config, calib_loop)`` swaps a model's linear layers for
:class:`QuantLinear` after the calibration the config needs (channel-balancing divisors, static
activation scales), in place.

Checkpoint files (save, load) live in :mod:`effigy.checkpoint`.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import nn

from effigy.core.hadamard import balance_input
from effigy.core.hooks import observing
from effigy.core.quant import MinMaxObserver, QuantSpec, channel_balance_divisor
from effigy.errors import QuantizationError
from effigy.memory import trim_freed_memory
from effigy.nn.config import QuantConfig
from effigy.nn.first_token import FirstTokenSplitLinear
from effigy.nn.hooks import attach_hook
from effigy.nn.quant_linear import QuantLinear
from effigy.nn.replace import find_targets, replace_modules
from effigy.nn.timestep_ranges import TimestepBalancedLinear, TimestepRanges

logger = logging.getLogger(__name__)

CONFIG_ATTR = "effigy_quant_config"  # the QuantConfig a quantized model carries (read by save)


def quantize(
    model: nn.Module, config: QuantConfig, calib_loop: Callable[[nn.Module], None] | None = None,
    input_divisors: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Replace the matching linear layers of ``model`` in place by :class:`QuantLinear` and return it
    (ViDiT-Q, https://arxiv.org/abs/2406.02540, and its baselines, as recipes).

    Args:
        model: a float torch module (a diffusers transformer, or any module with ``nn.Linear`` layers).
        config: the recipe, e.g. ``effigy.recipes.get_recipe("vidit-q-w8a8")``.
        calib_loop: ``calib_loop(model)`` runs representative inputs through the float model; needed when
            activations use static scales or channel balancing, ignored otherwise.
        input_divisors: from :func:`balance_divisors` on the same float model; skips the balancing
            calibration (the divisors depend on neither bit-widths nor which layers are quantized, so a
            search over many configurations computes them once).
    Returns:
        The same module, its targets quantized (they hold only their packed form between calls).

    >>> model = effigy.quantize(transformer, get_recipe("vidit-q-w4a8"), calib_loop)  # doctest: +SKIP
    >>> effigy.save(model, "q")  # doctest: +SKIP
    """
    if not isinstance(model, nn.Module) or not isinstance(config, QuantConfig):
        raise QuantizationError(f"quantize(model, config) takes a torch module and a QuantConfig (e.g. "
                                f"get_recipe('vidit-q-w8a8')); got {type(model).__name__} and {type(config).__name__}.")
    if getattr(model, CONFIG_ATTR, None) is not None:
        raise QuantizationError("this model is already quantized; start again from the float model.")
    targets = find_targets(model, config.include, config.ignore)
    _check_layer_names(config, targets)
    _log_targets(model, targets, config)
    divisors = _balance_divisors(model, targets, config, calib_loop) if input_divisors is None else \
        _pick_divisors(input_divisors, targets, config)
    act_qparams = _calibrate_static_scales(model, targets, config, calib_loop, divisors)
    if config.timestep_ranges > 1:
        ranges = TimestepRanges(config.timestep_ranges, config.num_train_timesteps)
        replace_modules(model, targets, lambda name, linear: TimestepBalancedLinear.from_linear(
            linear, config.weight_spec_for(name), config.activation, divisors[name], ranges, config.backend,
            config.rotates(linear.in_features)))
        attach_hook(model, ranges)
    else:
        def quantized(name: str, linear: nn.Linear) -> nn.Module:
            layer = QuantLinear.from_linear(
                linear, config.weight_spec_for(name), config.activation_spec_for(name), act_qparams.get(name),
                backend=backend_for(config, name), input_divisor=divisors.get(name),
                rotated=config.rotates(linear.in_features))
            return FirstTokenSplitLinear.from_linear(linear, layer) if config.splits_first_token(name) else layer

        replace_modules(model, targets, quantized)
    setattr(model, CONFIG_ATTR, config)
    targets.clear()  # the last references to the replaced float layers
    trim_freed_memory()  # their weights are free now: let the process's RSS show it
    return model


def _check_layer_names(config: QuantConfig, targets: dict[str, nn.Module]) -> None:
    for field_name in ("layer_bits", "layer_activation_bits"):
        unknown = sorted(set(getattr(config, field_name)) - set(targets))
        if unknown:
            raise QuantizationError(f"{field_name} names layers that are not quantized here: {unknown[:3]}; "
                                    "use names from the recipe's targets.")
    if config.fp_first_token and config.timestep_ranges > 1:
        raise QuantizationError("fp_first_token does not combine with timestep_ranges > 1; choose one.")


INTEGER_ACTIVATION_BACKENDS = ("int", "fbgemm", "graph-int8")


def backend_for(config: QuantConfig, layer: str) -> str:
    """The recipe's backend, or ``reference`` for a layer whose activations stay in floating point (the
    integer GEMMs need integer activations; the layer is logged)."""
    if config.backend in INTEGER_ACTIVATION_BACKENDS and config.activation_spec_for(layer) is None:
        logger.info("%s: %s keeps float activations, so it runs on the reference path, not %s", config.name, layer,
                    config.backend)
        return "reference"
    return config.backend


def _log_targets(model: nn.Module, targets: dict[str, nn.Module], config: QuantConfig) -> None:
    """Say which linear layers the recipe quantizes, which stay in floating point, and (with rotation on)
    which are left unrotated because their input size is not a power of two."""
    kept = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in targets]
    logger.info("%s: quantizing %d linear layers, keeping %d in floating point%s", config.name, len(targets),
                len(kept), f" ({', '.join(kept[:4])}{' ...' if len(kept) > 4 else ''})" if kept else "")
    if config.rotate:
        unrotated = [n for n, m in targets.items() if not config.rotates(m.in_features)]
        if unrotated:
            logger.info("%s: %d layers left unrotated (input size not a power of two), e.g. %s", config.name,
                        len(unrotated), unrotated[0])


def _require_calib_loop(config: QuantConfig, calib_loop, why: str) -> None:
    if calib_loop is None:
        raise QuantizationError(
            f"recipe {config.name!r} uses {why}: pass calib_loop=lambda m: ... that runs a few representative "
            "inputs through the model."
        )


def _observe_inputs(model, targets, calib_loop, make_observer, transform=lambda _n, x: x) -> dict:
    """Run ``calib_loop`` once with an observer (``make_observer(name)``) on each target's input (after
    ``transform``)."""
    observers = {name: make_observer(name) for name in targets}
    with observing(model, targets, lambda name, _module, args: observers[name].update(transform(name, args[0]))):
        _run_calibration(model, calib_loop)
    return observers


def _run_calibration(model: nn.Module, calib_loop: Callable[[nn.Module], None]) -> None:
    with torch.no_grad():
        calib_loop(model)


def balance_divisors(model: nn.Module, config: QuantConfig, calib_loop: Callable[[nn.Module], None] | None
                     ) -> dict[str, torch.Tensor]:
    """Channel-balancing divisors of every layer ``config`` targets, from one calibration run of the
    float ``model`` (empty when the recipe does not balance)."""
    return _balance_divisors(model, find_targets(model, config.include, config.ignore), config, calib_loop)


def _pick_divisors(divisors: dict[str, torch.Tensor], targets, config: QuantConfig) -> dict[str, torch.Tensor]:
    if config.smooth_alpha is None:
        return {}
    missing = sorted(set(targets) - set(divisors))
    if missing:
        raise QuantizationError(f"input_divisors lacks layers {missing[:3]}: compute them with balance_divisors "
                                "on this float model and a config that targets at least these layers.")
    return {name: divisors[name] for name in targets}


def _balance_divisors(model, targets, config, calib_loop) -> dict[str, torch.Tensor]:
    """Per-input-channel activation maxima over the calibration run -> channel-balancing divisors."""
    if config.smooth_alpha is None:
        return {}
    _require_calib_loop(config, calib_loop, "channel balancing (smooth_alpha)")
    per_channel = QuantSpec(granularity="channel", channel_axis=-1)
    if config.timestep_ranges > 1:
        return _balance_divisors_by_range(model, targets, config, calib_loop, per_channel)
    observers = _observe_inputs(model, targets, calib_loop, lambda _name: MinMaxObserver(per_channel))
    return {name: _divisor(obs, targets[name], config, name) for name, obs in observers.items()}


def _divisor(observer: MinMaxObserver, linear: nn.Linear, config: QuantConfig, where: str) -> torch.Tensor:
    if observer.lo is None:
        raise QuantizationError(f"the calibration loop never reached {where}; it cannot be balanced.")
    absmax = torch.maximum(observer.lo.abs(), observer.hi.abs()).flatten()
    return channel_balance_divisor(absmax, linear.weight, config.smooth_alpha)


def _balance_divisors_by_range(model, targets, config, calib_loop, per_channel) -> dict[str, torch.Tensor]:
    """[ranges, in_features] divisors: each from the calibration inputs at that range's timesteps. A
    range the calibration run never visited (a sampler with few steps) gets the divisor of all inputs."""
    ranges = TimestepRanges(config.timestep_ranges, config.num_train_timesteps)
    overall = ranges.count  # index of the all-timesteps observer
    observers = {(n, k): MinMaxObserver(per_channel) for n in targets for k in range(ranges.count + 1)}

    def observe(name: str, x: torch.Tensor) -> None:
        observers[(name, overall)].update(x)
        for k, rows in ranges.rows_per_range(x.shape[0]):
            observers[(name, k)].update(x[rows])

    with ranges.attached(model), observing(model, targets, lambda name, _module, args: observe(name, args[0])):
        _run_calibration(model, calib_loop)
    def divisor(name: str, linear: nn.Linear, k: int) -> torch.Tensor:
        seen = observers[(name, k)] if observers[(name, k)].lo is not None else observers[(name, overall)]
        return _divisor(seen, linear, config, f"layer {name!r}")

    return {name: torch.stack([divisor(name, linear, k) for k in range(ranges.count)])
            for name, linear in targets.items()}


def _calibrate_static_scales(model, targets, config, calib_loop, divisors) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Observe each target's (balanced) input over ``calib_loop`` to fix static activation scales."""
    if config.activation is None or config.activation.dynamic:
        return {}
    _require_calib_loop(config, calib_loop, "static activation scales")

    def balanced(name: str, x: torch.Tensor) -> torch.Tensor:
        return balance_input(x, divisors.get(name), config.rotates(x.shape[-1]))

    static = {name: m for name, m in targets.items() if config.activation_spec_for(name) is not None}
    observers = _observe_inputs(model, static, calib_loop, lambda n: MinMaxObserver(config.activation_spec_for(n)),
                                balanced)
    return {name: obs.qparams() for name, obs in observers.items()}


def set_backend(model: nn.Module, backend: str) -> nn.Module:
    """Switch every :class:`QuantLinear` in ``model`` to another matmul path."""
    for module in model.modules():
        if isinstance(module, QuantLinear):
            module.backend = backend
    return model


def backends_of(model: nn.Module) -> list[str]:
    """The matmul paths of ``model``'s quantized layers, sorted (empty for a float model)."""
    return sorted({m.backend for m in model.modules() if isinstance(m, QuantLinear)})


def weight_nbytes(model: nn.Module, only_quantized_targets: bool = False) -> int:
    """Bytes of parameters and quantized-layer buffers the model holds (packed integers counted as packed)."""
    total = 0
    for module in model.modules():
        if isinstance(module, QuantLinear):
            total += module.weight_nbytes()
        elif isinstance(module, FirstTokenSplitLinear):
            total += module.own_nbytes()
        elif not only_quantized_targets:
            total += sum(p.numel() * p.element_size() for p in module.parameters(recurse=False))
    return total


def quantized_skeleton(model: nn.Module, config: QuantConfig) -> nn.Module:
    """Replace ``config``'s targets by empty :class:`QuantLinear` layers of the right widths, ready for
    a saved state dict (no calibration, no float weights needed)."""
    targets = find_targets(model, config.include, config.ignore)

    def empty(name: str, lin: nn.Linear) -> QuantLinear:
        return QuantLinear(lin.in_features, lin.out_features, config.weight_spec_for(name),
                           config.activation_spec_for(name), lin.bias is not None, backend_for(config, name),
                           balanced=config.smooth_alpha is not None, rotated=config.rotates(lin.in_features))

    def empty_or_split(name: str, lin: nn.Linear) -> nn.Module:
        layer = empty(name, lin)
        return FirstTokenSplitLinear(layer, lin.bias is not None) if config.splits_first_token(name) else layer

    if config.timestep_ranges > 1:
        ranges = TimestepRanges(config.timestep_ranges, config.num_train_timesteps)
        replace_modules(model, targets, lambda name, lin: TimestepBalancedLinear(
            [empty(name, lin) for _ in range(ranges.count)], ranges))
        attach_hook(model, ranges)
    else:
        replace_modules(model, targets, empty_or_split)
    setattr(model, CONFIG_ATTR, config)
    return model
