"""Client-side adaptation of a prototype FAS model to a new capture domain (arXiv 2503.22984,
https://arxiv.org/abs/2503.22984), and the baselines it is measured against.

Each adaptor sees the base model only through a :class:`SourceView`: unit features of the client's images
and the source prototypes. It returns a :class:`ClientHead`, what the client keeps and scores with: class
prototypes and, for the lightweight adaptors, a small residual layer on the features (the paper's
customisable client layer). The base model's parameters are neither read nor changed (TENT, the one
baseline that updates them, lives in ``effigy.detect.fas.tent`` and says so).

- ``OTPrototypes`` (training-free): an optimal-transport plan between the source prototypes and a few
  labelled target samples (class-restricted cosine cost, exact or entropic or Laplacian, POT's ``ot.da``)
  shifts each class's prototypes by the class's mean barycentric displacement.
- ``OTPrototypes(one_class=True)``: only live target samples; every prototype follows the live class's shift.
- ``GeodesicMixup`` (lightweight): features sampled on the sphere's geodesics between source prototypes and
  the target features the plan pairs them with, with the target samples, train the residual layer under the
  source prototypes.
- Baselines: ``NoAdaptation``, ``T3A`` (prototypes replaced by centroids of confidently pseudo-labelled
  target features, no labels), ``LinearMixup`` (classic mixup: random prototype / target pairs, straight
  lines, mixed labels, the same layer and training).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from effigy.detect.fas.model import class_similarity, live_probability
from effigy.errors import AdaptationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceView:
    """What a client receives of the base model: its prototypes [classes, centres, D] and logit scale (features
    of the client's own images come from the model's encoder, run as a black box)."""

    prototypes: torch.Tensor
    scale: float

    def prototype_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(prototypes [classes * centres, D], their class labels)."""
        classes, centres, dim = self.prototypes.shape
        return (self.prototypes.reshape(-1, dim).double().numpy(),
                np.repeat(np.arange(classes), centres))


@dataclass(frozen=True)
class ClientHead:
    """What a client keeps after adapting and scores with: class prototypes [classes, centres, D], the logit
    scale, and an optional residual layer (``weight`` [D, D], ``bias`` [D]) applied to each unit feature
    before the base model's rule (nearest prototype of each class, softmax). The prototype adaptors leave the
    layer out; the mixup adaptors keep the source prototypes and learn the layer, so the source's
    calibration, and with it the source threshold, keeps its meaning."""

    prototypes: torch.Tensor
    scale: float
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """[N] P(live) of unit features [N, D]."""
        prototypes = F.normalize(self.prototypes.detach().float(), dim=-1)
        return live_probability(self.transform(features), prototypes, self.scale)

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        """The residual layer on unit features, back onto the sphere (identity without a layer)."""
        if self.weight is None:
            return features
        return F.normalize(features + features @ self.weight + self.bias, dim=1)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Its tensors by name, as a checkpoint holds them."""
        named = {"prototypes": self.prototypes, "weight": self.weight, "bias": self.bias}
        return {k: v.detach().float().contiguous() for k, v in named.items() if v is not None}


class Adaptor(Protocol):
    name: str
    uses_labels: bool
    one_class: bool  # its labelled samples are live ones only

    def fit(self, source: SourceView, features: torch.Tensor, labels: torch.Tensor | None) -> ClientHead: ...


class PrototypeAdaptor:
    """What the prototype adaptors share: they end in new class prototypes [classes, centres, D], scored by
    the base model's rule."""

    one_class = False  # OTPrototypes makes it a field

    def adapted_prototypes(self, source: SourceView, features: torch.Tensor,
                           labels: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, source: SourceView, features: torch.Tensor, labels: torch.Tensor | None) -> ClientHead:
        """The adapted head: target features [N, D] -> P(live) [N]."""
        return ClientHead(self.adapted_prototypes(source, features, labels), source.scale)


def _check_targets(features: torch.Tensor, labels: torch.Tensor | None, classes: tuple[int, ...]) -> None:
    if features.ndim != 2 or len(features) == 0:
        raise AdaptationError("adaptation needs at least one target feature vector [N, D].")
    if labels is None:
        return
    if len(labels) != len(features):
        raise AdaptationError(f"{len(labels)} labels for {len(features)} target samples; give one label each.")
    missing = [c for c in classes if not bool((labels == c).any())]
    if missing:
        names = ", ".join("live" if c == 1 else "spoof" for c in missing)
        raise AdaptationError(f"no target sample of class {names}; give a few of each class, or adapt from live "
                              "samples alone (OTPrototypes(one_class=True), CLI --adaptor ot-one-class).")


@dataclass
class NoAdaptation(PrototypeAdaptor):
    """The base model as shipped."""

    name: str = "no adaptation"
    uses_labels: bool = False

    def adapted_prototypes(self, source, features, labels):
        return source.prototypes


