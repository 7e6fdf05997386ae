"""The recipe registry: every published method registers its named configs here, and every CLI verb
and bench looks them up by name."""
from __future__ import annotations

from effigy.errors import QuantizationError
from effigy.nn.config import QuantConfig
from effigy.registry import Registry

RECIPES: Registry[QuantConfig] = Registry("recipe", QuantizationError)
KINDS = ("uniform", "litevar", "mixed-precision")
# every recipe name, of every kind, flagged where it is registered (never inferred from the name): uniform configs
# and LiteVAR's (both in RECIPES), and the mixed-precision methods (in MIXED_PRECISION_RECIPES)
RECIPE_KINDS: Registry[str] = Registry("recipe", QuantizationError)


def register_recipe(config: QuantConfig, kind: str = "uniform") -> QuantConfig:
    """Register ``config`` under its own name (configs are frozen, so a lookup can hand out the one object), with
    its kind: ``uniform`` (any model) or ``litevar`` (next-scale transformers, with LiteVAR's attention numerics)."""
    if kind not in ("uniform", "litevar"):
        raise QuantizationError(f"a QuantConfig recipe is uniform or litevar, not {kind!r}.")
    RECIPE_KINDS.register(config.name, kind)
    return RECIPES.register(config.name, config)


def recipe_names(kind: str | None = None) -> tuple[str, ...]:
    """Every recipe name, or those of one kind (:data:`KINDS`), in registration order."""
    if kind is not None and kind not in KINDS:
        raise QuantizationError(f"unknown recipe kind {kind!r}: choose one of {', '.join(KINDS)}.")
    return tuple(name for name in RECIPE_KINDS if kind is None or RECIPE_KINDS.get(name) == kind)


def get_recipe(name: str) -> QuantConfig:
    """The registered recipe ``name``, or one clear error listing the known recipes."""
    return RECIPES.get(name)
