"""Band ("window") attention over the flattened token sequence whose cost really shrinks with the window.

Each query i attends to keys j with |i - j| <= half_window. Queries are cut into chunks; a chunk only
meets the keys its band can reach (chunk + 2 * half_window of them), gathered with ``unfold`` so the
whole band is one batched ``scaled_dot_product_attention`` call, not a full attention under a mask.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from effigy.errors import EffigyError


def window_chunk(half_window: int) -> int:
    """Query chunk length: twice the half-width keeps the gathered keys at 2x the ideal band."""
    return max(1, 2 * half_window)


def band_mask(num_tokens: int, half_window: int, chunk: int) -> torch.Tensor:
    """Boolean (chunks, chunk, chunk + 2*half) mask of the keys each query in a chunk may see.

    Padded queries past the end see their (zero) padded neighbours so no row is empty; they are cut off.
    """
    chunks = math.ceil(num_tokens / chunk)
    query = torch.arange(chunks * chunk).view(chunks, chunk, 1)
    key = (torch.arange(chunks).view(chunks, 1, 1) * chunk - half_window
           + torch.arange(chunk + 2 * half_window).view(1, 1, -1))
    inside = (query - key).abs() <= half_window
    real_key = (key >= 0) & (key < num_tokens)
    return inside & (real_key | (query >= num_tokens))


def band_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, half_window: int,
                   scale: float | None = None) -> torch.Tensor:
    """Attention of (..., tokens, head_dim) tensors restricted to the band |i - j| <= half_window."""
    if half_window < 0:
        raise EffigyError(f"window half-width must be >= 0, got {half_window}")
    n = query.shape[-2]
    if half_window >= n - 1:
        return F.scaled_dot_product_attention(query, key, value, scale=scale)
    chunk = window_chunk(half_window)
    chunks = math.ceil(n / chunk)
    tail = chunks * chunk - n
    q = F.pad(query, (0, 0, 0, tail)).unflatten(-2, (chunks, chunk))
    span = chunk + 2 * half_window
    k = F.pad(key, (0, 0, half_window, tail + half_window)).unfold(-2, span, chunk).transpose(-1, -2)
    v = F.pad(value, (0, 0, half_window, tail + half_window)).unfold(-2, span, chunk).transpose(-1, -2)
    mask = band_mask(n, half_window, chunk).to(query.device)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out.flatten(-3, -2)[..., :n, :]


def band_pairs(num_tokens: int, half_window: int) -> int:
    """Query-key pairs ``band_attention`` computes (padding included): what its FLOPs are counted from."""
    if half_window >= num_tokens - 1:
        return num_tokens * num_tokens
    chunk = window_chunk(half_window)
    return math.ceil(num_tokens / chunk) * chunk * (chunk + 2 * half_window)


def half_window_for(num_tokens: int, window_fraction: float) -> int:
    """Half-width of a window covering ``window_fraction`` of the sequence (at least one neighbour)."""
    if not 0 < window_fraction <= 1:
        raise EffigyError(f"window fraction must be in (0, 1], got {window_fraction}")
    return max(1, round(num_tokens * window_fraction / 2))