@dataclass
class OTPrototypes(PrototypeAdaptor):
    """Training-free OT: a class-restricted transport plan between the source prototypes and a few labelled
    target samples; each class's prototypes are shifted by the class's mean transport displacement (the
    barycentric map's, so the multi-centre structure learnt on the source is kept), or, with
    ``move='map'``, each prototype is replaced by its own barycentric image.

    Args:
        regulariser: 'exact' (EMD), 'entropic' (Sinkhorn) or 'laplacian' (EMD with a Laplacian term keeping
            neighbouring prototypes moving alike).
        strength: the regulariser's weight (unused for 'exact').
        move: 'shift' or 'map' (see above).
        one_class: target samples are all live; every prototype is shifted by the live class's displacement.
    """

    regulariser: str = "exact"
    strength: float = 0.05
    move: str = "shift"
    one_class: bool = False
    name: str = "OT prototype shift (training-free)"
    uses_labels: bool = True

    def adapted_prototypes(self, source: SourceView, features: torch.Tensor,
                           labels: torch.Tensor | None) -> torch.Tensor:
        """[classes, centres, D]: the source prototypes after transport to the target samples."""
        if labels is None:
            raise AdaptationError("OT adaptation needs labelled target samples (a few per class).")
        if self.move not in ("shift", "map"):
            raise AdaptationError(f"unknown prototype move {self.move!r}; use 'shift' or 'map'.")
        _check_targets(features, labels, (1,) if self.one_class else (0, 1))
        xs, ys = source.prototype_rows()
        xt, yt = features.double().numpy(), labels.long().numpy()
        prototypes = source.prototypes.double()
        if self.one_class:
            live = ys == 1
            mapped = transport_map(xs[live], None, xt[yt == 1], None, self.regulariser, self.strength)
            shift = (torch.from_numpy(mapped) - prototypes[1]).mean(dim=0)
            return F.normalize(prototypes + shift, dim=-1).float()
        mapped = torch.from_numpy(transport_map(xs, ys, xt, yt, self.regulariser, self.strength))
        mapped = mapped.reshape(prototypes.shape)
        if self.move == "map":
            return mapped.float()
        shift = (mapped - prototypes).mean(dim=1, keepdim=True)
        return F.normalize(prototypes + shift, dim=-1).float()


def transport_map(xs: np.ndarray, ys: np.ndarray | None, xt: np.ndarray, yt: np.ndarray | None,
                  regulariser: str, strength: float) -> np.ndarray:
    """The barycentric map of ``xs`` onto ``xt`` (rows re-normalised to the sphere), with a cosine cost that
    forbids cross-class pairs when labels are given.

    Returns:
        [len(xs), D] mapped rows.
    """
    transport = _transport(regulariser, strength)
    transport.fit(Xs=xs, ys=ys, Xt=xt, yt=yt)
    mapped = transport.transform(Xs=xs)
    if not np.isfinite(mapped).all():
        raise AdaptationError("the transport plan did not converge; raise the regulariser's strength.")
    return mapped / np.linalg.norm(mapped, axis=1, keepdims=True).clip(min=1e-12)


def _transport(regulariser: str, strength: float):
    import ot

    if regulariser == "exact":
        return ot.da.EMDTransport(metric="cosine", limit_max=10)
    if regulariser == "entropic":
        return ot.da.SinkhornTransport(reg_e=strength, metric="cosine", limit_max=10)
    if regulariser == "laplacian":
        transport = ot.da.EMDLaplaceTransport(reg_lap=strength, reg_src=1.0, metric="cosine")
        transport.limit_max = 10  # POT 0.9.7 reads it in fit() but only sets it for the other transports
        return transport
    raise AdaptationError(f"unknown OT regulariser {regulariser!r}; use 'exact', 'entropic' or 'laplacian'.")


