"""Module replacement by qualified-name patterns, with an ignore list."""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Callable, Iterable

from torch import nn

from effigy.core.quant import QuantizationError


def find_targets(
    model: nn.Module, include: Iterable[str], ignore: Iterable[str], kind: type = nn.Linear
) -> dict[str, nn.Module]:
    """Modules of type ``kind`` whose name matches an include pattern and no ignore pattern.

    A pattern that names a specific module of another type is an error, not a silent skip.
    """
    include, ignore = tuple(include), tuple(ignore)
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not name or not any(fnmatchcase(name, p) for p in include):
            continue
        if any(fnmatchcase(name, p) for p in ignore):
            continue
        if isinstance(module, kind):
            found[name] = module
        elif name in include:
            raise QuantizationError(
                f"layer {name!r} is a {type(module).__name__}; only {kind.__name__} layers can be quantized "
                "here. Remove it from include or add it to ignore."
            )
    if not found:
        raise QuantizationError(
            f"no {kind.__name__} layer matches include={list(include)} outside ignore={list(ignore)}; "
            "check the patterns against model.named_modules()."
        )
    return found


def replace_modules(model: nn.Module, targets: dict[str, nn.Module], make: Callable[[str, nn.Module], nn.Module]) -> None:
    """Swap each named module for ``make(name, module)`` in place."""
    for name, module in targets.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make(name, module))
