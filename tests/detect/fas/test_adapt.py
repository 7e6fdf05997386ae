import numpy as np
import pytest
import torch
import torch.nn.functional as F

from effigy.detect.fas.adapt import (
    T3A,
    GeodesicMixup,
    LinearMixup,
    NoAdaptation,
    OTPrototypes,
    SourceView,
    slerp,
    transport_plan,
)
from effigy.detect.fas.protocol import draw_shots
from effigy.errors import AdaptationError


def _source(seed: int = 0, centres: int = 4, dim: int = 16) -> SourceView:
    generator = torch.Generator().manual_seed(seed)
    return SourceView(F.normalize(torch.randn(2, centres, dim, generator=generator), dim=-1), 16.0)


def _as_targets(source: SourceView) -> tuple[torch.Tensor, torch.Tensor]:
    classes, centres, dim = source.prototypes.shape
    return source.prototypes.reshape(-1, dim), torch.arange(classes).repeat_interleave(centres)


@pytest.mark.parametrize("regulariser", ["exact", "laplacian"])
def test_ot_with_the_prototypes_as_targets_leaves_them_in_place(regulariser):
    source = _source()
    features, labels = _as_targets(source)
    for move in ("map", "shift"):
        moved = OTPrototypes(regulariser=regulariser, strength=0.1, move=move).adapted_prototypes(source, features, labels)
        torch.testing.assert_close(moved, source.prototypes, atol=1e-5, rtol=0)


def test_ot_moves_each_class_towards_its_own_targets_only():
    source = _source(1)
    generator = torch.Generator().manual_seed(2)
    live_target = F.normalize(source.prototypes[1].mean(0) + 0.8 * torch.randn(16, generator=generator), dim=0)
    spoof_target = F.normalize(source.prototypes[0].mean(0) + 0.8 * torch.randn(16, generator=generator), dim=0)
    features = F.normalize(torch.stack([live_target] * 3 + [spoof_target] * 3)
                           + 0.05 * torch.randn(6, 16, generator=generator), dim=1)
    labels = torch.tensor([1, 1, 1, 0, 0, 0])
    moved = OTPrototypes().adapted_prototypes(source, features, labels)
    for cls, target in ((1, live_target), (0, spoof_target)):
        assert (moved[cls] @ target).mean() > (source.prototypes[cls] @ target).mean() + 0.1
    assert moved.norm(dim=-1).sub(1).abs().max() < 1e-5


def test_the_plan_never_pairs_across_classes():
    source = _source(3)
    xs, ys = source.prototype_rows()
    features = F.normalize(torch.randn(10, 16, generator=torch.Generator().manual_seed(4)), dim=1).double().numpy()
    labels = np.array([0, 1] * 5)
    plan = transport_plan(xs, ys, features, labels, "entropic", 0.05)
    assert plan[ys[:, None] != labels[None, :]].max() < 1e-6 * plan.max()
    rows_s, rows_t = GeodesicMixup(samples=200).pairs(source, features, labels, np.random.default_rng(0))
    assert (ys[rows_s] == labels[rows_t]).all()


def test_one_class_ot_needs_live_samples_only_and_shifts_every_prototype_alike():
    source = _source(5)
    live = F.normalize(source.prototypes[1, :2] + 0.3, dim=1)
    moved = OTPrototypes(one_class=True).adapted_prototypes(source, live, torch.ones(2, dtype=torch.long))
    assert not torch.allclose(moved, source.prototypes)
    scorer = OTPrototypes(one_class=True).fit(source, live, torch.ones(2, dtype=torch.long))
    assert scorer(live).shape == (2,)
    with pytest.raises(AdaptationError, match="live"):
        OTPrototypes(one_class=True).fit(source, live, torch.zeros(2, dtype=torch.long))


def test_adaptors_refuse_targets_they_cannot_use():
    source = _source()
    features, labels = _as_targets(source)
    with pytest.raises(AdaptationError, match="labelled"):
        OTPrototypes().fit(source, features, None)
    with pytest.raises(AdaptationError, match="spoof"):
        OTPrototypes().fit(source, features[labels == 1], labels[labels == 1])
    with pytest.raises(AdaptationError, match="labels for"):
        GeodesicMixup().fit(source, features, labels[:3])
    with pytest.raises(AdaptationError, match="regulariser"):
        OTPrototypes(regulariser="quadratic").fit(source, features, labels)
    with pytest.raises(AdaptationError, match="move"):
        OTPrototypes(move="teleport").fit(source, features, labels)
    with pytest.raises(AdaptationError, match="at least one"):
        T3A().fit(source, features[:0], None)
    with pytest.raises(AdaptationError, match="at most 2"):
        draw_shots(np.array([True, True, False, False]), 3, np.random.default_rng(0))


def test_slerp_runs_on_the_sphere_between_its_ends():
    a = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    b = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    torch.testing.assert_close(slerp(a, b, torch.zeros(5)), a, atol=1e-5, rtol=0)
    torch.testing.assert_close(slerp(a, b, torch.ones(5)), b, atol=1e-5, rtol=0)
    middle = slerp(a, b, torch.full((5,), 0.5))
    torch.testing.assert_close(middle.norm(dim=1), torch.ones(5), atol=1e-5, rtol=0)
    torch.testing.assert_close((middle * a).sum(1), (middle * b).sum(1), atol=1e-5, rtol=0)


def test_mixup_adaptors_learn_a_target_domain_the_source_prototypes_miss():
    source = _source(6)
    generator = torch.Generator().manual_seed(7)
    # the target domain swaps the classes' directions: live features sit near the spoof prototypes
    live = F.normalize(source.prototypes[0].mean(0) + 0.1 * torch.randn(20, 16, generator=generator), dim=1)
    spoof = F.normalize(source.prototypes[1].mean(0) + 0.1 * torch.randn(20, 16, generator=generator), dim=1)
    features, labels = torch.cat([live, spoof]), torch.tensor([1] * 20 + [0] * 20)
    base = NoAdaptation().fit(source, features, labels)
    assert base(live).mean() < 0.5
    for adaptor in (GeodesicMixup(), LinearMixup()):
        scorer = adaptor.fit(source, features[::4], labels[::4])
        assert scorer(live).mean() > 0.5 > scorer(spoof).mean()


def test_t3a_templates_follow_the_confident_pseudo_labels():
    source = _source(8)
    shifted = F.normalize(source.prototypes + 0.2, dim=-1)
    features = shifted.reshape(-1, 16)
    scorer = T3A(keep=4).fit(source, features, None)
    scores = scorer(features)
    assert scores[4:].min() > scores[:4].max()  # live rows (class 1) still outscore spoof rows
