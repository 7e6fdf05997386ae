"""Scorer sanity on real world images: both judges score true captions high and shuffled ones low."""
import pytest
import torch

from effigy.evaluate import t2i
from effigy.models.encoders.text_encoder import MiniLMTextEncoder
from effigy.models.generators import t2i_shapes
from effigy.models.judges import clip_standin, shapes_checker
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


def test_eval_runner_and_report_on_a_tiny_untrained_generator(judges, tmp_path):
    import dataclasses

    from effigy.evaluate.t2i_report import write_t2i_report

    config = t2i_shapes.T2IShapesConfig(num_layers=1, num_attention_heads=2, attention_head_dim=8)
    suite = dataclasses.replace(judges, transformer=t2i_shapes.build_transformer(config).eval(), config=config)
    result = t2i.run_t2i_eval(suite, prompts=6, steps=2, guidance=4.0, seed=0)
    assert len(result["rows"]) == 6 and {r["kind"] for r in result["rows"]} == {"single", "relation", "count"}
    assert 0 <= result["summary"]["adherence"] <= 1 and result["summary"]["fid_features"] >= 0
    settings = {"model": "t2i-shapes", "prompts": 6, "steps": 2, "guidance": 4.0, "split": "heldout", "seed": 0}
    paths = write_t2i_report(result, settings, tmp_path, "effigy evaluate t2i --prompts 6", grid=True)
    assert paths["grid"].stat().st_size > 0 and "| caption |" in paths["markdown"].read_text()


def test_evaluate_t2i_without_trained_weights_says_how_to_train(monkeypatch, capsys):
    import sys

    from effigy import cli
    from effigy.models import zoo

    monkeypatch.setattr(zoo, "read_manifest", lambda path=None: {})
    monkeypatch.setattr(sys, "argv", ["effigy", "evaluate", "t2i", "--prompts", "3"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert "effigy zoo train t2i-shapes" in capsys.readouterr().err


def test_scorer_agreement_covers_every_degradation(judges):
    import dataclasses
    import math

    config = t2i_shapes.T2IShapesConfig(num_layers=1, num_attention_heads=2, attention_head_dim=8)
    suite = dataclasses.replace(judges, transformer=t2i_shapes.build_transformer(config).eval(), config=config)
    result = t2i.run_scorer_agreement(suite, prompts=3, steps=2, guidance=4.0, seed=0)
    assert [r["variant"] for r in result["rows"]] == list(t2i.DEGRADATIONS)
    noisy = {r["variant"]: r["clip_score"] for r in result["rows"]}
    assert all(0 <= score <= 100 for score in noisy.values())
    assert isinstance(result["kendall_tau"], float) and (math.isnan(result["kendall_tau"]) or -1 <= result["kendall_tau"] <= 1)


def test_chance_level_is_measured_with_shuffled_captions_and_sits_below_true_captions(judges, scenes_and_renders):
    scenes, images = scenes_and_renders
    rows = t2i.score_images(judges, scenes, images)
    true = t2i.summarize(rows)
    chance = t2i.chance_adherence(judges, scenes, images, rows)
    for kind in ("single", "relation", "count"):
        assert 0 <= chance[f"adherence_{kind} (shuffled captions)"] < true[f"adherence_{kind}"] - 0.2
        low = float(chance[f"adherence_{kind} above chance (95% interval)"].split("[")[1].split(",")[0])
        assert low > 0  # real renders are above chance beyond noise


def test_weight_noise_perturbs_only_the_quantizable_linears_by_the_asked_fraction():
    config = t2i_shapes.T2IShapesConfig(num_layers=2, num_attention_heads=2, attention_head_dim=16)
    model = t2i_shapes.build_transformer(config).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    noisy = t2i.with_weight_noise(model, 0.2, seed=3)
    after = noisy.state_dict()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("transformer_blocks.") and k.endswith(".weight") for k in changed)
    assert not any("emb" in k or "norm" in k for k in changed)
    key = "transformer_blocks.0.ff.net.0.proj.weight"
    relative = (after[key] - before[key]).pow(2).mean().sqrt() / before[key].pow(2).mean().sqrt()
    assert 0.17 < relative < 0.23
    again = t2i.with_weight_noise(model, 0.2, seed=3).state_dict()
    assert all(torch.equal(after[k], again[k]) for k in changed)  # seeded


def test_scorer_agreement_ranks_model_variants_apart_from_image_corruptions(judges, monkeypatch):
    import dataclasses

    config = t2i_shapes.T2IShapesConfig(num_layers=1, num_attention_heads=2, attention_head_dim=8)
    suite = dataclasses.replace(judges, transformer=t2i_shapes.build_transformer(config).eval(), config=config)
    variants = {"reference": {}, "steps 1": {"steps": 1}, "weight noise 0.5": {"weight_noise": 0.5},
                "pixel noise 0.5": {"noise": 0.5}}
    monkeypatch.setattr(t2i, "DEGRADATIONS", variants)
    ranked = []
    real_kendall = t2i._kendall
    monkeypatch.setattr(t2i, "_kendall", lambda rows: ranked.append([r["variant"] for r in rows]) or real_kendall(rows))
    result = t2i.run_scorer_agreement(suite, prompts=6, steps=2, guidance=3.0, seed=0)
    assert [r["kind"] for r in result["rows"]] == ["model", "model", "model", "image"]
    assert ranked == [["reference", "steps 1", "weight noise 0.5"], list(variants)]  # tau, then tau with images
    assert {"kendall_tau", "p_value", "kendall_tau_all", "p_value_all"} <= set(result)
    assert result["rows"][0]["adherence"] != result["rows"][2]["adherence"] or \
        result["rows"][0]["clip_score"] != result["rows"][2]["clip_score"]  # weight noise changed the samples