def transport_plan(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, yt: np.ndarray, regulariser: str,
                   strength: float) -> np.ndarray:
    """[len(xs), len(xt)] class-restricted plan with a cosine cost (rows: prototypes)."""
    transport = _transport(regulariser, strength)
    transport.fit(Xs=xs, ys=ys, Xt=xt, yt=yt)
    return np.asarray(transport.coupling_)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points at fraction ``t`` along the great circle from unit ``a`` to unit ``b`` (rows)."""
    cos = (a * b).sum(dim=1, keepdim=True).clamp(-1 + 1e-6, 1 - 1e-6)
    angle = torch.acos(cos)
    t = t[:, None]
    return (torch.sin((1 - t) * angle) * a + torch.sin(t * angle) * b) / torch.sin(angle)


@dataclass
class _MixupAdaptor:
    """Shared by the mixup adaptors: a residual layer on the features (zero at the start, so the base model's
    scores) trained, under the fixed source prototypes and a cosine margin, on the target samples plus
    ``samples`` synthetic ones. ``pairs`` picks (prototype row, target row) pairs; ``mix`` makes the
    synthetic features and their soft labels (P(live)) at fractions ``t`` drawn from [``nearest``, 1] of the
    way from the prototype to the target sample (synthetic points nearer the target than the source)."""

    name: str
    samples: int = 256
    nearest: float = 0.5
    steps: int = 200
    learning_rate: float = 0.01
    weight_decay: float = 1e-3
    margin: float = 0.1
    seed: int = 0
    uses_labels: bool = True
    one_class: bool = False

    def pairs(self, source: SourceView, xt: np.ndarray, yt: np.ndarray, generator: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def mix(self, a: torch.Tensor, label_a: torch.Tensor, b: torch.Tensor, label_b: torch.Tensor,
            t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def fit(self, source: SourceView, features: torch.Tensor, labels: torch.Tensor | None) -> ClientHead:
        """The head: source prototypes and the residual layer trained on target and synthetic features."""
        if labels is None:
            raise AdaptationError(f"{self.name} needs labelled target samples (a few per class).")
        _check_targets(features, labels, (0, 1))
        generator = np.random.default_rng(self.seed)
        xs, ys = source.prototype_rows()
        rows_s, rows_t = self.pairs(source, features.double().numpy(), labels.long().numpy(), generator)
        t = torch.from_numpy(generator.uniform(self.nearest, 1, len(rows_s))).float()
        mixed, soft = self.mix(torch.from_numpy(xs[rows_s]).float(), torch.from_numpy(ys[rows_s]).float(),
                               features[rows_t].float(), labels[rows_t].float(), t)
        inputs = torch.cat([features.float(), F.normalize(mixed, dim=1)])
        live_share = torch.cat([labels.float(), soft])
        weight, bias = self._train(source, inputs, live_share)
        return ClientHead(source.prototypes, source.scale, weight, bias)

    def _train(self, source: SourceView, inputs: torch.Tensor, live_share: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        dim = inputs.shape[1]
        weight = torch.zeros(dim, dim, requires_grad=True)
        bias = torch.zeros(dim, requires_grad=True)
        prototypes = F.normalize(source.prototypes.detach().float(), dim=-1)
        targets = torch.stack([1 - live_share, live_share], dim=1)
        optimizer = torch.optim.Adam([weight, bias], lr=self.learning_rate)
        for _ in range(self.steps):
            moved = F.normalize(inputs + inputs @ weight + bias, dim=1)
            similarity = class_similarity(moved, prototypes) - self.margin * targets
            loss = (F.cross_entropy(source.scale * similarity, targets)
                    + self.weight_decay * (weight.pow(2).sum() + bias.pow(2).sum()))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return weight.detach(), bias.detach()


@dataclass
class GeodesicMixup(_MixupAdaptor):
    """Lightweight OT adaptor: features on the sphere's geodesics between prototypes and the target samples
    the class-restricted transport plan pairs them with (pairs drawn in proportion to the plan), labelled
    with their (shared) class, train the client's residual layer."""

    name: str = "OT geodesic mixup"
    regulariser: str = "entropic"
    strength: float = 0.05

    def pairs(self, source, xt, yt, generator):
        xs, ys = source.prototype_rows()
        plan = transport_plan(xs, ys, xt, yt, self.regulariser, self.strength)
        flat = plan.ravel() / plan.sum()
        picks = generator.choice(len(flat), self.samples, p=flat)
        return picks // plan.shape[1], picks % plan.shape[1]

    def mix(self, a, label_a, b, label_b, t):
        return slerp(a, b, t), label_a


@dataclass
class LinearMixup(_MixupAdaptor):
    """Baseline: mixup (Zhang et al., ICLR 2018) between prototypes and target samples paired at random, on
    straight lines, with the labels mixed in the same proportion."""

    name: str = "linear mixup"

    def pairs(self, source, xt, yt, generator):
        _, ys = source.prototype_rows()
        return generator.integers(len(ys), size=self.samples), generator.integers(len(yt), size=self.samples)

    def mix(self, a, label_a, b, label_b, t):
        return (1 - t[:, None]) * a + t[:, None] * b, (1 - t) * label_a + t * label_b


@dataclass
class T3A(PrototypeAdaptor):
    """T3A (Iwasawa and Matsuo, NeurIPS 2021): unlabelled target features, pseudo-labelled by the source
    prototypes; each class's template becomes the centroid of its prototypes and its ``keep`` most confident
    (lowest-entropy) pseudo-labelled features."""

    keep: int = 20
    name: str = "T3A"
    uses_labels: bool = False

    def adapted_prototypes(self, source: SourceView, features: torch.Tensor,
                           labels: torch.Tensor | None) -> torch.Tensor:
        _check_targets(features, None, ())
        probability = live_probability(features, source.prototypes, source.scale)
        entropy = -(probability * probability.clamp(min=1e-9).log()
                    + (1 - probability) * (1 - probability).clamp(min=1e-9).log())
        pseudo = (probability >= 0.5).long()
        templates = []
        for cls in range(source.prototypes.shape[0]):
            rows = torch.nonzero(pseudo == cls).squeeze(1)
            chosen = rows[entropy[rows].argsort()[: self.keep]]
            support = torch.cat([source.prototypes[cls], features[chosen]])
            templates.append(F.normalize(support.mean(dim=0), dim=0))
        log.info("T3A: %d live / %d spoof pseudo-labels", int(pseudo.sum()), int((1 - pseudo).sum()))
        return torch.stack(templates)[:, None]
