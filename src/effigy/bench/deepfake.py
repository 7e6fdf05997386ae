"""Deepfake detection in the AuthGuard style on the forgery world, in one run: the encoder (cross-entropy +
uncertainty-aware image-text contrastive) and its two baselines trained the same way (cross-entropy alone;
plain contrastive), each on the DF40-style protocol (in distribution, each unseen forgery family, the unseen
capture domain) with DeepfakeBench's frame metrics; the held-out real faces and their fakes; AUC under PGD;
and the noise rate of the LLM-written captions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from effigy.bench.variants import RESULT_SCHEMA
from effigy.detect.deepfake.model import fake_scores
from effigy.detect.deepfake.protocol import evaluate, held_out_rows, protocol_sets
from effigy.detect.deepfake.zoo import BASELINES, SHIPPED
from effigy.evaluate.measure import Progress, machine_facts, no_progress
from effigy.evaluate.report import SettingsRecord
from effigy.metrics.detection import auc
from effigy.models.zoo import load_zoo_model

MODELS = (*BASELINES, SHIPPED)


@dataclass
class DeepfakeBenchSettings(SettingsRecord):
    seed: int = 0
    epsilon: float = 2 / 255  # PGD's L-infinity budget
    attack_steps: int = 10
    attacked_fakes: int = 100
    captions: bool = True  # measure the caption noise rate (loads the LLM)
    explainer: bool = True  # the LLM-connected detector's answers (loads the LLM)
    explained_images: int = 120  # per test set, seeded
    quantized_generators: tuple[str, ...] = ("vidit-q-w8a8", "vidit-q-w4a8")  # dit-faces recipes for item 8


class _Loaded:
    """Each model loaded once, and each configuration's test sets rendered once, for the whole run (the
    protocol, PGD and the explainer share them)."""

    def __init__(self, seed: int) -> None:
        self.seed, self.models, self.sets = seed, {}, {}

    def model(self, name: str):
        if name not in self.models:
            self.models[name] = load_zoo_model(name)
        return self.models[name]

    def test_sets(self, config):
        key = (tuple(config.families), tuple(config.domains))
        if key not in self.sets:
            self.sets[key] = protocol_sets(config, self.seed)
        return self.sets[key]


def protocol_rows(loaded: _Loaded, progress: Progress = no_progress) -> list[dict]:
    """One row per (model, test set)."""
    rows = []
    advance = progress("deepfake protocol", len(MODELS))
    for name in MODELS:
        model, config = loaded.model(name)
        rows += [{"model": name, "contrastive": config.contrastive, **evaluate(model, s)}
                 for s in loaded.test_sets(config)]
        advance()
    return rows


def average_rows(rows: list[dict]) -> list[dict]:
    """Per model: in-distribution AUC, the unseen families' mean metrics, the unseen domain's AUC."""
    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        unseen = [r for r in mine if r["held_out"] == "family"]
        pick = lambda kind: next((r["auc"] for r in mine if r["held_out"] == kind), float("nan"))  # noqa: E731
        out.append({"model": name, "contrastive": mine[0]["contrastive"], "in_distribution_auc": pick("nothing"),
                    **{f"unseen_{k}": float(np.mean([r[k] for r in unseen])) for k in ("auc", "eer", "ap", "acc")},
                    "unseen_domain_auc": pick("domain")})
    return out


def pgd_rows(settings: DeepfakeBenchSettings, loaded: _Loaded, progress: Progress = no_progress) -> list[dict]:
    """Per model: AUC on the in-distribution test set before and after PGD pushes its fakes towards real."""
    from effigy.detect.robustness.attacks import FakeLogits, adversarial

    rows = []
    advance = progress("PGD", len(MODELS))
    for name in MODELS:
        model, config = loaded.model(name)
        data = loaded.test_sets(config)[0].data
        fakes = np.flatnonzero(data.fake)[: settings.attacked_fakes]
        reals = np.flatnonzero(~data.fake)
        attacked = adversarial(FakeLogits(model), data.images[fakes], "pgd", settings.epsilon,
                               settings.attack_steps, settings.seed, away_from=1)
        real_scores = fake_scores(model, data.images[reals])
        clean = np.concatenate([real_scores, fake_scores(model, data.images[fakes])])
        under = np.concatenate([real_scores, fake_scores(model, attacked)])
        labels = np.concatenate([np.zeros(len(reals), bool), np.ones(len(fakes), bool)])
        rows.append({"model": name, "epsilon": settings.epsilon, "steps": settings.attack_steps,
                     "fakes_attacked": int(len(fakes)), "clean_auc": auc(clean, labels), "pgd_auc": auc(under, labels),
                     "fakes_called_fake_after": float((under[labels] >= 0.5).mean())})
        advance()
    return rows


def explainer_rows(settings: DeepfakeBenchSettings, loaded: _Loaded, progress: Progress = no_progress) -> list[dict]:
    """Per test set: the LLM-connected detector's verdict accuracy beside its encoder's own (at 0.5) on the
    same images, with a paired interval of the difference, and how often its explanation of a fake names the
    true region and artifact, beside chance (the same answers given to other fakes of the set); then both
    accuracies over all the sets' images together."""
    from effigy.detect.deepfake.captions import faithful
    from effigy.detect.deepfake.explain import load_explainer, verdict_of

    explainer, config = load_explainer()
    encoder = explainer.encoder
    sets = loaded.test_sets(loaded.model(config.encoder)[1])[:-1]  # in distribution and the unseen families
    rows, pooled = [], []
    advance = progress("LLM explanations", len(sets))
    for evaluation in sets:
        generator = np.random.default_rng(settings.seed)
        picked = np.sort(generator.choice(len(evaluation.data), min(settings.explained_images, len(evaluation.data)),
                                          replace=False))
        data = evaluation.data.subset(picked)
        answers = explainer.answer(data.images, config.max_new_tokens)
        verdicts = np.array([verdict_of(a) for a in answers])
        encoder_calls = fake_scores(encoder, data.images) >= 0.5
        fakes = np.flatnonzero(data.fake)
        named = [faithful(answers[i], str(data.family[i]), str(data.region[i])) for i in fakes]
        shuffled = generator.permutation(fakes)
        chance = [faithful(answers[j], str(data.family[i]), str(data.region[i])) for i, j in zip(fakes, shuffled)]
        llm_right, encoder_right = verdicts == np.where(data.fake, "fake", "real"), encoder_calls == data.fake
        rows.append({"test_set": evaluation.name, **verdict_comparison(llm_right, encoder_right),
                     "unclear": float((verdicts == "unclear").mean()),
                     "explanation_names_truth": float(np.mean(named)) if named else float("nan"),
                     "chance": float(np.mean(chance)) if chance else float("nan"),
                     "example": answers[int(fakes[0])] if len(fakes) else answers[0]})
        pooled.append((llm_right, encoder_right))
        advance()
    together = [np.concatenate(column) for column in zip(*pooled)]
    return rows + [{"test_set": "all of the above", **verdict_comparison(*together)}]


