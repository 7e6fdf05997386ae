"""``var-digits-vqvae``: the multi-scale residual VQ tokenizer of VAR (Tian et al., NeurIPS 2024,
https://arxiv.org/abs/2404.02905; reference code FoundationVision/VAR) for the 16x16 digits.

An image is encoded to one 8x8 latent map ``f``; scale by scale (1x1, 2x2, ... 8x8) the part of ``f`` not
yet explained is pooled to that scale and quantized against one shared codebook, the codes are upsampled
back to 8x8, refined by one of a few shared 3x3 convolutions and added to the reconstruction ``f_hat``. A
next-scale transformer predicts those token maps coarse to fine; its input for scale k+1 is ``f_hat``
after scale k, pooled to scale k+1 (:meth:`MultiScaleVQVAE.next_scale_input`).

The codebook is updated by exponential moving averages of the vectors assigned to it, and a code no
scale used for a while is restarted on a random residual of the batch: without that the 1x1 and 2x2
scales, which see few vectors per image, collapse onto a handful of codes.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from effigy.errors import ModelError
from effigy.models.config import TrainConfig
from effigy.models.training_state import resumable_steps
from effigy.worlds.digits import augment, load_digits_images, split_indices


@dataclass
class VQVAEConfig(TrainConfig):
    """Architecture and training settings of the shipped tokenizer (saved beside its weights)."""

    image_size: int = 16
    scales: tuple[int, ...] = (1, 2, 3, 4, 6, 8)  # side of each token map, coarse to fine; the last is the latent's
    channels: int = 32
    latent_dim: int = 32
    codebook_size: int = 256
    refine_convs: int = 4  # shared 3x3 refinements, picked by scale position
    refine_ratio: float = 0.5  # how much of a code map the refinement replaces
    commitment: float = 0.25
    ema_decay: float = 0.99
    dead_code_usage: float = 0.05  # a code whose EMA count falls below this is restarted
    train_steps: int = 4000
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        self.scales = tuple(int(s) for s in self.scales)  # JSON gives a list
        if list(self.scales) != sorted(set(self.scales)) or self.scales[0] != 1:
            raise ModelError(f"scales must rise strictly from 1, got {self.scales}.")
        if self.image_size % self.scales[-1]:
            raise ModelError(f"the finest scale {self.scales[-1]} must divide image_size {self.image_size}.")

    @property
    def latent_size(self) -> int:
        return self.scales[-1]

    @property
    def tokens(self) -> int:
        return sum(s * s for s in self.scales)


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _resampler(channels: int, factor: int, up: bool) -> list[nn.Module]:
    """Stride-2 convolutions (or nearest upsampling + conv) until the factor is reached."""
    layers: list[nn.Module] = []
    while factor > 1:
        if up:
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1)]
        else:
            layers.append(nn.Conv2d(channels, channels, 4, stride=2, padding=1))
        layers.append(ResBlock(channels))
        factor //= 2
    return layers


class ScaleRefinement(nn.Module):
    """VAR's phi: ``(1 - ratio) * h + ratio * conv(h)``, a few convolutions shared across the scales."""

    def __init__(self, dim: int, count: int, ratio: float) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, 3, padding=1) for _ in range(count))
        self.ratio = ratio

    def forward(self, h: torch.Tensor, position: float) -> torch.Tensor:
        """``position`` in [0, 1] says where the scale sits between the coarsest and the finest."""
        conv = self.convs[min(int(position * len(self.convs)), len(self.convs) - 1)]
        return h.mul(1 - self.ratio) + conv(h).mul(self.ratio)


