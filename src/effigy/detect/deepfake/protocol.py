"""The DF40-style protocol on the forgery world, measured as DeepfakeBench measures (frame AUC, EER, AP, ACC).

A model trained on some forgery families in some capture domains (``DeepfakeConfig.families``,
``.domains``) is tested on the test identities (never trained on):
- in distribution: its own families and domains;
- each unseen family, in its own domains;
- the unseen domains, every family.
Every test set holds the real captures of the same identities and domains, so AUC compares fakes with reals
seen the same way. The held-out real faces (astronaut, grace_hopper) are judged with their SBI and swap fakes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from effigy.detect.batches import map_face_batches
from effigy.detect.deepfake.captions import FACTS, KINDS
from effigy.detect.deepfake.model import DeepfakeConfig, DeepfakeEncoder, fake_scores
from effigy.metrics.detection import deepfake_report
from effigy.worlds.deepfakes import FAMILIES, ForgeryImages, render_forgeries, render_forgery_crops
from effigy.worlds.faces import DOMAINS, HELD_OUT_SHA256, held_out_face, split_identities

TEST_REALS, TEST_FAKES = 2, 2  # captures per test identity and domain: real ones, and fakes per family


@dataclass
class EvalSet:
    """One test set of the protocol: its name, what it holds out, and its captures."""

    name: str
    held_out: str  # 'nothing' (in distribution), 'family' or 'domain'
    data: ForgeryImages


def protocol_sets(config: DeepfakeConfig, seed: int = 0) -> list[EvalSet]:
    """The test sets for a model trained with ``config``: in distribution, each unseen family, the unseen
    domains."""
    seen_domains = list(config.domains)
    unseen_domains = [d for d in DOMAINS if d not in seen_domains]
    render = lambda families, domains: render_forgeries("test", families, domains, TEST_REALS, TEST_FAKES, seed)  # noqa: E731
    sets = [EvalSet("in distribution: " + "+".join(config.families), "nothing", render(config.families, seen_domains))]
    sets += [EvalSet(f"unseen family: {f}", "family", render([f], seen_domains))
             for f in FAMILIES if f not in config.families]
    if unseen_domains:
        sets.append(EvalSet("unseen domain: " + "+".join(unseen_domains), "domain", render(FAMILIES, unseen_domains)))
    return sets


def evaluate(model: DeepfakeEncoder, evaluation: EvalSet) -> dict:
    """DeepfakeBench's frame metrics of ``model`` on one test set."""
    scores = fake_scores(model, evaluation.data.images)
    report = deepfake_report(scores, evaluation.data.fake)
    return {"test_set": evaluation.name, "held_out": evaluation.held_out, "images": len(scores),
            "fakes": int(evaluation.data.fake.sum()), **report.to_dict()}


def held_out_forgeries(name: str, seed: int = 0, per_domain: int = 2) -> ForgeryImages:
    """A held-out real face (``astronaut``, ``grace_hopper``) in every domain: real captures and its SBI and
    swap fakes (swap donors from the test identities)."""
    identity = 1000 + list(HELD_OUT_SHA256).index(name)
    donors = [int(i) for i in split_identities("test")]
    return render_forgery_crops([(identity, held_out_face(name))], ("sbi", "swap"), tuple(DOMAINS), per_domain,
                                per_domain, seed, donors)


def held_out_rows(model: DeepfakeEncoder, seed: int = 0, threshold: float = 0.5, temperature: float = 1.0) \
        -> list[dict]:
    """Per held-out face and kind (real, sbi, swap): mean P(fake) and the share judged correctly at
    ``threshold``, P(fake) scaled by ``temperature`` (the model's recorded operating point; 0.5 and 1 raw)."""
    from effigy.detect.deepfake.calibration import fake_logits, sigmoid

    rows = []
    for name in HELD_OUT_SHA256:
        data = held_out_forgeries(name, seed)
        scores = sigmoid(fake_logits(model, data.images) / temperature)
        for family in ("real", "sbi", "swap"):
            picked = scores[data.family == family]
            called_fake = float((picked >= threshold).mean())
            rows.append({"face": name, "kind": family, "images": int(len(picked)), "mean_p_fake": float(picked.mean()),
                         "called_fake": called_fake, "correct": 1 - called_fake if family == "real" else called_fake})
    return rows


@lru_cache(maxsize=1)
def fact_features() -> torch.Tensor:
    """[kinds, 384] MiniLM sentence features of every kind's facts, embedded once a process (the service
    describes every upload with them)."""
    from effigy.models.encoders.text_encoder import MiniLMTextEncoder, sentence_features

    with torch.no_grad():
        return sentence_features(*MiniLMTextEncoder().encode([FACTS[kind] for kind in KINDS]))


@torch.no_grad()
def describe(model: DeepfakeEncoder, images: np.ndarray) -> list[str]:
    """For a model trained with image-text contrast: each image's closest kind description (the facts the
    captions were written from), by cosine in the shared space; an empty string for a model without it."""
    if model.config.contrastive == "none":
        return [""] * len(images)
    return closest_facts(model, map_face_batches(model.features, images, 128))


@torch.no_grad()
def closest_facts(model: DeepfakeEncoder, features: torch.Tensor) -> list[str]:
    """The closest kind description of each of ``features`` [N, 1280] (pooled encoder features)."""
    if model.config.contrastive == "none":
        return [""] * len(features)
    text = F.normalize(model.text_proj(fact_features()), dim=1)
    image = F.normalize(model.mean_head(features), dim=1)
    return [FACTS[KINDS[int(i)]] for i in (image @ text.T).argmax(dim=1)]


@torch.no_grad()
def score_and_describe(model: DeepfakeEncoder, images: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """([N] P(fake), each image's closest description) from one pass of the encoder (what the service answers
    with; ``fake_scores`` and ``describe`` separately would run it twice)."""
    features = map_face_batches(model.features, images, 128)
    return model.p_fake(model.fake_logit(features)).numpy(), closest_facts(model, features)