def verdict_comparison(llm_right: np.ndarray, encoder_right: np.ndarray) -> dict:
    """Both accuracies on the same images and the paired bootstrap interval of their difference (LLM - encoder)."""
    from effigy.metrics.stats import paired_mean_difference

    difference = paired_mean_difference(llm_right.astype(float), encoder_right.astype(float), seed=0)
    return {"images": int(len(llm_right)), "llm_verdict_accuracy": float(llm_right.mean()),
            "encoder_accuracy": float(encoder_right.mean()), "difference_low": difference.low,
            "difference_high": difference.high}


def caption_noise(loaded: _Loaded) -> dict:
    from effigy.detect.deepfake.captions import noise_rate, write_captions

    _, config = loaded.model(SHIPPED)
    pools = write_captions(config.captions_per_kind, config.seed)
    return {"writer": pools.writer, "per_kind": config.captions_per_kind, "noise_rate": noise_rate(pools),
            "examples": {f"{f}/{r}" if r else f: pool[:3] for (f, r), pool in pools.pools.items()}}


@torch.no_grad()
def generator_quality(seed: int) -> dict:
    """How close the synthetic family's generator (``dit-faces``) comes to real faces: the Frechet distance, in
    ImageNet EfficientNet-Lite0 features, from the unseen test crops to as many generated crops as train crops,
    beside the train crops' own distance (the floor real faces reach at these counts); the median distance to
    the nearest training crop (memorising), beside the test crops'; and the fine detail (mean |x - blur(x)|)."""
    from scipy import ndimage

    from effigy.metrics.image import fid_from_features
    from effigy.models.encoders.image_encoder import load_efficientnet_lite0, pooled_features
    from effigy.worlds.deepfakes import synthetic_crops
    from effigy.worlds.faces import real_faces, split_identities

    train, test = real_faces()[split_identities("train")], real_faces()[split_identities("test")]
    generated = synthetic_crops(seed)
    backbone = load_efficientnet_lite0()
    features = lambda crops: pooled_features(  # noqa: E731
        backbone, torch.from_numpy(crops).unsqueeze(1).expand(-1, 3, -1, -1) * 2 - 1, 96)
    nearest = lambda crops: float(np.median(((crops[:, None] - train[None]) ** 2).mean((2, 3)).min(1)))  # noqa: E731
    detail = lambda crops: float(np.abs(crops - ndimage.gaussian_filter(crops, (0, 1, 1))).mean())  # noqa: E731
    return {"generated": int(len(generated)), "fid_to_test_generated": fid_from_features(
                features(generated[: len(train)]), features(test)),
            "fid_to_test_real_train": fid_from_features(features(train), features(test)),
            "nearest_train_mse_generated": nearest(generated), "nearest_train_mse_real_test": nearest(test),
            "detail_generated": detail(generated), "detail_real_test": detail(test)}


