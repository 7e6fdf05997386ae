"""Scorer sanity on real world images: both judges score true captions high and shuffled ones low."""
import pytest
import torch

from effigy.evaluate import t2i
from effigy.models import clip_standin, shapes_checker, t2i_shapes
from effigy.models.text_encoder import MiniLMTextEncoder
from effigy.models.zoo import load_zoo_model


@pytest.fixture(scope="module")
def judges():
    checker, _ = load_zoo_model("shapes-checker")
    head, clip_config = load_zoo_model("shapes-clip")
    bank = t2i_shapes.CaptionBank(MiniLMTextEncoder())
    # The generator is not needed to score images: only the judges and the caption bank are used.
    return t2i.T2ISuite(None, None, bank, checker, head, clip_config, clip_standin.load_efficientnet_lite0())


@pytest.fixture(scope="module")
def scenes_and_renders():
    scenes = t2i.prompt_set(60, "heldout", seed=7)
    return scenes, t2i.reference_images(scenes)


def test_real_images_score_high_and_shuffled_captions_low(judges, scenes_and_renders):
    scenes, images = scenes_and_renders
    true = t2i.summarize(t2i.score_images(judges, scenes, images))
    shuffled = t2i.summarize(t2i.score_images(judges, scenes[1:] + scenes[:1], images))
    assert true["adherence"] >= 0.95 and true["adherence_relation"] >= 0.9
    assert shuffled["adherence"] < true["adherence"] - 0.3
    assert true["clip_score"] > shuffled["clip_score"] + 20


def test_checker_reads_every_attribute_of_heldout_pairs(judges, scenes_and_renders):
    scenes, images = scenes_and_renders
    singles = [(s, d) for s, d in zip(scenes, shapes_checker.detect(judges.checker, images)) if s.kind == "single"]
    hits = [len(d) == 1 and (d[0].colour, d[0].shape, d[0].size) == (s.objects[0].colour, s.objects[0].shape,
                                                                        s.objects[0].size) for s, d in singles]
    assert sum(hits) / len(hits) >= 0.95


def test_fid_on_checker_features_separates_renders_from_noise(judges, scenes_and_renders):
    from effigy.metrics import fid_from_features

    _, images = scenes_and_renders
    feats = t2i.checker_features(judges.checker, images)
    noisy = t2i.checker_features(judges.checker, (images + 0.5 * torch.randn_like(images)).clamp(-1, 1))
    assert fid_from_features(feats[:30], feats[30:]) < fid_from_features(feats, noisy)
