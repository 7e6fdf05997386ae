"""``var-digits``: a class-conditional next-scale prediction transformer (VAR, Tian et al., NeurIPS 2024,
https://arxiv.org/abs/2404.02905) over the ``var-digits-vqvae`` token maps.

All token maps of one image form one sequence, coarse to fine (1 + 4 + 9 + ... tokens); a token attends
to every token of its own and coarser scales (block-causal), so generation runs one forward per scale
with a KV cache. Blocks are AdaLN-conditioned on the class embedding; attention is diffusers'
``Attention`` with effigy's processor (:class:`VARAttnProcessor`), so the quantizer and attention methods
that act on diffusers models (LiteVAR's windows and CFG sharing) act here too.

Sampling is classifier-free guided with VAR's scale-dependent ratio (guidance grows linearly from 0 at the
first scale to ``guidance_scale`` at the last) and top-k / top-p filtering.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn

from effigy.errors import ModelError
from effigy.models.config import TrainConfig
from effigy.models.training_state import resumable_steps, training_step
from effigy.models.var.tokenizer import MultiScaleVQVAE, cosine_factor
from effigy.worlds.digits import NUM_CLASSES, augment, load_digits_images, split_indices


@dataclass
class VARConfig(TrainConfig):
    """Architecture and training settings of the shipped VAR (saved beside its weights)."""

    tokenizer: str = "var-digits-vqvae"
    num_layers: int = 6
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    mlp_ratio: float = 4.0
    num_classes: int = NUM_CLASSES
    class_dropout: float = 0.1  # labels replaced by the null label in training, for classifier-free guidance
    label_smoothing: float = 0.1
    train_steps: int = 4000
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0
    checkpoint_every: int = 250
    # the tokenizer's, repeated so the transformer can be built on its own (checked against it at use)
    scales: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    latent_dim: int = 32
    codebook_size: int = 256

    def __post_init__(self) -> None:
        self.scales = tuple(int(s) for s in self.scales)

    @property
    def width(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


def scale_of_tokens(scales: tuple[int, ...]) -> torch.Tensor:
    """The scale index of every position of the full sequence, [tokens]."""
    return torch.cat([torch.full((s * s,), k) for k, s in enumerate(scales)])


def block_causal_mask(scales: tuple[int, ...]) -> torch.Tensor:
    """Additive attention bias [tokens, tokens]: 0 where the key's scale <= the query's, -inf elsewhere."""
    level = scale_of_tokens(scales)
    allowed = level[None, :] <= level[:, None]
    return torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))


class LayerKV:
    """One layer's cached keys and values [B, heads, seen, head_dim], grown one scale at a time."""

    def __init__(self) -> None:
        self.key: torch.Tensor | None = None
        self.value: torch.Tensor | None = None

    def extend(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.key = key if self.key is None else torch.cat([self.key, key], 2)
        self.value = value if self.value is None else torch.cat([self.value, value], 2)
        return self.key, self.value


class ScaleKVCache:
    """The generation loop's cache: one :class:`LayerKV` per block."""

    def __init__(self, num_layers: int) -> None:
        self.layers = [LayerKV() for _ in range(num_layers)]

    @property
    def seen(self) -> int:
        key = self.layers[0].key
        return 0 if key is None else int(key.shape[2])


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


class VARAttnProcessor:
    """Self-attention over the sequence so far: with ``kv_cache`` the new tokens' keys and values are
    appended to it and the queries attend to all of them (the block-causal mask is then implicit).

    ``scale_index`` says which scale the queries belong to; this processor does not need it, the LiteVAR
    processors that replace it do."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask: torch.Tensor | None = None, kv_cache: LayerKV | None = None,
                 scale_index: int | None = None) -> torch.Tensor:
        query, key, value = (split_heads(p(hidden_states), attn.heads) for p in (attn.to_q, attn.to_k, attn.to_v))
        if kv_cache is not None:
            key, value = kv_cache.extend(key, value)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        return attn.to_out[0](out.transpose(1, 2).flatten(2))


class AdaLNBlock(nn.Module):
    """Pre-norm transformer block whose norms are shifted, scaled and gated by the class embedding."""

    def __init__(self, config: VARConfig) -> None:
        super().__init__()
        width = config.width
        self.attn = Attention(query_dim=width, heads=config.num_attention_heads, dim_head=config.attention_head_dim,
                              bias=True, out_bias=True, processor=VARAttnProcessor())
        hidden = int(width * config.mlp_ratio)
        self.ff = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, attention_mask: torch.Tensor | None,
                kv_cache: LayerKV | None, scale_index: int | None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(cond).unsqueeze(1).chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.attn(h, attention_mask=attention_mask, kv_cache=kv_cache, scale_index=scale_index)
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.ff(h)


class VARTransformer(nn.Module):
    """Next-scale prediction: ``forward`` is the teacher-forced training pass; ``generate`` samples."""

    def __init__(self, config: VARConfig) -> None:
        super().__init__()
        self.config = config
        width, tokens = config.width, sum(s * s for s in config.scales)
        self.class_embedding = nn.Embedding(config.num_classes + 1, width)  # the last label is the null one
        self.input_projection = nn.Linear(config.latent_dim, width)
        self.start_position = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.position = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
        self.level_embedding = nn.Embedding(len(config.scales), width)
        self.blocks = nn.ModuleList(AdaLNBlock(config) for _ in range(config.num_layers))
        self.head_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.head_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.head = nn.Linear(width, config.codebook_size)
        self.register_buffer("level", scale_of_tokens(config.scales), persistent=False)
        self.register_buffer("mask", block_causal_mask(config.scales), persistent=False)
        # Cached generation calls ``scale_hook(model, x, cond, cache, index)`` instead of running the blocks,
        # when set: how token-pruning methods (FastVAR) change what one scale computes. None: run them all.
        self.scale_hook: Callable[..., torch.Tensor] | None = None
        self._zero_init_gates()

    def _zero_init_gates(self) -> None:
        for block in self.blocks:  # each block starts as the identity (DiT's adaLN-Zero)
            nn.init.zeros_(block.ada[1].weight)
            nn.init.zeros_(block.ada[1].bias)

    def save_config(self, directory: str | Path) -> None:
        """``config.json`` naming this class, so that ``effigy.save`` / ``effigy.load`` handle a (quantized) VAR."""
        import json

        (Path(directory) / "config.json").write_text(
            json.dumps({"_class_name": type(self).__name__, **self.config.to_dict()}, indent=2) + "\n")

    @classmethod
    def from_config(cls, config: dict) -> VARTransformer:
        return cls(VARConfig.from_dict({k: v for k, v in config.items() if not k.startswith("_")}))

    @property
    def null_label(self) -> int:
        return self.config.num_classes

    @property
    def scales(self) -> tuple[int, ...]:
        return self.config.scales

    def scale_span(self, index: int) -> tuple[int, int]:
        """The positions of scale ``index`` in the full sequence."""
        start = sum(s * s for s in self.scales[:index])
        return start, start + self.scales[index] ** 2

    def embed(self, class_labels: torch.Tensor, inputs: torch.Tensor | None, start: int) -> tuple[torch.Tensor,
                                                                                                  torch.Tensor]:
        """(token embeddings of positions ``start``.., condition). Position 0 is the class start token; the
        others are projected ``inputs`` [B, n, latent_dim]."""
        cond = self.class_embedding(class_labels)
        parts = []
        if start == 0:
            parts.append(cond.unsqueeze(1) + self.start_position)
        if inputs is not None:
            parts.append(self.input_projection(inputs))
        x = torch.cat(parts, 1)
        positions = slice(start, start + x.shape[1])
        return x + self.position[:, positions] + self.level_embedding(self.level[positions]), cond

    def hidden_states(self, x: torch.Tensor, cond: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      cache: ScaleKVCache | None = None, scale_index: int | None = None) -> torch.Tensor:
        """The blocks' output for token embeddings ``x`` (before the head)."""
        for k, block in enumerate(self.blocks):
            x = block(x, cond, attention_mask, None if cache is None else cache.layers[k], scale_index)
        return x

    def logits(self, hidden: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The AdaLN-modulated head: code logits of the blocks' output."""
        shift, scale = self.head_ada(cond).unsqueeze(1).chunk(2, dim=-1)
        return self.head(self.head_norm(hidden) * (1 + scale) + shift)

    def run_blocks(self, x: torch.Tensor, cond: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   cache: ScaleKVCache | None = None, scale_index: int | None = None) -> torch.Tensor:
        return self.logits(self.hidden_states(x, cond, attention_mask, cache, scale_index), cond)

    def forward(self, class_labels: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, tokens, codebook] from the labels and the next-scale inputs
        [B, tokens - 1, latent_dim] (:meth:`MultiScaleVQVAE.teacher_forcing_inputs`)."""
        tokens = sum(s * s for s in self.scales)
        if inputs.dim() != 3 or inputs.shape[1:] != (tokens - 1, self.config.latent_dim):
            raise ModelError(f"VAR inputs must be [B, {tokens - 1}, {self.config.latent_dim}], got "
                             f"{tuple(inputs.shape)}.")
        x, cond = self.embed(class_labels, inputs, 0)
        return self.run_blocks(x, cond, self.mask)

    def scale_logits(self, class_labels: torch.Tensor, inputs: torch.Tensor | None, index: int,
                     cache: ScaleKVCache) -> torch.Tensor:
        """Logits of scale ``index``'s tokens, running only them against the cache of the coarser scales."""
        start, _ = self.scale_span(index)
        if cache.seen != start:
            raise ModelError(f"the KV cache holds {cache.seen} positions; scale {index} starts at {start}.")
        x, cond = self.embed(class_labels, inputs, start)
        if self.scale_hook is not None:
            return self.scale_hook(self, x, cond, cache, index)
        return self.run_blocks(x, cond, cache=cache, scale_index=index)

    @torch.no_grad()
    def generate(self, tokenizer: MultiScaleVQVAE, class_labels: torch.Tensor, guidance_scale: float = 3.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int = 0, use_cache: bool = True) -> torch.Tensor:
        """Class-conditional images [B, 1, H, W] in [-1, 1].

        Args:
            tokenizer: the VQ tokenizer the transformer was trained on.
            class_labels: one label per image.
            guidance_scale: classifier-free guidance at the last scale (0 at the first; 0 turns CFG off and
                runs the conditional batch alone).
            top_k, top_p: sampling filters (0 and 1.0 keep every code).
            seed: the sampling generator's seed.
            use_cache: False re-runs the whole prefix each scale with the block-causal mask (a reference
                for the cached loop, which must give the same images).
        Returns:
            The decoded images.
        """
        check_tokenizer(self.config, tokenizer.config)
        generator = torch.Generator().manual_seed(seed)
        guided = guidance_scale != 0
        labels = torch.cat([class_labels, torch.full_like(class_labels, self.null_label)]) if guided else class_labels
        n = len(class_labels)
        f_hat = torch.zeros(n, self.config.latent_dim, tokenizer.config.latent_size, tokenizer.config.latent_size)
        cache, inputs, history = ScaleKVCache(len(self.blocks)), None, []
        for k in range(len(self.scales)):
            if use_cache:
                logits = self.scale_logits(labels, inputs, k, cache)
            else:
                logits = self._prefix_logits(labels, history, k)
            if guided:
                ratio = guidance_scale * k / max(len(self.scales) - 1, 1)
                logits = (1 + ratio) * logits[:n] - ratio * logits[n:]
            indices = sample_codes(logits, top_k, top_p, generator)
            f_hat, nxt = tokenizer.next_scale_input(k, f_hat, indices)
            if nxt is not None:
                inputs = torch.cat([nxt, nxt]) if guided else nxt
                history.append(inputs)
        return tokenizer.decode_latent(f_hat)

    def _prefix_logits(self, labels: torch.Tensor, history: list[torch.Tensor], index: int) -> torch.Tensor:
        start, end = self.scale_span(index)
        x, cond = self.embed(labels, torch.cat(history, 1) if history else None, 0)
        return self.run_blocks(x, cond, self.mask[:end, :end])[:, start:end]


def sample_codes(logits: torch.Tensor, top_k: int, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One code per position from ``logits`` [B, n, K], keeping the ``top_k`` most likely codes (0: all)
    and the smallest set whose probability reaches ``top_p``."""
    if top_k > 0:
        threshold = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    if top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - ordered.softmax(-1) >= top_p  # mass before this code already reaches top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    probabilities = logits.softmax(-1).flatten(0, 1)
    return torch.multinomial(probabilities, 1, generator=generator).view(logits.shape[:2])


def check_tokenizer(config: VARConfig, tokenizer_config) -> None:
    """The transformer and the tokenizer must agree on scales, latent width and codebook size."""
    mine = (config.scales, config.latent_dim, config.codebook_size)
    theirs = (tuple(tokenizer_config.scales), tokenizer_config.latent_dim, tokenizer_config.codebook_size)
    if mine != theirs:
        raise ModelError(f"this VAR was built for (scales, latent_dim, codebook_size) = {mine}, the tokenizer has "
                         f"{theirs}: load the tokenizer it was trained with.")


def build_transformer(config: VARConfig) -> VARTransformer:
    return VARTransformer(config)


def train(config: VARConfig, progress: Callable[[int, float], None] | None = None,
          checkpoint_dir: Path | None = None, tokenizer: MultiScaleVQVAE | None = None) -> VARTransformer:
    """Seeded, resumable next-scale training on the digits train split (cross-entropy over all token maps,
    labels dropped to the null label at ``class_dropout``).

    Args:
        config: the transformer settings; scales / latent_dim / codebook_size must be the tokenizer's.
        progress: called with (step, loss) after every step.
        checkpoint_dir: where the resumable state is kept; None keeps none.
        tokenizer: for tests; by default the shipped ``config.tokenizer``.
    Returns:
        The transformer in eval mode.
    """
    if tokenizer is None:
        from effigy.models.zoo import load_zoo_model

        tokenizer, _ = load_zoo_model(config.tokenizer)
    tokenizer = tokenizer.eval().requires_grad_(False)
    check_tokenizer(config, tokenizer.config)
    images, labels = load_digits_images(tokenizer.config.image_size)
    train_idx, _ = split_indices(len(images))
    images, labels = images[train_idx], labels[train_idx]
    torch.manual_seed(config.seed)
    model = VARTransformer(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(config.seed)
    for step in resumable_steps(checkpoint_dir, {"var": model}, optimizer, generator, asdict(config),
                                config.train_steps, config.checkpoint_every):
        loss = _batch_loss(model, tokenizer, images, labels, config, generator)
        training_step(optimizer, loss, step, config.learning_rate * cosine_factor(step, config.train_steps),
                      (model, 2.0), progress)
    return model.eval()


def _batch_loss(model: VARTransformer, tokenizer: MultiScaleVQVAE, images: torch.Tensor, labels: torch.Tensor,
                config: VARConfig, generator: torch.Generator) -> torch.Tensor:
    pick = torch.randint(0, len(images), (config.batch_size,), generator=generator)
    with torch.no_grad():
        indices = tokenizer.encode(augment(images[pick], generator))
        inputs = tokenizer.teacher_forcing_inputs(indices)
    batch_labels = labels[pick].clone()
    dropped = torch.rand(len(pick), generator=generator) < config.class_dropout
    batch_labels[dropped] = model.null_label
    logits = model(batch_labels, inputs)
    target = torch.cat(indices, 1)
    return F.cross_entropy(logits.flatten(0, 1), target.flatten(), label_smoothing=config.label_smoothing)
