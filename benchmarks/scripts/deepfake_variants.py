"""Do per-image captions or a low starting variance let the uncertainty-aware contrastive term help on unseen
forgery families? Variants of the deepfake encoders are trained (seeded, into a scratch folder, never shipped;
an existing scratch model of the same variant is reused) and scored on the DF40-style protocol beside the
shipped models, on the same test sets:

- cues: captions written per kind *and visible cues* (``caption_detail="cues"``, 4 per pool), for plain and
  uncertainty-aware contrast;
- low variance: the uncertainty-aware encoder with its log-variance starting at -4 and beta = 1e-4 (the shipped
  one ends with its sampled noise about as large as its embedding: the noise table below).

Differences in the unseen families' mean AUC come with a 95% bootstrap interval over the 25 test identities
(each identity's captures resampled together, the same draws for both models).

    python benchmarks/scripts/deepfake_variants.py [SCRATCH]   # ~35 min on 2 cores when nothing is reused
"""
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import effigy.detect.deepfake  # noqa: F401  (registers the deepfake models)
from effigy.bench.deepfake import MODELS, average_rows
from effigy.detect.deepfake.data import training_images
from effigy.detect.deepfake.model import fake_scores
from effigy.detect.deepfake.protocol import evaluate, protocol_sets
from effigy.evaluate.measure import machine_facts
from effigy.evaluate.report import machine_line, markdown_table
from effigy.metrics.detection import auc
from effigy.metrics.stats import paired_bootstrap
from effigy.models.zoo import WEIGHTS_DIR, load_zoo_model, read_manifest, train_zoo_model

OUT = Path("benchmarks/results/checks")
CUES = {"caption_detail": "cues", "captions_per_kind": 4}
VARIANTS = {  # variant -> (folder under the scratch root, zoo name, config overrides)
    "plain + cue captions": ("cues", "deepfake-clip", CUES),
    "uncertain + cue captions": ("cues", "deepfake-authguard", CUES),
    "uncertain, low starting variance": ("low-variance", "deepfake-authguard",
                                         {"kl_weight": 1e-4, "initial_log_var": -4.0}),
}
PAIRS = [("deepfake-authguard", "deepfake-ce"), ("deepfake-authguard", "deepfake-clip"),
         ("deepfake-clip", "deepfake-ce"), ("uncertain + cue captions", "plain + cue captions"),
         ("uncertain + cue captions", "deepfake-ce"), ("uncertain, low starting variance", "deepfake-ce"),
         ("uncertain, low starting variance", "deepfake-clip")]
DIFFERENCE_COLUMNS = [("a", "model"), ("b", "minus"), ("difference", "unseen AUC difference"), ("low", "95% low"),
                      ("high", "95% high"), ("significant", "beyond noise")]
COLUMNS = [("model", "model"), ("in_distribution_auc", "in-distribution AUC"), ("unseen_auc", "unseen families AUC"),
           ("unseen_eer", "EER"), ("unseen_ap", "AP"), ("unseen_acc", "ACC"), ("unseen_domain_auc", "unseen domain AUC")]


def scratch_model(root: Path, folder: str, name: str, overrides: dict):
    """The variant from the scratch folder, trained there first unless a model of that config is already in it."""
    path = root / folder
    record = read_manifest(path / "MANIFEST.json").get(name)
    if record is None or any(record["config"].get(k) != v for k, v in overrides.items()):
        train_zoo_model(name, path, **overrides)
    return load_zoo_model(name, path)


def unseen_auc_by_identity(scores: dict[str, list[np.ndarray]], sets) -> tuple[Callable, int]:
    """(model -> statistic(identity draws) -> the unseen families' mean AUC over the drawn identities'
    captures, the number of identities)."""
    identities = np.unique(sets[0].data.identity)
    rows = [[np.flatnonzero(s.data.identity == i) for i in identities] for s in sets]

    def statistic(model: str):
        def of(draw: np.ndarray) -> float:
            values = []
            for k, s in enumerate(sets):
                picked = np.concatenate([rows[k][i] for i in draw])
                values.append(auc(scores[model][k][picked], s.data.fake[picked]))
            return float(np.mean(values))
        return of
    return statistic, len(identities)


def differences(models: dict, sets) -> list[dict]:
    """Paired identity-bootstrap intervals of the unseen-family AUC differences in ``PAIRS``."""
    unseen = [s for s in sets if s.held_out == "family"]
    scores = {label: [fake_scores(model, s.data.images) for s in unseen] for label, (model, _) in models.items()}
    statistic, n = unseen_auc_by_identity(scores, unseen)
    return [{"a": a, "b": b, **paired_bootstrap(statistic(a), statistic(b), n, resamples=1000).to_dict()}
            for a, b in PAIRS]


@torch.no_grad()
def embedding_noise(models: dict, count: int = 256) -> list[dict]:
    """Per uncertainty-aware model: on seeded training images, the mean variance of its sampled embedding and
    the mean square of the embedding's mean (per dimension): how much of a sample is noise."""
    data = training_images(models[MODELS[-1]][1])
    rows = torch.from_numpy(np.random.default_rng(0).choice(len(data), count, replace=False))
    out = []
    for label, (model, config) in models.items():
        if config.contrastive != "uncertain":
            continue
        features = model.features(torch.from_numpy(data.images[rows.numpy()]))
        out.append({"model": label, "mean_variance": float(model.log_var_head(features).exp().mean()),
                    "mean_square_of_mean": float(model.mean_head(features).pow(2).mean())})
    return out


def main(root: Path) -> None:
    models = {name: load_zoo_model(name, WEIGHTS_DIR) for name in MODELS}
    models |= {label: scratch_model(root, *spec) for label, spec in VARIANTS.items()}
    sets = protocol_sets(models[MODELS[-1]][1])  # every model trains on the same families and domains
    rows = [{"model": label, "contrastive": config.contrastive, **evaluate(model, s)}
            for label, (model, config) in models.items() for s in sets]
    result = {"check": "deepfake_variants", "machine": machine_facts(), "seed": 0,
              "variants": {label: {"zoo_name": name, **overrides} for label, (_, name, overrides) in VARIANTS.items()},
              "rows": rows, "averages": average_rows(rows), "differences": differences(models, sets),
              "embedding_noise": embedding_noise(models)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "deepfake_variants.json").write_text(json.dumps(result, indent=2) + "\n")
    text = ("# Deepfake encoders: caption and variance variants\n\nCommand: `python benchmarks/scripts/deepfake_variants.py`"
            f"\n\n{__doc__.split(chr(10) + chr(10) + '    python')[0]}\n\nSeed 0 (training and test sets). "
            f"{machine_line(result['machine'])}\n\n## Averages (unseen families: mean over reenact, upsample, synthetic)"
            "\n\n" + markdown_table(result["averages"], COLUMNS)
            + "\n\n## Differences in unseen-family AUC (95% bootstrap over the 25 test identities)\n\n"
            + markdown_table(result["differences"], DIFFERENCE_COLUMNS)
            + "\n\n## How noisy the uncertainty-aware embedding is (256 seeded training images, per dimension)\n\n"
            + markdown_table(result["embedding_noise"], [("model", "model"), ("mean_variance", "mean variance"),
                                                         ("mean_square_of_mean", "mean square of the mean")])
            + "\n\n## Every test set\n\n"
            + markdown_table(rows, [("model", "model"), ("test_set", "test set"), ("auc", "AUC"), ("eer", "EER"),
                                    ("ap", "AP"), ("acc", "ACC")]) + "\n")
    (OUT / "deepfake_variants.md").write_text(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/effigy-deepfake-variants"))
