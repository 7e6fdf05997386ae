"""Published methods as named, serializable configurations of effigy's components.

Each method's module registers its configs in :data:`RECIPES` (and its mixed-precision methods in
:data:`MIXED_PRECISION_RECIPES`) on import, each flagged with its kind in :data:`RECIPE_KINDS` (uniform, litevar,
mixed-precision; :func:`recipe_names` lists them by kind); look configs up with :func:`get_recipe`.
"""
# ViDiT-Q's recipes register first, MixDQ's and LiteVAR's after: the registries list (and errors name) them in that order
from effigy.recipes.base import RECIPE_KINDS, RECIPES, get_recipe, recipe_names, register_recipe  # noqa: I001
from effigy.recipes.mixed_precision import MIXED_PRECISION_RECIPES
from effigy.recipes.vidit_q import fast_cpu_variant
from effigy.recipes.vidit_q_mp import VIDIT_Q_GROUPS, VIDIT_Q_MP
from effigy.recipes.mixdq import MIXDQ_GROUPS
from effigy.recipes.litevar import LITEVAR_RECIPES, litevar_attention_quant


def check_recipe_name(name: str) -> str:
    """``name`` if it is a registered recipe of any kind, else one error listing them by kind."""
    if name not in RECIPE_KINDS:
        from effigy.errors import QuantizationError

        raise QuantizationError(f"unknown recipe {name!r}: choose one of {', '.join(recipe_names('uniform'))}, a "
                                f"LiteVAR recipe ({', '.join(recipe_names('litevar'))}) or a mixed-precision recipe "
                                f"({', '.join(recipe_names('mixed-precision'))}, with --allocation).")
    return name


__all__ = ["LITEVAR_RECIPES", "MIXDQ_GROUPS", "MIXED_PRECISION_RECIPES", "RECIPES", "RECIPE_KINDS", "VIDIT_Q_GROUPS",
           "VIDIT_Q_MP", "check_recipe_name", "fast_cpu_variant", "get_recipe", "litevar_attention_quant",
           "recipe_names", "register_recipe"]
