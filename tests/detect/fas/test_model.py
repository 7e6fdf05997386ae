import numpy as np
import pytest
import torch
import torch.nn.functional as F

from effigy.detect.fas.adapt import OTPrototypes, SourceView
from effigy.detect.fas.model import (
    PrototypeFAS,
    embed,
    live_probability,
    orthogonality,
    prototype_loss,
    supervised_contrastive,
)
from effigy.detect.fas.protocol import domain_data, evaluate_adaptor, evaluate_tent
from effigy.errors import ModelError
from tests.detect import tiny_fas


@pytest.fixture(scope="module")
def tiny_model() -> PrototypeFAS:
    return tiny_fas(("phone", "kiosk"), steps=30)


def test_features_are_unit_vectors_and_scores_probabilities(tiny_model):
    images = np.random.default_rng(0).uniform(0, 1, (5, 3, 64, 64)).astype(np.float32)
    features = embed(tiny_model, images)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(5), atol=1e-5, rtol=0)
    scores = tiny_model(torch.from_numpy(images))
    assert ((scores >= 0) & (scores <= 1)).all()
    with pytest.raises(ModelError, match="64"):
        embed(tiny_model, images[:, :, :32])


def test_training_learns_to_separate_live_from_spoof(tiny_model):
    from effigy.metrics.detection import auc
    from effigy.worlds.faces import render

    data = render("dev", ["phone"], live_per_identity=1, spoofs_per_attack=1)
    with torch.no_grad():
        scores = tiny_model(torch.from_numpy(data.images)).numpy()
    assert auc(scores, data.live) > 0.7


def test_the_losses_reward_what_they_should():
    prototypes = F.normalize(torch.eye(4)[:, None].repeat(1, 1, 1).reshape(2, 2, 4), dim=-1)
    on_own = prototypes[:, 0]  # each class's first prototype as a feature of that class
    labels = torch.tensor([0, 1])
    assert prototype_loss(on_own, labels, prototypes, 0.2, 16) < prototype_loss(on_own, 1 - labels, prototypes, 0.2, 16)
    assert prototype_loss(on_own, labels, prototypes, 0.0, 16) < prototype_loss(on_own, labels, prototypes, 0.3, 16)
    assert orthogonality(prototypes) == pytest.approx(0.0)
    assert orthogonality(F.normalize(torch.ones(2, 2, 4), dim=-1)) > 0.5
    clustered = F.normalize(torch.tensor([[1.0, 0], [1, 0.1], [0, 1], [0.1, 1]]), dim=1)
    grouped, mixed = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    assert supervised_contrastive(clustered, grouped, 0.1) < supervised_contrastive(clustered, mixed, 0.1)
    assert live_probability(prototypes[1], prototypes, 16).min() > 0.5


def test_adaptors_leave_the_base_model_untouched_and_tent_adapts_a_copy(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    data = domain_data(tiny_model, tiny_model.config, "webcam")
    assert len(data.pool) == 15 * 6 and len(data.test) == 25 * 6
    source = SourceView(tiny_model.prototypes().detach(), tiny_model.config.scale)
    report = evaluate_adaptor(OTPrototypes(), source, data, shots=3, draws=2)
    assert 0 <= report.hter <= 1 and 0 <= report.auc <= 1
    evaluate_tent(tiny_model, data)
    for key, value in tiny_model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_camera_jitter_reshoots_a_batch_reproducibly_within_range():
    from effigy.detect.fas.model import augment

    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    plain = augment(images, torch.Generator().manual_seed(1))
    jittered = augment(images, torch.Generator().manual_seed(1), camera_jitter=True)
    again = augment(images, torch.Generator().manual_seed(1), camera_jitter=True)
    torch.testing.assert_close(jittered, again, rtol=0, atol=0)
    assert 0 <= jittered.min() and jittered.max() <= 1
    assert (jittered - plain).abs().mean() > 0.01
    assert jittered.diff(dim=-1).abs().mean() < plain.diff(dim=-1).abs().mean()  # lower resolution and blur
