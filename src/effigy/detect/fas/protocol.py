"""The leave-one-domain-out protocol of cross-domain face anti-spoofing, on the face world.

For a held-out domain D and the model trained without it:
- the decision threshold is the equal-error threshold of the model on the *source* development set (dev
  identities, the model's own domains), fixed before anything of D is seen;
- the client's adaptation pool is D's captures of the dev identities: an adaptor draws a few labelled samples
  per class from it (or, for T3A and TENT, uses it unlabelled);
- the test set is D's captures of the test identities (never seen by the model or the adaptor).
Each labelled adaptor is run over several seeded draws of its shots, and its metrics averaged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from effigy.detect.fas.adapt import (
    T3A,
    Adaptor,
    GeodesicMixup,
    LinearMixup,
    NoAdaptation,
    OTPrototypes,
    SourceView,
)
from effigy.detect.fas.model import FASConfig, PrototypeFAS, embed, live_probability, live_scores
from effigy.detect.fas.tent import tent
from effigy.errors import AdaptationError
from effigy.metrics.detection import DetectionReport, detection_report, eer_threshold
from effigy.worlds.faces import (
    ATTACKS,
    DOMAINS,
    HELD_OUT_SHA256,
    FaceImages,
    held_out_face,
    render,
    render_faces,
    split_identities,
)

POOL_LIVE_PER_IDENTITY, POOL_SPOOFS_PER_ATTACK = 3, 1  # the adaptation pool's captures per dev identity


def standard_adaptors() -> list[Adaptor]:
    """The rows of the comparison, baselines first."""
    return [NoAdaptation(), T3A(), LinearMixup(), OTPrototypes(),
            OTPrototypes(move="map", name="OT prototype map (each to its barycentre; training-free)"),
            OTPrototypes(regulariser="laplacian", strength=1.0, name="OT prototype shift, Laplacian (training-free)"),
            GeodesicMixup(), OTPrototypes(one_class=True, name="OT prototype shift, live samples only (one-class)")]


@dataclass
class DomainData:
    """What one held-out domain's evaluation needs, computed once."""

    domain: str
    threshold: float
    pool: FaceImages
    pool_features: torch.Tensor
    test: FaceImages
    test_features: torch.Tensor


def source_threshold(model: PrototypeFAS, config: FASConfig) -> float:
    """The equal-error threshold on the source development set (dev identities, the model's domains)."""
    dev = render("dev", config.domains, config.attacks, seed=config.seed)
    return eer_threshold(live_scores(model, dev.images), dev.live)


def domain_data(model: PrototypeFAS, config: FASConfig, domain: str, seed: int = 0) -> DomainData:
    """Threshold, adaptation pool and test set of ``domain`` for ``model`` (trained without it)."""
    return _target_data(model, config, domain, [domain], ATTACKS, seed)


def attack_data(model: PrototypeFAS, config: FASConfig, attack: str, seed: int = 0) -> DomainData:
    """The leave-one-attack-out counterpart: live captures and ``attack`` (which ``model`` never saw) in every
    domain; the pool from the dev identities, the test set from the test identities."""
    return _target_data(model, config, attack, list(DOMAINS), [attack], seed)


def _target_data(model: PrototypeFAS, config: FASConfig, name: str, domains: list[str], attacks,
                 seed: int) -> DomainData:
    pool = render("dev", domains, attacks, live_per_identity=POOL_LIVE_PER_IDENTITY,
                  spoofs_per_attack=POOL_SPOOFS_PER_ATTACK, seed=seed)
    test = render("test", domains, attacks, seed=seed)
    return DomainData(name, source_threshold(model, config), pool, embed(model, pool.images), test,
                      embed(model, test.images))


def max_shots() -> int:
    """The most labelled target samples per class a domain's adaptation pool holds (its dev identities' live
    captures and attack captures, as :func:`domain_data` renders them)."""
    identities = len(split_identities("dev"))
    return identities * min(POOL_LIVE_PER_IDENTITY, POOL_SPOOFS_PER_ATTACK * len(ATTACKS))


def check_shots(shots: int) -> None:
    """One clear error, before any rendering, for more target samples per class than a pool holds."""
    if not 1 <= shots <= max_shots():
        raise AdaptationError(f"{shots} target samples per class asked for; a domain's pool holds 1 to "
                              f"{max_shots()} per class.")


def draw_shots(labels: np.ndarray, shots: int, generator: np.random.Generator, one_class: bool = False) -> np.ndarray:
    """Row indices of ``shots`` samples per class (live only for ``one_class``), drawn without replacement."""
    classes = (True,) if one_class else (True, False)
    for c in classes:
        available = int((labels == c).sum())
        if shots > available:
            raise AdaptationError(f"{shots} target samples per class asked for, the pool has {available} "
                                  f"{'live' if c else 'spoof'} ones; ask for at most {available}.")
    return np.concatenate([generator.choice(np.flatnonzero(labels == c), shots, replace=False) for c in classes])