class MultiScaleVQVAE(nn.Module):
    """Encoder, residual multi-scale quantizer with an EMA codebook, decoder.

    ``encode`` gives one index map per scale (flattened, ``[B, s*s]``), ``decode_indices`` inverts it,
    ``next_scale_input`` is the step the transformer's generation loop repeats.
    """

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        if config.channels % 8:
            raise ModelError(f"channels must be a multiple of 8 (GroupNorm), got {config.channels}.")
        self.config = config
        c, d, factor = config.channels, config.latent_dim, config.image_size // config.latent_size
        self.encoder = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), ResBlock(c), *_resampler(c, factor, up=False),
                                     nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, d, 1))
        self.decoder = nn.Sequential(nn.Conv2d(d, c, 3, padding=1), ResBlock(c), *_resampler(c, factor, up=True),
                                     nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, 1, 3, padding=1))
        self.refine = ScaleRefinement(d, config.refine_convs, config.refine_ratio)
        self.register_buffer("codebook", torch.randn(config.codebook_size, d) * 0.1)
        self.register_buffer("ema_count", torch.ones(config.codebook_size))
        self.register_buffer("ema_sum", self.codebook.clone())

    @property
    def scales(self) -> tuple[int, ...]:
        return self.config.scales

    def _position(self, index: int) -> float:
        return index / max(len(self.scales) - 1, 1)

    def nearest_codes(self, vectors: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (Euclidean) of each row of ``vectors`` [M, D]."""
        distance = vectors.pow(2).sum(1, keepdim=True) - 2 * vectors @ self.codebook.T + self.codebook.pow(2).sum(1)
        return distance.argmin(1)

    def code_map(self, index: int, indices: torch.Tensor) -> torch.Tensor:
        """Scale ``index``'s token indices [B, s*s] as their refined contribution to ``f_hat`` [B, D, L, L]."""
        side, latent = self.scales[index], self.config.latent_size
        h = self.codebook[indices].view(len(indices), side, side, -1).permute(0, 3, 1, 2)
        if side != latent:
            h = F.interpolate(h, size=(latent, latent), mode="bicubic", align_corners=False)
        return self.refine(h, self._position(index))

    def quantize(self, f: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """Residual quantization of latents ``f`` [B, D, L, L].

        Returns:
            (index maps per scale [B, s*s], the reconstruction ``f_hat``, the pooled residual vectors
            each scale quantized, [B*s*s, D], for the codebook update).
        """
        residual, f_hat = f, torch.zeros_like(f)
        indices, pooled = [], []
        for k, side in enumerate(self.scales):
            r = F.interpolate(residual, size=(side, side), mode="area") if side != f.shape[-1] else residual
            vectors = r.permute(0, 2, 3, 1).reshape(-1, r.shape[1])
            idx = self.nearest_codes(vectors.detach()).view(len(f), side * side)
            h = self.code_map(k, idx)
            f_hat, residual = f_hat + h, residual - h
            indices.append(idx)
            pooled.append(vectors)
        return indices, f_hat, pooled

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images [B, 1, H, W] in [-1, 1] -> one index map per scale, [B, s*s] each."""
        self._check_images(images)
        return self.quantize(self.encoder(images))[0]

    def indices_to_latent(self, indices: list[torch.Tensor]) -> torch.Tensor:
        self._check_indices(indices)
        return sum(self.code_map(k, idx) for k, idx in enumerate(indices))

    def decode_latent(self, f_hat: torch.Tensor) -> torch.Tensor:
        return self.decoder(f_hat).clamp(-1, 1)

    def decode_indices(self, indices: list[torch.Tensor]) -> torch.Tensor:
        return self.decode_latent(self.indices_to_latent(indices))

    def next_scale_input(self, index: int, f_hat: torch.Tensor, indices: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Add scale ``index``'s tokens to ``f_hat``; return it and the next scale's input [B, s'*s', D]
        (None after the last scale)."""
        f_hat = f_hat + self.code_map(index, indices)
        if index + 1 == len(self.scales):
            return f_hat, None
        side = self.scales[index + 1]
        pooled = F.interpolate(f_hat, size=(side, side), mode="area") if side != f_hat.shape[-1] else f_hat
        return f_hat, pooled.flatten(2).transpose(1, 2)

    def teacher_forcing_inputs(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """The transformer's inputs for scales 2..K given the true index maps: [B, tokens - 1, D]."""
        self._check_indices(indices)
        f_hat = torch.zeros(len(indices[0]), self.config.latent_dim, self.config.latent_size, self.config.latent_size)
        inputs = []
        for k, idx in enumerate(indices[:-1]):
            f_hat, nxt = self.next_scale_input(k, f_hat, idx)
            inputs.append(nxt)
        return torch.cat(inputs, 1)

    def forward(self, images: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Training pass: (reconstruction, VQ loss, and the index maps and pooled residuals that
        :meth:`update_codebook` takes)."""
        f = self.encoder(images)
        indices, f_hat, pooled = self.quantize(f)
        vq_loss = F.mse_loss(f_hat, f.detach()) + self.config.commitment * F.mse_loss(f, f_hat.detach())
        f_st = f + (f_hat - f).detach()  # straight-through to the encoder
        return self.decoder(f_st), vq_loss, indices, pooled

    @torch.no_grad()
    def update_codebook(self, pooled: list[torch.Tensor], indices: list[torch.Tensor],
                        generator: torch.Generator) -> None:
        """EMA of the vectors assigned to each code; restart codes whose usage decayed away."""
        vectors = torch.cat([v.detach() for v in pooled])
        assigned = torch.cat([i.reshape(-1) for i in indices])
        count = torch.bincount(assigned, minlength=len(self.codebook)).float()
        total = torch.zeros_like(self.ema_sum).index_add_(0, assigned, vectors)
        decay = self.config.ema_decay
        self.ema_count.mul_(decay).add_(count, alpha=1 - decay)
        self.ema_sum.mul_(decay).add_(total, alpha=1 - decay)
        self.codebook.copy_(self.ema_sum / self.ema_count.clamp_min(1e-5).unsqueeze(1))
        dead = (self.ema_count < self.config.dead_code_usage).nonzero().flatten()
        if len(dead):
            pick = torch.randint(0, len(vectors), (len(dead),), generator=generator)
            self.codebook[dead] = vectors[pick]
            self.ema_sum[dead] = vectors[pick]
            self.ema_count[dead] = 1.0

    def _check_images(self, images: torch.Tensor) -> None:
        size = self.config.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (1, size, size):
            raise ModelError(f"the tokenizer takes images [B, 1, {size}, {size}], got {tuple(images.shape)}.")

    def _check_indices(self, indices: list[torch.Tensor]) -> None:
        expected = [s * s for s in self.scales]
        got = [int(i.shape[-1]) for i in indices]
        if got != expected:
            raise ModelError(f"index maps must have {expected} tokens per scale, got {got}.")
        if any(int(i.min()) < 0 or int(i.max()) >= len(self.codebook) for i in indices):
            raise ModelError(f"token indices must lie in [0, {len(self.codebook)}).")


def build_tokenizer(config: VQVAEConfig) -> MultiScaleVQVAE:
    return MultiScaleVQVAE(config)


@dataclass
class CodebookUsage:
    """How many distinct codes each scale used on a set of images, and the reconstruction PSNR."""

    codes_used: list[int] = field(default_factory=list)
    psnr: float = 0.0


@torch.no_grad()
def codebook_usage(tokenizer: MultiScaleVQVAE, images: torch.Tensor) -> CodebookUsage:
    from effigy.metrics.image import psnr_per_image

    indices = tokenizer.encode(images)
    reconstruction = tokenizer.decode_indices(indices)
    return CodebookUsage([int(i.unique().numel()) for i in indices],
                         float(psnr_per_image(reconstruction, images).mean()))


def train(config: VQVAEConfig, progress: Callable[[int, float], None] | None = None,
          checkpoint_dir: Path | None = None) -> MultiScaleVQVAE:
    """Seeded, resumable training on the digits train split: L2 reconstruction + VQ loss, EMA codebook.

    Args:
        config: the tokenizer settings.
        progress: called with (step, loss) after every step.
        checkpoint_dir: where the resumable state is kept; None keeps none.
    Returns:
        The tokenizer in eval mode.
    """
    images, _ = load_digits_images(config.image_size)
    train_idx, _ = split_indices(len(images))
    images = images[train_idx]
    torch.manual_seed(config.seed)
    model = MultiScaleVQVAE(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    for step in resumable_steps(checkpoint_dir, {"tokenizer": model}, optimizer, generator, asdict(config),
                                config.train_steps, config.checkpoint_every):
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * cosine_factor(step, config.train_steps)
        batch = augment(images[torch.randint(0, len(images), (config.batch_size,), generator=generator)], generator)
        reconstruction, vq_loss, indices, pooled = model(batch)
        loss = F.mse_loss(reconstruction, batch) + vq_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.update_codebook(pooled, indices, generator)
        if progress is not None:
            progress(step, loss.item())
    return model.eval()


def cosine_factor(step: int, total: int, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    done = (step - warmup) / max(total - warmup, 1)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * done))
