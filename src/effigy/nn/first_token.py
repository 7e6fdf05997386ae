"""BOS-aware text quantization (MixDQ, https://arxiv.org/abs/2405.17873): the first token of the text that
feeds cross-attention ([CLS] / BOS) takes its own path through a half-precision copy of the K / V weights,
every other token the quantized layer.

Why a split and not a precomputed K / V: MixDQ's CLIP encoder is causal, so its BOS output is the same for
every prompt and its K / V can be computed once. all-MiniLM-L6-v2 is bidirectional: its [CLS] output depends
on the prompt, so the first token's K / V is computed per prompt, from fp16 weights held beside the packed
ones (counted in the held bytes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effigy.core.hooks import observing
from effigy.errors import QuantizationError
from effigy.nn.quant_linear import QuantLinear


class FirstTokenSplitLinear(nn.Module):
    """``quantized`` for tokens 1.., a half-precision linear for token 0 of each [batch, tokens, features] input."""

    def __init__(self, quantized: QuantLinear, bias: bool) -> None:
        super().__init__()
        self.quantized = quantized
        self.in_features, self.out_features = quantized.in_features, quantized.out_features
        self.register_buffer("first_token_weight", torch.zeros(self.out_features, self.in_features, dtype=torch.float16))
        self.register_buffer("first_token_bias", torch.zeros(self.out_features, dtype=torch.float16) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, quantized: QuantLinear) -> "FirstTokenSplitLinear":
        layer = cls(quantized, linear.bias is not None)
        layer.first_token_weight.copy_(linear.weight.detach())
        if linear.bias is not None:
            layer.first_token_bias.copy_(linear.bias.detach())
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise QuantizationError(f"a first-token split layer takes [batch, tokens, features] text states, got shape "
                                    f"{tuple(x.shape)}; apply fp_first_token to cross-attention K / V only.")
        bias = None if self.first_token_bias is None else self.first_token_bias.float()
        first = F.linear(x[:, :1].float(), self.first_token_weight.float(), bias)  # transient float copy
        return torch.cat([first.to(x.dtype), self.quantized(x[:, 1:]).to(x.dtype)], dim=1)

    def own_nbytes(self) -> int:
        """Bytes of the first token's half-precision path (the quantized layer counts its own)."""
        return sum(t.numel() * t.element_size() for t in (self.first_token_weight, self.first_token_bias)
                   if t is not None)


@torch.no_grad()
def first_token_outlier_ratio(model: nn.Module, layers: list[str], calib_loop) -> float:
    """How far the first token stands out at the input of ``layers``: its max-abs over channels divided by the
    median of the prompt's other real tokens' max-abs, averaged over layers and calls of one calibration run.

    Padding positions (``encoder_attention_mask == 0`` in the model's call) are left out of the median: they
    are masked out of attention, and counting them would call the first token an outlier against padding.
    Above ~2 a range shared across tokens is set by that token (MixDQ's case for a split); near or below 1
    it is a token like the others.
    """
    ratios: list[float] = []
    masks: list[torch.Tensor | None] = [None]

    def remember_mask(_name, _module, _args, kwargs):
        masks[0] = kwargs.get("encoder_attention_mask")

    def record(_name, _module, args):
        x = args[0]
        if x.dim() == 3 and x.shape[1] > 1:
            peaks = x.abs().amax(dim=-1).float()  # [batch, tokens]
            others = peaks[:, 1:]
            mask = masks[0]
            if mask is not None and tuple(mask.shape) == tuple(peaks.shape):
                others = others.masked_fill(mask[:, 1:] <= 0, float("nan"))
            median = others.nanmedian(dim=1).values
            real = ~median.isnan()  # a prompt of one real token has nothing to compare against
            if real.any():
                ratios.append((peaks[real, 0] / median[real].clamp_min(1e-12)).mean().item())

    with observing(model, [""], remember_mask, with_kwargs=True), observing(model, layers, record):
        calib_loop(model)
    if not ratios:
        raise QuantizationError("the calibration run never reached the first-token layers with [batch, tokens, "
                                "features] inputs; check the recipe's fp_first_token patterns.")
    return sum(ratios) / len(ratios)
