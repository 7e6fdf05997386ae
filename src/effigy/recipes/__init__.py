"""Published methods as named, serializable configurations of effigy's components.

Each method's module registers its configs in :data:`RECIPES` (and its mixed-precision methods in
:data:`MIXED_PRECISION_RECIPES`) on import; look them up with :func:`get_recipe`.
"""
# ViDiT-Q's recipes register first, MixDQ's and LiteVAR's after: the registries list (and errors name) them in that order
from effigy.recipes.base import RECIPES, get_recipe, register_recipe  # noqa: I001
from effigy.recipes.mixed_precision import MIXED_PRECISION_RECIPES
from effigy.recipes.vidit_q import fast_cpu_variant
from effigy.recipes.vidit_q_mp import VIDIT_Q_GROUPS, VIDIT_Q_MP
from effigy.recipes.mixdq import MIXDQ_GROUPS
from effigy.recipes.litevar import LITEVAR_RECIPES, litevar_attention_quant


def check_recipe_name(name: str) -> str:
    """``name`` if it is a registered recipe or mixed-precision recipe, else one error listing both kinds."""
    if name not in RECIPES and name not in MIXED_PRECISION_RECIPES:
        from effigy.errors import QuantizationError

        raise QuantizationError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)} or a mixed-precision "
                                f"recipe ({', '.join(MIXED_PRECISION_RECIPES)}, with --allocation).")
    return name


__all__ = ["LITEVAR_RECIPES", "MIXDQ_GROUPS", "MIXED_PRECISION_RECIPES", "RECIPES", "VIDIT_Q_GROUPS", "VIDIT_Q_MP",
           "check_recipe_name", "fast_cpu_variant", "get_recipe", "litevar_attention_quant", "register_recipe"]