def generator_pools(recipes: tuple[str, ...], seed: int, progress: Progress = no_progress) -> dict[str, np.ndarray]:
    """The synthetic family's crop pool from the shipped face DiT in FP and quantized by each recipe (calibrated
    on 16 faces of another seed where the recipe needs it), the same noise for every generator."""
    import copy

    from effigy.models.generators.dit_faces import generate_faces
    from effigy.nn.quantize import quantize
    from effigy.recipes import get_recipe
    from effigy.workflows.quantize import needs_calibration
    from effigy.worlds.deepfakes import SYNTHETIC_POOL, synthetic_crops

    fp_model, config = load_zoo_model("dit-faces")
    pools = {"FP": synthetic_crops(seed)}
    advance = progress("synthetic family from quantized dit-faces", len(recipes))
    for recipe in recipes:
        chosen = get_recipe(recipe)
        calibrate = (lambda m: generate_faces(m, config, 16, 10_000)) if needs_calibration(chosen) else None
        model = quantize(copy.deepcopy(fp_model), chosen, calib_loop=calibrate)
        pools[recipe] = generate_faces(model, config, SYNTHETIC_POOL, seed)
        advance()
    return pools


def quantized_generator_rows(settings: DeepfakeBenchSettings, loaded: _Loaded,
                             progress: Progress = no_progress) -> dict:
    """Issue 45, item 8: are a quantized generator's faces easier or harder to catch? The synthetic family's test
    captures rendered from each generator's pool (the same identities, poses, lights and draws), each detector's
    AUC per generator, and the identity-paired bootstrap interval of AUC(quantized) - AUC(FP)."""
    from effigy.detect.deepfake.protocol import TEST_FAKES, TEST_REALS
    from effigy.metrics.stats import paired_bootstrap
    from effigy.worlds.deepfakes import render_forgery_crops
    from effigy.worlds.faces import DOMAINS, real_faces, split_identities

    if not settings.quantized_generators:
        return {}
    pools = generator_pools(settings.quantized_generators, settings.seed, progress)
    identities = [int(i) for i in split_identities("test")]
    crops = [(i, real_faces()[i]) for i in identities]
    sets = {name: render_forgery_crops(crops, ("synthetic",), tuple(DOMAINS), TEST_REALS, TEST_FAKES, settings.seed,
                                       identities, pool) for name, pool in pools.items()}
    pool_detail = {name: float(np.abs(np.diff(pool, axis=-1)).mean()) for name, pool in pools.items()}
    rows = []
    for model_name in MODELS:
        model, _ = loaded.model(model_name)
        scores = {name: fake_scores(model, data.images) for name, data in sets.items()}
        fp = sets["FP"]
        for name, data in sets.items():
            row = {"model": model_name, "generator": name, "auc": auc(scores[name], data.fake),
                   "mean_p_fake_fakes": float(scores[name][data.fake].mean())}
            if name != "FP":
                row["auc_minus_fp"] = _identity_paired(paired_bootstrap, scores[name], scores["FP"], data, fp,
                                                       settings.seed)
            rows.append(row)
    return {"pool_detail": pool_detail, "rows": rows}


def _identity_paired(bootstrap, quantized: np.ndarray, fp: np.ndarray, data, fp_data, seed: int) -> dict:
    """AUC(quantized) - AUC(FP) with identities resampled (a resampled identity brings all its captures)."""
    identities = np.unique(data.identity)
    rows = {i: np.flatnonzero(data.identity == i) for i in identities}

    def statistic(scores, labels):
        return lambda idx: auc(scores[np.concatenate([rows[identities[k]] for k in idx])],
                               labels[np.concatenate([rows[identities[k]] for k in idx])])

    return bootstrap(statistic(quantized, data.fake), statistic(fp, fp_data.fake), len(identities), 1000,
                     seed=seed).to_dict()


def _operating_point() -> dict:
    """The shipped detector's recorded operating point (``calibrate_deepfake.py``), or {} before one exists."""
    from effigy.models.zoo import read_manifest

    return read_manifest().get(SHIPPED, {}).get("operating_point") or {}


def _threshold_and_temperature() -> dict:
    point = _operating_point()
    return {"threshold": point.get("threshold", 0.5), "temperature": point.get("temperature", 1.0)}


def run_deepfake_bench(settings: DeepfakeBenchSettings, progress: Progress = no_progress) -> dict:
    """``effigy bench deepfake``: the protocol rows and their averages, held-out faces, PGD, caption noise."""
    loaded = _Loaded(settings.seed)
    rows = protocol_rows(loaded, progress)
    return {"benchmark": "deepfake", "schema": RESULT_SCHEMA, "model": SHIPPED, "settings": settings.to_dict(),
            "machine": machine_facts(), "rows": rows, "averages": average_rows(rows),
            "operating_point": _operating_point(),
            "held_out": held_out_rows(loaded.model(SHIPPED)[0], settings.seed, **_threshold_and_temperature()),
            "generator": generator_quality(settings.seed),
            "pgd": pgd_rows(settings, loaded, progress),
            "quantized_generators": quantized_generator_rows(settings, loaded, progress),
            "captions": caption_noise(loaded) if settings.captions else None,
            "explainer": explainer_rows(settings, loaded, progress) if settings.explainer else None}

