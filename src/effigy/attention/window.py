"""Band ("window") attention over the flattened token sequence whose cost really shrinks with the window.

Each query i attends to keys j with |i - j| <= half_window. Two kernels compute it, chosen by the token count
(:func:`band_kernel`, logged once per shape):

- ``chunked``: queries cut into chunks; a chunk only meets the keys its band can reach (chunk + 2 * half_window
  of them), gathered with ``unfold`` so the whole band is one batched ``scaled_dot_product_attention`` call.
  Below :data:`FLEX_MIN_TOKENS` tokens it is the faster one on CPU.
- ``flex``: ``torch.nn.attention.flex_attention`` with a block mask of the band (blocks of
  :data:`FLEX_BLOCK` tokens); blocks outside the band are skipped, not masked. Compiled by inductor (alone, or
  inside an ``effigy.compile``-d model). Measured crossover and speed-ups:
  benchmarks/results/checks/band_kernels.md.

Both compute the same attention (tested against a dense masked reference).
"""
from __future__ import annotations

import functools
import logging
import math

import torch
import torch.nn.functional as F

from effigy.errors import EffigyError

log = logging.getLogger(__name__)
KERNELS = ("chunked", "flex")
FLEX_MIN_TOKENS = 1024  # from benchmarks/results/checks/band_kernels.md: below it the chunked kernel is faster
FLEX_BLOCK = 128  # tokens per flex_attention block (its CPU default)


def band_kernel(num_tokens: int, half_window: int) -> str:
    """The kernel :func:`band_attention` runs for this shape: ``flex`` from :data:`FLEX_MIN_TOKENS` tokens on
    (where a band skips whole blocks), ``chunked`` below."""
    kernel = "flex" if num_tokens >= FLEX_MIN_TOKENS and half_window < num_tokens - 1 else "chunked"
    _log_kernel(num_tokens, half_window, kernel)
    return kernel


@functools.lru_cache(maxsize=None)
def _log_kernel(num_tokens: int, half_window: int, kernel: str) -> None:
    log.info("band attention over %d tokens (half window %d): %s kernel", num_tokens, half_window, kernel)


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
                   scale: float | None = None, kernel: str | None = None) -> torch.Tensor:
    """Attention of (..., tokens, head_dim) tensors restricted to the band |i - j| <= half_window.

    Args:
        query, key, value: (batch, heads, tokens, head_dim) (any leading dims for ``chunked``).
        half_window: how far each query sees on either side.
        scale: the logits' scale (default 1 / sqrt(head_dim)).
        kernel: ``chunked`` or ``flex``; default :func:`band_kernel`'s choice for the shape.
    """
    if half_window < 0:
        raise EffigyError(f"window half-width must be >= 0, got {half_window}")
    n = query.shape[-2]
    if half_window >= n - 1:
        return F.scaled_dot_product_attention(query, key, value, scale=scale)
    kernel = kernel or band_kernel(n, half_window)
    if kernel not in KERNELS:
        raise EffigyError(f"band attention kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel == "flex":
        return flex_band_attention(query, key, value, half_window, scale)
    return _chunked_band_attention(query, key, value, half_window, scale)


def _chunked_band_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, half_window: int,
                            scale: float | None) -> torch.Tensor:
    n = query.shape[-2]
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


@torch.compiler.disable
def flex_band_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, half_window: int,
                        scale: float | None = None) -> torch.Tensor:
    """The band through ``flex_attention`` with a block mask: blocks no query of which can see a key of the other
    are skipped. Compiled on its own, once per shape; inside a compiled model it stays outside the graph (a graph
    break), since inductor's CPU flex template fuses no epilogue."""
    mask = _band_block_mask(query.shape[-2], half_window, query.device.type)
    return _compiled_flex()(query, key, value, block_mask=mask, scale=scale)


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


@functools.lru_cache(maxsize=64)
def _band_block_mask(num_tokens: int, half_window: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    def inside(_batch, _head, q_index, k_index):
        return (q_index - k_index).abs() <= half_window

    return create_block_mask(inside, None, None, num_tokens, num_tokens, device=device, BLOCK_SIZE=FLEX_BLOCK)


def band_pairs(num_tokens: int, half_window: int) -> int:
    """Query-key pairs ``band_attention`` computes for this shape with the kernel it picks (padding and the
    partly covered blocks included): what its FLOPs are counted from."""
    if half_window >= num_tokens - 1:
        return num_tokens * num_tokens
    if band_kernel(num_tokens, half_window) == "flex":
        blocks = math.ceil(num_tokens / FLEX_BLOCK)
        reach = math.ceil(half_window / FLEX_BLOCK)  # key blocks on either side a query block can touch
        kept = sum(min(blocks - 1, b + reach) - max(0, b - reach) + 1 for b in range(blocks))
        return kept * FLEX_BLOCK * FLEX_BLOCK
    chunk = window_chunk(half_window)
    return math.ceil(num_tokens / chunk) * chunk * (chunk + 2 * half_window)


def half_window_for(num_tokens: int, window_fraction: float) -> int:
    """Half-width of a window covering ``window_fraction`` of the sequence (at least one neighbour)."""
    if not 0 < window_fraction <= 1:
        raise EffigyError(f"window fraction must be in (0, 1], got {window_fraction}")
    return max(1, round(num_tokens * window_fraction / 2))
