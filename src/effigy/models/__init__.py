"""Model zoo: builders for the project's own small models, training commands, and loaders for shipped weights."""

from effigy.checkpoint.quantized import register_model_class


def _pooled_pixart() -> type:
    from effigy.models.generators.t2i_shapes import PixArtWithPooledText

    return PixArtWithPooledText


def _var() -> type:
    from effigy.models.var.transformer import VARTransformer

    return VARTransformer


register_model_class("PixArtWithPooledText", _pooled_pixart)
register_model_class("VARTransformer", _var)
