"""The deepfake models of the zoo (declared in :data:`effigy.models.zoo.DECLARED`, built from here at their
first lookup): the AuthGuard
encoder (cross-entropy + uncertainty-aware image-text contrastive), its two baselines trained the same way
(cross-entropy alone; cross-entropy + plain contrastive), and the projector that lets SmolLM2 read the
encoder (``deepfake-explainer``, trained on the shipped encoder)."""
from __future__ import annotations

import torch

from effigy.detect.deepfake import explain
from effigy.detect.deepfake.model import DeepfakeConfig, build_model, train
from effigy.models.zoo import ZooEntry, config_variant

SHIPPED = "deepfake-authguard"
EXPLAINER = "deepfake-explainer"
BASELINES = {"deepfake-ce": "none", "deepfake-clip": "plain"}


def entries() -> list[ZooEntry]:
    """The shipped encoder, its two baselines and the explainer's projector. The three encoders train on the
    forgery world plus real photographs' faces and their SBI fakes (``photo_sbi``), so that a real photo's
    crispness is not what they call fake (issue 45)."""
    found = [ZooEntry(
        SHIPPED, "deepfake detector: EfficientNet-Lite0 (ImageNet start) trained with cross-entropy + "
        "uncertainty-aware image-text contrastive learning on LLM-written captions (SBI and swap fakes, and "
        "real photographs' faces with their SBI fakes)",
        config_variant(DeepfakeConfig, "DeepfakeConfigShipped", photo_sbi=True), build_model, train, torch.float16)]
    for name, mode in BASELINES.items():
        what = "cross-entropy alone" if mode == "none" else "cross-entropy + plain contrastive (no uncertainty)"
        found.append(ZooEntry(name, f"{SHIPPED}'s baseline: {what}", config_variant(
            DeepfakeConfig, f"DeepfakeConfig{mode.title()}", contrastive=mode, photo_sbi=True), build_model, train,
            torch.float16))
    found.append(ZooEntry(
        EXPLAINER, f"projector from {SHIPPED}'s feature map into SmolLM2-135M-Instruct (LLaVA-style), trained on "
        "answers built from the fakes' metadata; the encoder and the LLM are the shipped ones",
        explain.ExplainerConfig, explain.build_model, explain.train, torch.float16))
    return found
