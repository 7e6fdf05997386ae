"""The public entry points: ``quantize(model, config, calib_loop)``, ``save(model, dir)``, ``load(dir)``.

A checkpoint is a folder: ``model.safetensors`` (packed integer weights and scales), ``config.json``
(the diffusers model config) and ``quantization_config.json`` (the :class:`QuantConfig`). Loading
rebuilds the model from its config, swaps in empty quantized layers, and loads the tensors strictly.
Pickled checkpoints are refused: they can run code when opened.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from effigy.core.hadamard import balance_input
from effigy.core.quant import MinMaxObserver, QuantSpec, channel_balance_divisor
from effigy.errors import CheckpointError, QuantizationError
from effigy.models.pretrained import diffusers_model_class, require_safetensors
from effigy.nn import QuantConfig, QuantLinear, find_targets, replace_modules
from effigy.nn.timestep_ranges import TimestepBalancedLinear, TimestepRanges

WEIGHTS_NAME = "model.safetensors"
MODEL_CONFIG_NAME = "config.json"
QUANT_CONFIG_NAME = "quantization_config.json"
CONFIG_ATTR = "effigy_quant_config"


def quantize(
    model: nn.Module, config: QuantConfig, calib_loop: Callable[[nn.Module], None] | None = None,
    input_divisors: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Replace the matching linear layers of ``model`` in place by :class:`QuantLinear` and return it.

    ``calib_loop(model)`` runs representative inputs through the float model; it is needed when
    activations use static scales or channel balancing, and ignored otherwise. ``input_divisors``
    (from :func:`balance_divisors` on the same float model) skips the balancing calibration: the
    divisors depend on neither bit-widths nor which layers are quantized, so a search over many
    configurations computes them once.
    """
    if getattr(model, CONFIG_ATTR, None) is not None:
        raise QuantizationError("this model is already quantized; start again from the float model.")
    targets = find_targets(model, config.include, config.ignore)
    unknown = sorted(set(config.layer_bits) - set(targets))
    if unknown:
        raise QuantizationError(f"layer_bits names layers that are not quantized here: {unknown[:3]}; "
                                "use names from the recipe's targets.")
    divisors = _balance_divisors(model, targets, config, calib_loop) if input_divisors is None else \
        _pick_divisors(input_divisors, targets, config)
    act_qparams = _calibrate_static_scales(model, targets, config, calib_loop, divisors)
    if config.timestep_ranges > 1:
        ranges = TimestepRanges(config.timestep_ranges, config.num_train_timesteps)
        replace_modules(model, targets, lambda name, linear: TimestepBalancedLinear.from_linear(
            linear, config.weight_spec_for(name), config.activation, divisors[name], ranges, config.backend,
            config.rotates(linear.in_features)))
        ranges.attach(model)
    else:
        replace_modules(model, targets, lambda name, linear: QuantLinear.from_linear(
            linear, config.weight_spec_for(name), config.activation, act_qparams.get(name), backend=config.backend,
            input_divisor=divisors.get(name), rotated=config.rotates(linear.in_features)))
    setattr(model, CONFIG_ATTR, config)
    return model


def _require_calib_loop(config: QuantConfig, calib_loop, why: str) -> None:
    if calib_loop is None:
        raise QuantizationError(
            f"recipe {config.name!r} uses {why}: pass calib_loop=lambda m: ... that runs a few representative "
            "inputs through the model."
        )


def _observe_inputs(model, targets, calib_loop, make_observer, transform=lambda _n, x: x) -> dict:
    """Run ``calib_loop`` once with an observer on each target's input (after ``transform``)."""
    observers = {name: make_observer() for name in targets}
    _run_calibration(model, calib_loop, [
        module.register_forward_pre_hook(lambda _m, args, n=name: observers[n].update(transform(n, args[0])))
        for name, module in targets.items()
    ])
    return observers


