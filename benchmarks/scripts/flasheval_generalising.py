"""Does any search variant rank *unseen* models better than effigy's FlashEval search? (issue 43)

On FlashEval's released COCO score trees (ImageReward and HPS, the two the issue names for development), ten
seeded model splits: each method picks 50 prompts from the training half; its held-out margin KD (the bench's
measure) is compared with random subsets of 50 to 1,000 prompts on the same split. The ideas measured:

- ``effigy search``: the published iterative search as effigy ships it (8 rounds x 2,000 subsets, the best 5%
  vote, the pool shrinks geometrically to 2k);
- ``paper schedule``: the release's own schedule (search_algorithm.py) at a tenth of its scale: 300,000 subsets
  per round drawn with replacement, the best 10,000 vote, pools 30,000 -> 100 over 11 rounds, zero margin;
- ``bagged discriminability``: no tau search at all: per prompt, the slope of its scores on the training models'
  full-set means and its residual variance; greedily the 50 prompts with the best summed slope^2 / summed
  residual variance, on 30 bootstrap resamples of the training models, the 50 most often chosen kept;
- ``consensus of 5``: five effigy searches with different seeds, the 50 prompts they choose most often.

    python benchmarks/scripts/flasheval_generalising.py FlashEval   # the release's root; ~20 min on 2 cores

Writes benchmarks/results/checks/flasheval_generalising.{json,md}.
"""
import json
import sys
from pathlib import Path

import numpy as np

from effigy.evaluate.flasheval.readers import read_scores
from effigy.evaluate.flasheval.search import (
    SearchSettings,
    Subset,
    default_margin,
    flasheval_search,
    random_subsets,
    subset_taus,
)
from effigy.evaluate.flasheval.splits import Split
from effigy.evaluate.measure import machine_facts
from effigy.evaluate.report import machine_line, markdown_table
from effigy.metrics.ranking import margin_kendall_tau

OUT = Path("benchmarks/results/checks")
MATRICES = ("COCO/ImageReward", "COCO/HPS")
SPLITS = range(10)
SIZE = 50
RANDOM_SIZES = (50, 100, 200, 300, 500, 1000)
PAPER_POOLS = (30000, 20000, 15000, 12000, 10000, 8000, 5000, 3000, 1000, 500, 100)


def effigy_search(table, split, margin, seed):
    return flasheval_search(table, split, margin, SearchSettings(size=SIZE, seed=seed)).prompts


def paper_schedule(table, split, margin, seed, subsets=300_000, voters=10_000):
    rng, train = np.random.default_rng(seed), table[split.train]
    candidates = rng.integers(0, table.shape[1], (subsets, SIZE))
    best, best_tau = None, -2.0
    for pool_size in PAPER_POOLS:
        taus = subset_taus(train, candidates, 0.0)
        if taus.max() > best_tau:
            best, best_tau = candidates[taus.argmax()], taus.max()
        values, counts = np.unique(candidates[np.argpartition(-taus, voters)[:voters]], return_counts=True)
        pool = values[np.argsort(-counts, kind="stable")][:pool_size]
        candidates = pool[rng.integers(0, len(pool), (subsets, SIZE))]
    return sorted(set(best.tolist()))


def _discriminative_greedy(train):
    full = train.mean(axis=1) - train.mean()
    centred = train - train.mean(axis=0, keepdims=True)
    slope = full @ centred / (full @ full)
    residual = ((centred - np.outer(full, slope)) ** 2).sum(axis=0) + 1e-12
    chosen, total_slope, total_residual = [], 0.0, 0.0
    open_ = np.ones(train.shape[1], dtype=bool)
    for _ in range(SIZE):
        gain = (total_slope + slope) * np.abs(total_slope + slope) / (total_residual + residual)
        pick = int(np.argmax(np.where(open_, gain, -np.inf)))
        chosen.append(pick)
        open_[pick] = False
        total_slope, total_residual = total_slope + slope[pick], total_residual + residual[pick]
    return chosen


def bagged_discriminability(table, split, margin, seed, resamples=30):
    rng, train = np.random.default_rng(seed), table[split.train]
    votes = np.zeros(table.shape[1])
    for _ in range(resamples):
        votes[_discriminative_greedy(train[rng.choice(len(train), len(train))])] += 1
    return sorted(np.argsort(-votes, kind="stable")[:SIZE].tolist())


def consensus(table, split, margin, seed, searches=5):
    votes = np.zeros(table.shape[1])
    for r in range(searches):
        found = flasheval_search(table, split, margin, SearchSettings(size=SIZE, seed=100 * seed + r))
        votes[found.prompts] += 1 + 1e-3 * found.train_tau
    return sorted(np.argsort(-votes, kind="stable")[:SIZE].tolist())


METHODS = {"effigy search": effigy_search, "paper schedule": paper_schedule,
           "bagged discriminability": bagged_discriminability, "consensus of 5": consensus}


def heldout_kd(table, split, prompts, margin):
    held = table[split.heldout]
    return float(margin_kendall_tau(Subset("x", prompts).means(held), held.mean(axis=1), margin))


def run_matrix(root: Path, name: str) -> dict:
    matrix = read_scores(root / "Image_score" / name)
    table = matrix.table(matrix.metrics[0])
    per_split = []
    for seed in SPLITS:
        split = Split.halves(len(table), seed)
        margin = default_margin(table[split.train])
        row = {m: heldout_kd(table, split, fn(table, split, margin, seed), margin) for m, fn in METHODS.items()}
        for size in RANDOM_SIZES:
            draws = random_subsets(table.shape[1], size, 200, 10_000 + 1000 * seed + size)
            row[f"random {size}"] = float(np.mean([heldout_kd(table, split, s.prompts, margin) for s in draws]))
        per_split.append(row)
        print(name, seed, {k: round(v, 3) for k, v in row.items()}, flush=True)
    return {"models": len(table), "prompts": table.shape[1], "per_split": per_split,
            "mean": {k: float(np.mean([r[k] for r in per_split])) for k in per_split[0]},
            "std": {k: float(np.std([r[k] for r in per_split])) for k in per_split[0]}}


def main(root: Path) -> None:
    results = {name: run_matrix(root, name) for name in MATRICES}
    record = {"script": "benchmarks/scripts/flasheval_generalising.py", "splits": list(SPLITS), "size": SIZE,
              "release": "thu-nics/FlashEval a790c99", "results": results, "machine": machine_facts()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "flasheval_generalising.json").write_text(json.dumps(record, indent=1) + "\n")
    columns = [(k, k) for k in ("matrix", "method", "held-out margin KD")]
    rows = [{"matrix": name, "method": k, "held-out margin KD": f"{r['mean'][k]:.3f} +/- {r['std'][k]:.3f}"}
            for name, r in results.items() for k in r["mean"]]
    text = ["# Search variants on unseen models (issue 43)", "",
            f"`python benchmarks/scripts/flasheval_generalising.py FlashEval` on FlashEval's release (a790c99): "
            f"{len(SPLITS)} seeded half splits of the complete models, {SIZE} prompts searched on the training "
            "half, margin KD on the held-out half (mean +/- std over splits; random: mean of 200 draws per split).  ",
            machine_line(record["machine"]), "", markdown_table(rows, columns), ""]
    (OUT / "flasheval_generalising.md").write_text("\n".join(text))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "FlashEval"))