def evaluate_adaptor(adaptor: Adaptor, source: SourceView, data: DomainData, shots: int, draws: int,
                     seed: int = 0) -> DetectionReport:
    """The adaptor's test metrics on ``data``, averaged over ``draws`` seeded draws of its target samples
    (one run for an adaptor that uses the whole unlabelled pool)."""
    generator = np.random.default_rng([seed, shots])
    reports = []
    for _ in range(draws if adaptor.uses_labels else 1):
        if adaptor.uses_labels:
            rows = draw_shots(data.pool.live, shots, generator, adaptor.one_class)
            labels = torch.from_numpy(data.pool.live[rows].astype(np.int64))
            scorer = adaptor.fit(source, data.pool_features[rows], labels)
        else:
            scorer = adaptor.fit(source, data.pool_features, None)
        reports.append(detection_report(scorer(data.test_features).numpy(), data.test.live, data.threshold))
    return mean_report(reports)


def evaluate_tent(model: PrototypeFAS, data: DomainData) -> DetectionReport:
    """TENT on the unlabelled pool (touches the model's norms), scored on the test set."""
    adapted = tent(model, data.pool.images)
    scores = live_probability(embed(adapted, data.test.images), adapted.prototypes().detach(), model.config.scale)
    return detection_report(scores.numpy(), data.test.live, data.threshold)


def mean_report(reports: list[DetectionReport]) -> DetectionReport:
    """Field-wise mean of several reports (same threshold)."""
    fields = reports[0].to_dict()
    return DetectionReport(**{k: float(np.mean([r.to_dict()[k] for r in reports])) for k in fields})


def held_out_captures(name: str, live: int = 4, seed: int = 0) -> FaceImages:
    """Captures of a held-out real face (``astronaut``, ``grace_hopper``) in every domain: ``live`` live ones
    and one of each attack per domain (identity keys from 1000 up, away from ``lfw_subset``'s)."""
    identity = 1000 + list(HELD_OUT_SHA256).index(name)
    return render_faces([(identity, held_out_face(name))], DOMAINS, ATTACKS, live, 1, seed)


def folder_report(live_scores: np.ndarray, frames: list, threshold: float) -> list[dict]:
    """:func:`species_report` of a team's ``live/`` + ``spoof/<species>/`` frames (``LabelledFrame``: ``fake``
    marks an attack, ``method`` its species, ``dataset`` its capture domain)."""
    return species_report(live_scores, np.array([not f.fake for f in frames], dtype=bool),
                          np.array([f.method for f in frames]), np.array([f.dataset for f in frames]), threshold)


def species_report(live_scores: np.ndarray, live: np.ndarray, species: np.ndarray, domains: np.ndarray,
                   threshold: float) -> list[dict]:
    """Per capture domain (and over all of them): HTER, APCER (every attack pooled), BPCER, AUC and TPR@FPR=1% at
    ``threshold``; the APCER of each presentation-attack instrument species apart (ISO/IEC 30107-3), the worst of
    them and ACER = (worst APCER + BPCER) / 2, 30107-3's definition.

    Args:
        live_scores: [N] P(live) (NaN where no face was found: left out).
        live: [N] bona fide or not. species: [N] each attack's species (ignored for live rows).
        domains: [N] capture domain of each capture.
    """
    from effigy.metrics.detection import apcer

    rows = []
    names = sorted(set(domains.tolist()))
    for domain in ([*names, "all"] if len(names) > 1 else names):
        keep = ~np.isnan(live_scores) & ((domains == domain) if domain != "all" else True)
        scores, bonafide, kinds = live_scores[keep], live[keep], species[keep]
        if bonafide.all() or not bonafide.any():
            rows.append({"domain": domain, "frames": int(keep.sum()), "note": "one class only: no rates"})
            continue
        row = {"domain": domain, "frames": int(keep.sum()), **detection_report(scores, bonafide, threshold).to_dict()}
        for kind in sorted(set(kinds[~bonafide].tolist())):
            mine = bonafide | (kinds == kind)
            row[f"apcer_{kind}"] = apcer(scores[mine], bonafide[mine], threshold)
        row["apcer_worst"] = max(v for k, v in row.items() if k.startswith("apcer_") and k != "apcer_worst")
        row["acer"] = (row["apcer_worst"] + row["bpcer"]) / 2  # ISO/IEC 30107-3's ACER: the worst species' APCER
        rows.append(row)
    return rows