def _run_calibration(model: nn.Module, calib_loop: Callable[[nn.Module], None], handles: list) -> None:
    """Run ``calib_loop`` without gradients, then remove the observing hooks whatever happens."""
    try:
        with torch.no_grad():
            calib_loop(model)
    finally:
        for handle in handles:
            handle.remove()


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
    observers = _observe_inputs(model, targets, calib_loop, lambda: MinMaxObserver(per_channel))
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

    _run_calibration(model, calib_loop, [ranges.attach(model)] + [
        m.register_forward_pre_hook(lambda _m, args, n=name: observe(n, args[0])) for name, m in targets.items()])
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

    observers = _observe_inputs(model, targets, calib_loop, lambda: MinMaxObserver(config.activation), balanced)
    return {name: obs.qparams() for name, obs in observers.items()}


def set_backend(model: nn.Module, backend: str) -> nn.Module:
    """Switch every :class:`QuantLinear` in ``model`` to another matmul path."""
    for module in model.modules():
        if isinstance(module, QuantLinear):
            module.backend = backend
    return model


def weight_nbytes(model: nn.Module, only_quantized_targets: bool = False) -> int:
    """Bytes of parameters and quantized-layer buffers the model holds (packed integers counted as packed)."""
    total = 0
    for module in model.modules():
        if isinstance(module, QuantLinear):
            total += module.weight_nbytes()
        elif not only_quantized_targets:
            total += sum(p.numel() * p.element_size() for p in module.parameters(recurse=False))
    return total


def save(model: nn.Module, directory: str | Path) -> Path:
    """Write ``model`` (float or quantized) as safetensors + JSON into ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not hasattr(model, "save_config"):
        raise CheckpointError(
            f"save() needs a diffusers model (with save_config); got {type(model).__name__}."
        )
    model.save_config(directory)
    config = getattr(model, CONFIG_ATTR, None)
    quant_file = directory / QUANT_CONFIG_NAME
    if config is not None:
        quant_file.write_text(json.dumps(config.to_dict(), indent=2))
    elif quant_file.exists():
        quant_file.unlink()
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "effigy"})
    return directory


def load(directory: str | Path) -> nn.Module:
    """Rebuild a model saved by :func:`save`: float or quantized, exactly as it was saved."""
    directory = Path(directory)
    weights = _checked_weights_file(directory)
    model = _model_from_config(directory)
    quant_file = directory / QUANT_CONFIG_NAME
    if quant_file.exists():
        quantized_skeleton(model, QuantConfig.from_dict(_read_json(quant_file)))
    _load_state(model, read_safetensors(weights))
    return model.eval()


def quantized_skeleton(model: nn.Module, config: QuantConfig) -> nn.Module:
    """Replace ``config``'s targets by empty :class:`QuantLinear` layers of the right widths, ready for
    a saved state dict (no calibration, no float weights needed)."""
    targets = find_targets(model, config.include, config.ignore)

    def empty(name: str, lin: nn.Linear) -> QuantLinear:
        return QuantLinear(lin.in_features, lin.out_features, config.weight_spec_for(name), config.activation,
                           lin.bias is not None, config.backend, balanced=config.smooth_alpha is not None,
                           rotated=config.rotates(lin.in_features))

    if config.timestep_ranges > 1:
        ranges = TimestepRanges(config.timestep_ranges, config.num_train_timesteps)
        replace_modules(model, targets, lambda name, lin: TimestepBalancedLinear(
            [empty(name, lin) for _ in range(ranges.count)], ranges))
        ranges.attach(model)
    else:
        replace_modules(model, targets, empty)
    setattr(model, CONFIG_ATTR, config)
    return model


def _checked_weights_file(directory: Path) -> Path:
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint folder {directory} does not exist; pass the folder written by effigy save.")
    weights = require_safetensors(directory, WEIGHTS_NAME)[0]
    return weights


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning a corrupt or truncated file into a :class:`CheckpointError`."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types and OSError for broken files
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}); the file is corrupt or truncated: "
            "save or download it again."
        ) from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the checkpoint is damaged.") from None


def _model_from_config(directory: Path) -> nn.Module:
    config_file = directory / MODEL_CONFIG_NAME
    if not config_file.exists():
        raise CheckpointError(f"{directory} has no {MODEL_CONFIG_NAME} describing the model architecture.")
    config = _read_json(config_file)
    cls = diffusers_model_class(config.get("_class_name", ""))
    return cls.from_config(config)


def _load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}")
        raise CheckpointError(
            "the weights do not match the model described by the checkpoint's configs (" + "; ".join(parts) + "). "
            "Was the file saved from a different model or recipe?"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
