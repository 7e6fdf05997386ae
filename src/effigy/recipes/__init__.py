"""Published methods as named, serializable configurations of effigy's components.

Each method's module registers its configs in :data:`RECIPES` on import; look them up with
:func:`get_recipe`.
"""
from effigy.recipes.base import RECIPES, get_recipe, register_recipe
from effigy.recipes.vidit_q import fast_cpu_variant

__all__ = ["RECIPES", "fast_cpu_variant", "get_recipe", "register_recipe"]
