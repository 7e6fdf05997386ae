"""The deepfake vision encoder of AuthGuard (arXiv 2506.04501, https://arxiv.org/abs/2506.04501), on
effigy's forgery world.

EfficientNet-Lite0 (ImageNet weights) encodes a face; a linear head gives the logit of *fake*. Training adds,
to the cross-entropy, image-text contrastive learning against the frozen MiniLM text tower on the captions
an LLM wrote from each image's metadata (``captions.py``). The captions are noisy, so the image side is
uncertainty-aware (data-uncertainty learning): it predicts a mean and a log-variance, the contrastive loss
sees a sample drawn by reparameterisation, and a KL term keeps the distribution near N(0, I). A noisy pair can
then be explained by a wide variance instead of pulling the mean. With the variance at zero the loss is
plain InfoNCE; ``contrastive='plain'`` trains exactly that, ``'none'`` cross-entropy alone (the baselines).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from effigy.detect.batches import balanced_fine_tune, flip_and_shift, map_face_batches
from effigy.errors import ModelError
from effigy.models.config import TrainConfig
from effigy.models.contrastive import symmetric_info_nce
from effigy.models.encoders.image_encoder import IMAGE_FEATURES, build_efficientnet_lite0, feature_map
from effigy.models.training_state import training_step, warmup_cosine

CONTRASTIVE = ("none", "plain", "uncertain")
CAPTION_DETAILS = ("kind", "cues")
TEXT_DIM = 384  # all-MiniLM-L6-v2 sentence embeddings


@dataclass
class DeepfakeConfig(TrainConfig):
    """The encoder and its training (saved beside its weights).

    Args:
        contrastive: 'uncertain' (AuthGuard), 'plain' (InfoNCE, no uncertainty) or 'none' (cross-entropy alone).
        families, domains: the forgery families and capture domains trained on (the protocol tests the rest).
        reals_per_identity, fakes_per_family: training captures per identity and domain.
        embed_dim: the shared image-text space. contrastive_weight: lambda. kl_weight: beta.
        initial_log_var: where the log-variance head's bias starts (None: PyTorch's default draw); a low start
            begins near plain InfoNCE and leaves the variance to grow where captions disagree.
        dropout: on the pooled features during training (the world has 60 training identities).
        captions_per_kind: captions the LLM writes per kind of image.
        caption_detail: 'kind' (one pool per family and region) or 'cues' (one pool per family, region and
            visible change: each image's caption also says how its change looks, ``visible_cues``).
        photo_sbi: add the faces of real photographs (insightface 2.1's sample images) and their self-blended
            fakes to the training captures, so that a photograph's crispness is on both sides (issue 45).
    """

    contrastive: str = "uncertain"
    families: list[str] = field(default_factory=lambda: ["sbi", "swap"])
    domains: list[str] = field(default_factory=lambda: ["phone", "webcam", "laptop"])
    reals_per_identity: int = 8
    fakes_per_family: int = 4
    embed_dim: int = 128
    contrastive_weight: float = 0.5
    kl_weight: float = 1e-3
    initial_log_var: float | None = None
    captions_per_kind: int = 16
    caption_detail: str = "kind"
    train_steps: int = 1500
    dropout: float = 0.2
    photo_sbi: bool = False  # also train on real photographs' faces and their SBI fakes (detect/deepfake/photos.py)
    image_size: int = 64  # the encoder's input: captures are resized to it (ImageNet features were learnt at 224)
    batch_size: int = 32
    learning_rate: float = 5e-4
    seed: int = 0


class DeepfakeEncoder(nn.Module):
    """EfficientNet-Lite0 + a fake-logit head + the contrastive heads (mean, log-variance, text projection);
    ``forward`` gives P(fake) of images [N, 3, SIZE, SIZE] in [0, 1]."""

    def __init__(self, config: DeepfakeConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_efficientnet_lite0()
        self.backbone._fc = nn.Identity()  # ImageNet's classifier is not used
        self.classifier = nn.Linear(IMAGE_FEATURES, 1)
        self.mean_head = nn.Linear(IMAGE_FEATURES, config.embed_dim)
        self.log_var_head = nn.Linear(IMAGE_FEATURES, config.embed_dim)
        if config.initial_log_var is not None:
            nn.init.constant_(self.log_var_head.bias, config.initial_log_var)
        self.text_proj = nn.Linear(TEXT_DIM, config.embed_dim)
        self.log_temperature = nn.Parameter(torch.tensor(2.66))  # exp(2.66) ~ 1/0.07, CLIP's start
        # P(fake) = sigmoid(logit / calibration_temperature): 1 as trained; the operating point stored with the
        # model sets it (temperature scaling on real and fake dev captures); not a weight, not in the state dict
        self.register_buffer("calibration_temperature", torch.tensor(1.0), persistent=False)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 1280, h, w] the backbone's last feature map of images in [0, 1], at the config's input size."""
        return feature_map(self.backbone, images * 2 - 1, self.config.image_size)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 1280] pooled features of images in [0, 1] (dropped out while training)."""
        return F.dropout(self.feature_map(images).mean(dim=(2, 3)), self.config.dropout, self.training)

    def fake_logit(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features).squeeze(1)

    def logit(self, images: torch.Tensor) -> torch.Tensor:
        """[N] the logit of *fake* of images in [0, 1] (what attacks differentiate)."""
        return self.fake_logit(self.features(images))

    def p_fake(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated P(fake) of fake logits."""
        return torch.sigmoid(logits / self.calibration_temperature)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.p_fake(self.logit(images))


def uncertain_info_nce(mean: torch.Tensor, log_var: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                       groups: torch.Tensor | None = None, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(InfoNCE of a reparameterised sample of each image embedding against its text, KL to N(0, I)).

    Args:
        mean, log_var: [B, D] the image side's Gaussian.
        text: [B, D] unit text embeddings.
        groups: rows of one group are not each other's negatives.
    Returns:
        The contrastive loss and the KL term (mean over the batch), separately weighted by the caller.
    """
    noise = torch.randn(mean.shape, generator=generator)
    sample = mean + torch.exp(0.5 * log_var) * noise
    nce = symmetric_info_nce(F.normalize(sample, dim=1), text, logit_scale, groups)
    kl = -0.5 * (1 + log_var - mean.pow(2) - log_var.exp()).sum(dim=1).mean()
    return nce, kl


def training_loss(model: DeepfakeEncoder, images: torch.Tensor, fake: torch.Tensor, text: torch.Tensor | None,
                  groups: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    """Cross-entropy, plus lambda * (uncertainty-aware) InfoNCE (+ beta * KL) as the config says."""
    config = model.config
    features = model.features(images)
    loss = F.binary_cross_entropy_with_logits(model.fake_logit(features), fake.float())
    if config.contrastive == "none":
        return loss
    scale = model.log_temperature.exp().clamp(max=100)
    text = F.normalize(model.text_proj(text), dim=1)
    mean = model.mean_head(features)
    if config.contrastive == "plain":
        return loss + config.contrastive_weight * symmetric_info_nce(F.normalize(mean, dim=1), text, scale, groups)
    nce, kl = uncertain_info_nce(mean, model.log_var_head(features), text, scale, groups, generator)
    return loss + config.contrastive_weight * nce + config.kl_weight * kl


def _check(config: DeepfakeConfig) -> None:
    if config.contrastive not in CONTRASTIVE:
        raise ModelError(f"unknown contrastive mode {config.contrastive!r}; use one of {', '.join(CONTRASTIVE)}.")
    if config.caption_detail not in CAPTION_DETAILS:
        raise ModelError(f"unknown caption detail {config.caption_detail!r}; use one of {', '.join(CAPTION_DETAILS)}.")


def train(config: DeepfakeConfig, progress: Callable[[int, float], None] | None = None) -> DeepfakeEncoder:
    """Train the encoder (seeded) from ImageNet weights on the forgery world's train split, with the
    families and domains of ``config``."""
    from effigy.detect.deepfake.data import training_batch_source
    from effigy.models.encoders.image_encoder import load_efficientnet_lite0

    _check(config)
    torch.manual_seed(config.seed)
    model = DeepfakeEncoder(config)
    pretrained = load_efficientnet_lite0().state_dict()
    model.backbone.load_state_dict({k: v for k, v in pretrained.items() if not k.startswith("_fc.")}, strict=False)
    source = training_batch_source(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    for step in range(config.train_steps):
        images, fake, text, groups = source(generator)
        loss = training_loss(model, images, fake, text, groups, generator)
        training_step(optimizer, loss, step, config.learning_rate * warmup_cosine(step, config.train_steps), progress=progress)
    return model.eval()


def fine_tune(model: DeepfakeEncoder, images: np.ndarray, fake: np.ndarray, steps: int, seed: int = 0,
              learning_rate: float | None = None, progress: Callable[[int, float], None] | None = None) \
        -> DeepfakeEncoder:
    """Continue training a detector on a team's own face crops with cross-entropy alone (a team's data has no
    captions; the contrastive heads stay as they were), class-balanced batches, flips and shifts (no colour
    changes: a recoloured region is a forgery cue).

    Args:
        model: the base detector (changed in place).
        images: [N, 3, SIZE, SIZE] face crops in [0, 1]. fake: [N] bool.
        steps: optimizer steps. learning_rate: default a fifth of the base's.
    Returns:
        The model, in eval mode.
    """
    config = model.config

    def batch_loss(batch: torch.Tensor, fake_rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(model.logit(flip_and_shift(batch, generator)), fake_rows.float())

    rate = config.learning_rate / 5 if learning_rate is None else learning_rate
    return balanced_fine_tune(model, images, fake, steps, seed, rate, config.batch_size, batch_loss, progress)


def build_model(config: DeepfakeConfig) -> DeepfakeEncoder:
    """The encoder's structure for ``config`` (weights loaded by the zoo)."""
    _check(config)
    return DeepfakeEncoder(config).eval()


def fake_scores(model: DeepfakeEncoder, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """[N] P(fake) of images [N, 3, SIZE, SIZE] in [0, 1]."""
    return map_face_batches(model, images, batch_size).numpy()
