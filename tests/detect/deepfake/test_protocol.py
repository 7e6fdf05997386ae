import numpy as np
import pytest
import torch

from effigy.detect.deepfake import data as deepfake_data
from effigy.detect.deepfake import protocol
from effigy.detect.deepfake.captions import FACTS, KINDS, CaptionPools
from effigy.detect.deepfake.model import DeepfakeConfig, build_model, train
from effigy.errors import ModelError
from effigy.worlds.deepfakes import render_forgeries


def _hand_written_pools(per_kind=2):
    return CaptionPools({kind: [f"{FACTS[kind]} ({i})" for i in range(per_kind)] for kind in KINDS}, "hand-written")


def test_protocol_holds_out_the_families_and_domains_not_trained_on(monkeypatch):
    calls = []
    monkeypatch.setattr(protocol, "render_forgeries", lambda split, families, domains, *a: calls.append(
        (split, tuple(families), tuple(domains))) or None)
    sets = protocol.protocol_sets(DeepfakeConfig(families=["sbi", "swap"], domains=["phone", "webcam", "laptop"]))
    assert [s.name for s in sets] == ["in distribution: sbi+swap", "unseen family: reenact", "unseen family: upsample",
                                      "unseen family: synthetic", "unseen domain: kiosk"]
    assert [s.held_out for s in sets] == ["nothing", "family", "family", "family", "domain"]
    assert all(split == "test" for split, _, _ in calls)
    assert calls[-1] == ("test", ("sbi", "swap", "reenact", "upsample", "synthetic"), ("kiosk",))


def test_each_row_gets_a_caption_of_its_own_kind(monkeypatch):
    monkeypatch.setattr(deepfake_data, "write_captions", lambda per_kind, seed: _hand_written_pools(per_kind))
    config = DeepfakeConfig(domains=["phone"], reals_per_identity=1, fakes_per_family=1, captions_per_kind=2)
    images = render_forgeries("dev", config.families, config.domains, 1, 1)
    kinds = deepfake_data.kind_ids(images)
    assert [KINDS[k] for k in kinds[:3]] == [("real", ""), ("sbi", "face"), ("swap", "face")]
    text, ids = deepfake_data.caption_embeddings(config, images)
    assert text.shape == (len(images), 384) and (ids == kinds).all()
    same, other = text[kinds == 1], text[kinds == 0]
    assert (same @ same.T).mean() > (same @ other.T).mean()  # a kind's captions embed near each other


def test_cue_captions_key_each_fake_by_how_its_change_looks(monkeypatch):
    written = []

    def cue_pools(keys, per_kind, seed):
        written.append(keys)
        return CaptionPools({key: [f"{' '.join(key)} caption {i}" for i in range(per_kind)] for key in keys}, "test")

    monkeypatch.setattr(deepfake_data, "write_cue_captions", cue_pools)
    config = DeepfakeConfig(domains=["phone"], reals_per_identity=1, fakes_per_family=2, captions_per_kind=2,
                            caption_detail="cues")
    images = render_forgeries("dev", config.families, config.domains, 1, 2)
    keys, ids = deepfake_data.caption_keys(config, images)
    assert written == [] and len(keys) == len(set(keys)) > len(KINDS[:3])  # several looks per fake kind
    for row, key in zip(range(len(images)), (keys[i] for i in ids)):
        assert key == (images.family[row], images.region[row], images.cues[row])
    text, same_ids = deepfake_data.caption_embeddings(config, images)
    assert written == [tuple(keys)] and (same_ids == ids).all() and text.shape == (len(images), 384)
    with pytest.raises(ModelError, match="caption detail"):
        build_model(DeepfakeConfig(caption_detail="words"))


def test_training_runs_end_to_end_and_the_model_explains(monkeypatch):
    monkeypatch.setattr(deepfake_data, "write_captions", lambda per_kind, seed: _hand_written_pools(per_kind))
    config = DeepfakeConfig(domains=["phone"], reals_per_identity=1, fakes_per_family=1, captions_per_kind=2,
                            train_steps=2, batch_size=4)
    model = train(config)
    assert not model.training
    images = render_forgeries("test", ["sbi"], ["phone"], 1, 1).images[:4]
    described = protocol.describe(model, images)
    assert len(described) == 4 and all(d in FACTS.values() for d in described)
    assert protocol.describe(build_model(DeepfakeConfig(contrastive="none")), images) == [""] * 4
    rows = protocol.held_out_rows(model)
    assert {(r["face"], r["kind"]) for r in rows} == {(f, k) for f in ("astronaut", "grace_hopper")
                                                       for k in ("real", "sbi", "swap")}
    assert all(0 <= r["correct"] <= 1 for r in rows)
    with torch.no_grad():
        assert np.isfinite(model(torch.from_numpy(images)).numpy()).all()
