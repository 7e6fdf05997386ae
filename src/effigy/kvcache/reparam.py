"""PM-KVQ's key reparameterization: divide each key channel by s = max|K|^alpha and multiply the
matching query channel by s, folded into k_proj / q_proj, so attention scores are unchanged but
outlier key channels shrink before quantization.

RoPE rotates channel pairs (i, i + head_dim/2) together, so a pair shares one scale and the scaling
commutes with the rotation. Maxima are taken after RoPE on calibration sequences (with stretched
positions when asked, as for the sensitivity profile), and alpha is searched per layer for the least
attention-output error with keys at a low width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache, DynamicLayer

from effigy.core.hooks import observing
from effigy.errors import EffigyError
from effigy.kvcache.progressive import kv_geometry
from effigy.kvcache.quantizer import KVChunk

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


class _KeepLayer(DynamicLayer):
    def update(self, key_states, value_states, *args, **kwargs):
        self.kept = (key_states.detach(), value_states.detach())
        return super().update(key_states, value_states, *args, **kwargs)


def _attention_layers(model: nn.Module) -> list[nn.Module]:
    layers = [layer.self_attn for layer in getattr(getattr(model, "model", None), "layers", [])]
    if not layers or not all(hasattr(a, "q_proj") and hasattr(a, "k_proj") for a in layers):
        raise EffigyError(f"key reparameterization supports Llama/Qwen2-style attention (q_proj, k_proj); "
                          f"{type(model).__name__} has none")
    return layers


@torch.no_grad()
def capture_qkv(model: nn.Module, ids: torch.Tensor, stretch: float = 1.0) -> list[tuple[torch.Tensor, ...]]:
    """Per layer: queries and keys after RoPE, and values, for one sequence ``ids`` [1, T]."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    attention = _attention_layers(model)
    queries, rotary = {}, {}

    def keep_query(name: str, _module, _args, output) -> None:
        queries[name] = output

    def keep_rotary(name: str, _module, args, kwargs) -> None:
        rotary[name] = kwargs.get("position_embeddings", args[1] if len(args) > 1 else None)

    names = [f"model.layers.{i}.self_attn" for i in range(len(attention))]  # where _attention_layers found them
    cache = Cache(layers=[_KeepLayer() for _ in attention])
    positions = (torch.arange(ids.shape[1]) * stretch).round().long().unsqueeze(0)
    with observing(model, [f"{n}.q_proj" for n in names], keep_query, "after"), \
            observing(model, names, keep_rotary, with_kwargs=True):
        model(ids, position_ids=positions, past_key_values=cache, use_cache=True)
    queries = {i: queries[f"{n}.q_proj"] for i, n in enumerate(names)}
    rotary = {i: rotary[n] for i, n in enumerate(names)}
    out = []
    for i, attn in enumerate(attention):
        q = queries[i].view(1, ids.shape[1], -1, attn.head_dim).transpose(1, 2)
        cos, sin = rotary[i]
        q, _ = apply_rotary_pos_emb(q, q, cos, sin)
        out.append((q, *cache.layers[i].kept))
    return out


def pair_shared_maxima(keys: torch.Tensor) -> torch.Tensor:
    """[kv_heads, head_dim] max |K| over tokens, equal within each RoPE pair (i, i + head_dim/2)."""
    m = keys.abs().amax(dim=(0, 2))
    half = m.shape[-1] // 2
    shared = torch.maximum(m[..., :half], m[..., half:])
    return torch.cat([shared, shared], -1).clamp_min(1e-5)


def attention_error(q, k, v, scale: torch.Tensor, bits: int, group_size: int) -> float:
    """Relative error of causal attention output when keys are stored as K / scale at ``bits``."""
    groups = q.shape[1] // k.shape[1]
    k_stored = KVChunk.from_float(k / scale[None, :, None, :], bits, group_size).dequantize() * scale[None, :, None, :]
    expand = lambda t: t.repeat_interleave(groups, dim=1)
    exact = F.scaled_dot_product_attention(q, expand(k), expand(v), is_causal=True)
    approx = F.scaled_dot_product_attention(q, expand(k_stored), expand(v), is_causal=True)
    return ((approx - exact).norm() / exact.norm()).item()


def search_key_scales(model: nn.Module, sequences: list[torch.Tensor], bits: int = 2, group_size: int = 32,
                      stretch: float = 1.0, alphas: tuple[float, ...] = ALPHAS) -> tuple[list[torch.Tensor], list[float]]:
    """Per layer, the scale max|K|^alpha with the alpha (from ``alphas``) of least attention error."""
    captured = [capture_qkv(model, ids.reshape(1, -1), stretch) for ids in sequences]
    scales, chosen = [], []
    for layer in range(len(captured[0])):
        maxima = torch.stack([pair_shared_maxima(c[layer][1]) for c in captured]).amax(0)
        errors = {a: sum(attention_error(*c[layer], maxima**a, bits, group_size) for c in captured) for a in alphas}
        best = min(errors, key=errors.get)
        scales.append(maxima**best)
        chosen.append(best)
    return scales, chosen


@torch.no_grad()
def fold_key_scales(model: nn.Module, scales: list[torch.Tensor]) -> nn.Module:
    """K' = K / s in k_proj, Q' = Q * s in q_proj (in place): attention scores stay the same."""
    _, kv_heads, head_dim = kv_geometry(model.config)
    for attn, s in zip(_attention_layers(model), scales):
        groups = attn.q_proj.out_features // (kv_heads * head_dim)
        k_scale = s.reshape(-1, 1)
        q_scale = s.repeat_interleave(groups, dim=0).reshape(-1, 1)
        attn.k_proj.weight.div_(k_scale)
        attn.q_proj.weight.mul_(q_scale)
        if attn.k_proj.bias is not None:
            attn.k_proj.bias.div_(k_scale.flatten())
        if attn.q_proj.bias is not None:
            attn.q_proj.bias.mul_(q_scale.flatten())
    return model
