"""The recipe registry: every published method registers its named configs here, and every CLI verb
and bench looks them up by name."""
from __future__ import annotations

from effigy.errors import QuantizationError
from effigy.nn.config import QuantConfig
from effigy.registry import Registry

RECIPES: Registry[QuantConfig] = Registry("recipe", QuantizationError)


def register_recipe(config: QuantConfig) -> QuantConfig:
    """Register ``config`` under its own name (configs are frozen, so a lookup can hand out the one object)."""
    return RECIPES.register(config.name, config)


def get_recipe(name: str) -> QuantConfig:
    """The registered recipe ``name``, or one clear error listing the known recipes."""
    return RECIPES.get(name)
