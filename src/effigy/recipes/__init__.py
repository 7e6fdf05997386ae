"""Published methods as named, serializable configurations of effigy's components."""
from effigy.recipes.vidit_q import RECIPES, fast_cpu_variant, get_recipe

__all__ = ["RECIPES", "fast_cpu_variant", "get_recipe"]
