import numpy as np
import pytest
import torch
import torch.nn.functional as F

from effigy.detect.deepfake.model import (
    DeepfakeConfig,
    DeepfakeEncoder,
    build_model,
    fake_scores,
    training_loss,
    uncertain_info_nce,
)
from effigy.errors import ModelError
from effigy.models.contrastive import symmetric_info_nce


def _batch(n=6, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, dim, generator=g)
    text = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    return mean, text


def test_uncertain_loss_is_plain_info_nce_when_the_variance_vanishes():
    mean, text = _batch()
    groups = torch.tensor([0, 0, 1, 2, 3, 4])
    nce, kl = uncertain_info_nce(mean, torch.full_like(mean, -60.0), text, torch.tensor(14.0), groups)
    plain = symmetric_info_nce(F.normalize(mean, dim=1), text, 14.0, groups)
    torch.testing.assert_close(nce, plain)
    # KL of N(mu, 0) to N(0, I) diverges through -log var; at log var = 0 it is |mu|^2 / 2
    _, kl_unit = uncertain_info_nce(mean, torch.zeros_like(mean), text, torch.tensor(14.0))
    torch.testing.assert_close(kl_unit, 0.5 * mean.pow(2).sum(1).mean())
    assert kl > kl_unit


def test_wide_variance_makes_the_contrastive_loss_noisy_and_the_kl_small():
    mean, text = _batch()
    text = F.normalize(mean, dim=1)  # every image matches its caption exactly
    sharp, _ = uncertain_info_nce(mean, torch.full_like(mean, -10.0), text, torch.tensor(20.0))
    wide, _ = uncertain_info_nce(mean, torch.full_like(mean, 4.0), text, torch.tensor(20.0),
                                 generator=torch.Generator().manual_seed(1))  # not the draw that made ``mean``
    assert sharp < wide


def test_groups_keep_same_kind_rows_from_being_negatives():
    mean, text = _batch()
    image = F.normalize(mean, dim=1)
    alone = symmetric_info_nce(image, text, 10.0)
    grouped = symmetric_info_nce(image, text, 10.0, torch.zeros(6, dtype=torch.long))
    assert grouped.item() == pytest.approx(0.0, abs=1e-6) and alone > 0  # one group: no negatives left


@pytest.mark.parametrize("mode", ["none", "plain", "uncertain"])
def test_training_loss_uses_the_terms_of_its_mode(mode):
    torch.manual_seed(0)
    model = DeepfakeEncoder(DeepfakeConfig(contrastive=mode)).train()
    images = torch.rand(4, 3, 64, 64)
    fake = torch.tensor([0, 1, 0, 1])
    text = torch.randn(4, 384)
    loss = training_loss(model, images, fake, text, torch.tensor([0, 1, 0, 2]), torch.Generator().manual_seed(0))
    loss.backward()
    grads = {name: p.grad is not None and p.grad.abs().sum() > 0 for name, p in model.named_parameters()}
    assert grads["classifier.weight"]
    assert grads["text_proj.weight"] == (mode != "none")
    assert grads["log_var_head.weight"] == (mode == "uncertain")


def test_bad_modes_and_images_are_refused():
    with pytest.raises(ModelError, match="contrastive"):
        build_model(DeepfakeConfig(contrastive="triplet"))
    model = build_model(DeepfakeConfig())
    with pytest.raises(ModelError, match="64"):
        fake_scores(model, np.zeros((2, 3, 32, 32), np.float32))
    scores = fake_scores(model, np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32))
    assert scores.shape == (3,) and ((0 <= scores) & (scores <= 1)).all()
