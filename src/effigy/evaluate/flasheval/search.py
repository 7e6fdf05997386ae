"""FlashEval's subset search (https://arxiv.org/abs/2403.16379) and the baselines it is measured against.

The search, as published: draw many random subsets of size k from a candidate pool, score each by the
Kendall tau (tie-aware, with a margin) between the subset-mean and the full-set ranking of the *training*
variants, keep the best few, count how often each prompt appears in them, shrink the pool to the most
frequent prompts, and repeat; the best subset seen wins. Variants are split into training and held-out
halves first, and every tau a report quotes is on the held-out half, which the search never reads.

Baselines: random subsets, random subsets stratified by caption kind, and Anchor Points (Vivek et al.,
https://arxiv.org/abs/2309.08638): k-medoids over prompts by how alike their scores move across the
training variants, each medoid weighted by its cluster's size.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from effigy.errors import ScoreMatrixError
from effigy.evaluate.flasheval.matrix import ScoreMatrix
from effigy.evaluate.flasheval.splits import Split
from effigy.evaluate.measure import Progress, no_progress
from effigy.metrics.ranking import margin_kendall_tau

log = logging.getLogger(__name__)
SUBSET_FORMAT = "effigy-flasheval-subset/1"
CHUNK = 256  # subsets scored per vectorised call
DRAW_FLOATS = 2**24  # random keys drawn at once (128 MB), whatever the subset count and prompt pool
MAX_SUBSETS = 1_000_000  # subsets per round: a bound on the search's time and on the drawn indices' memory


@dataclass(frozen=True)
class SearchSettings:
    """The iterative search: ``rounds`` rounds of ``subsets`` random draws, the best ``keep`` fraction
    voting for the next, smaller pool (geometric from all prompts down to ``final_pool_factor`` x size)."""

    size: int = 50
    rounds: int = 8
    subsets: int = 2000
    keep: float = 0.05
    final_pool_factor: float = 2.0
    seed: int = 0


@dataclass
class Subset:
    """Prompt columns (and their weights: 1 except for Anchor Points) chosen by a method."""

    method: str
    prompts: list[int]
    weights: list[float] | None = None
    train_tau: float | None = None
    history: list[dict] = field(default_factory=list)

    def means(self, table: np.ndarray) -> np.ndarray:
        """[variants] weighted mean score of each row of ``table`` on the subset."""
        w = np.ones(len(self.prompts)) if self.weights is None else np.asarray(self.weights)
        return table[:, self.prompts] @ w / w.sum()


def default_margin(table: np.ndarray) -> float:
    """The tie margin for a metric: the median standard error of a paired mean difference between two
    variants on all prompts. Two variants closer than that on the full set are a tie, not an order."""
    i, j = np.triu_indices(len(table), k=1)
    differences = table[i] - table[j]
    return float(np.median(differences.std(axis=1, ddof=1) / np.sqrt(table.shape[1])))


def subset_taus(table: np.ndarray, subsets: np.ndarray, margin: float) -> np.ndarray:
    """Tau between each subset's mean ranking and the full-set ranking of ``table``'s rows.

    Args:
        table: [variants, prompts] scores of the variants to rank.
        subsets: [n, k] prompt indices.
        margin: the metric's tie margin.
    """
    full = table.mean(axis=1)
    taus = np.empty(len(subsets))
    for start in range(0, len(subsets), CHUNK):
        chunk = subsets[start : start + CHUNK]
        means = table[:, chunk].mean(axis=2).T  # [chunk, variants]
        taus[start : start + CHUNK] = margin_kendall_tau(means, full, margin)
    return np.nan_to_num(taus, nan=-1.0)


def heldout_tau(table: np.ndarray, split: Split, subset: Subset, margin: float) -> float:
    """Tau of the subset's ranking of the held-out variants against their full-set ranking."""
    held = table[split.heldout]
    return float(margin_kendall_tau(subset.means(held), held.mean(axis=1), margin))


def _draw(rng: np.random.Generator, pool: np.ndarray, count: int, size: int) -> np.ndarray:
    """``count`` subsets of ``size`` distinct prompts from ``pool``."""
    rows = max(1, DRAW_FLOATS // len(pool))  # drawn in chunks: the same stream as one draw, bounded memory
    chosen = np.empty((count, size), dtype=pool.dtype)
    for start in range(0, count, rows):
        keys = rng.random((min(rows, count - start), len(pool)))
        chosen[start : start + len(keys)] = pool[np.argpartition(keys, size - 1, axis=1)[:, :size]]
    return chosen


def flasheval_search(table: np.ndarray, split: Split, margin: float, settings: SearchSettings = SearchSettings(),
                     progress: Progress = no_progress) -> Subset:
    """The published iterative search on the training variants of ``table`` [variants, prompts]."""
    n_prompts = table.shape[1]
    if not 1 <= settings.subsets <= MAX_SUBSETS:
        raise ScoreMatrixError(f"{settings.subsets} subsets per round: choose between 1 and {MAX_SUBSETS:,}.")
    if not 1 <= settings.size < n_prompts:
        raise ScoreMatrixError(f"subset size {settings.size}: choose between 1 and {n_prompts - 1} (the matrix has "
                               f"{n_prompts} prompts).")
    rng = np.random.default_rng(settings.seed)
    train = table[split.train]
    final = min(n_prompts, max(settings.size + 1, int(settings.final_pool_factor * settings.size)))
    pools = np.geomspace(n_prompts, final, settings.rounds).round().astype(int)
    pool = np.arange(n_prompts)
    best, best_tau, history = None, -np.inf, []
    advance = progress(f"FlashEval search, k={settings.size}", settings.rounds)
    for round_index, next_pool in enumerate([*pools[1:], final]):
        subsets = _draw(rng, pool, settings.subsets, settings.size)
        taus = subset_taus(train, subsets, margin)
        top = np.argsort(-taus, kind="stable")[: max(1, int(settings.keep * len(subsets)))]
        if taus[top[0]] > best_tau:
            best, best_tau = subsets[top[0]], float(taus[top[0]])
        history.append({"round": round_index, "pool": int(len(pool)), "best_tau": float(taus[top[0]]),
                        "kept_mean_tau": float(taus[top].mean())})
        votes = np.bincount(subsets[top].ravel(), minlength=n_prompts)[pool]
        pool = pool[np.argsort(-votes, kind="stable")[: max(settings.size, next_pool)]]
        advance()
    log.info("FlashEval k=%d: best training tau %.3f", settings.size, best_tau)
    return Subset("flasheval", sorted(best.tolist()), train_tau=best_tau, history=history)


def random_subsets(n_prompts: int, size: int, draws: int, seed: int) -> list[Subset]:
    rng = np.random.default_rng(seed)
    return [Subset("random", sorted(s.tolist())) for s in _draw(rng, np.arange(n_prompts), draws, size)]


def stratified_subsets(kinds: list[str], size: int, draws: int, seed: int) -> list[Subset]:
    """Random subsets with each caption kind's share of the full set (largest remainders round)."""
    rng = np.random.default_rng(seed)
    groups = {k: np.array([i for i, kind in enumerate(kinds) if kind == k]) for k in sorted(set(kinds))}
    exact = {k: size * len(g) / len(kinds) for k, g in groups.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: counts[k] - exact[k])[: size - sum(counts.values())]:
        counts[k] += 1
    subsets = []
    for _ in range(draws):
        picked = [rng.choice(g, counts[k], replace=False) for k, g in groups.items() if counts[k]]
        subsets.append(Subset("stratified", sorted(np.concatenate(picked).tolist())))
    return subsets


def anchor_points(table: np.ndarray, split: Split, size: int, seed: int = 0, iterations: int = 50) -> Subset:
    """Anchor Points: k-medoids over prompts, distance 1 - correlation of their training-variant scores."""
    train = table[split.train]
    centred = train - train.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(centred, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (centred.T @ centred) / np.outer(norms, norms)
    distance = 1 - np.nan_to_num(corr, nan=0.0)  # a prompt every variant scores alike correlates with none
    np.fill_diagonal(distance, 0.0)
    medoids = _kmedoids_plus_plus(distance, size, np.random.default_rng(seed))
    for _ in range(iterations):
        members = distance[:, medoids].argmin(axis=1)
        updated = medoids.copy()
        for c in range(size):
            cluster = np.flatnonzero(members == c)
            if len(cluster):
                updated[c] = cluster[distance[np.ix_(cluster, cluster)].sum(axis=1).argmin()]
        if np.array_equal(np.sort(updated), np.sort(medoids)):
            break
        medoids = updated
    members = distance[:, medoids].argmin(axis=1)
    weights = np.bincount(members, minlength=size).astype(float)
    order = np.argsort(medoids)
    return Subset("anchor points", medoids[order].tolist(), weights[order].clip(min=1e-9).tolist())


def _kmedoids_plus_plus(distance: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    chosen = [int(rng.integers(len(distance)))]
    nearest = distance[chosen[0]].copy()
    for _ in range(k - 1):
        weights = np.clip(nearest, 0, None) ** 2
        total = weights.sum()
        pick = int(rng.choice(len(distance), p=weights / total)) if total > 0 else \
            int(rng.choice(np.setdiff1d(np.arange(len(distance)), chosen)))
        chosen.append(pick)
        nearest = np.minimum(nearest, distance[pick])
    return np.array(chosen)


def subset_record(matrix: ScoreMatrix, metric: str, subset: Subset, split: Split, margin: float,
                  heldout: float | None, settings: SearchSettings) -> dict:
    """The JSON a search writes: the prompts (ids, texts, kinds), the taus, and what it was searched on."""
    return {"format": SUBSET_FORMAT, "metric": metric, "method": subset.method, "size": len(subset.prompts),
            "prompt_indices": subset.prompts, "weights": subset.weights,
            "prompts": [matrix.prompts[i] for i in subset.prompts],
            "train_tau": subset.train_tau, "heldout_tau": heldout, "margin": margin,
            "split": split.names(matrix.names),
            "settings": settings.__dict__, "prompt_set": matrix.provenance.get("prompt_set"),
            "history": subset.history}


RANDOM_DRAWS = 200


def search_and_record(matrix: ScoreMatrix, metric: str, settings: SearchSettings = SearchSettings(),
                      margin: float | None = None, progress: Progress = no_progress, split: Split | None = None,
                      heldout_fraction: float = 0.5) -> dict:
    """Split the variants, search on the training ones, and record the subset with its held-out tau beside
    random subsets' of the same size.

    Args:
        matrix: the scores.
        metric: which table to rank by.
        settings: the search (its seed also fixes the split).
        margin: the tie margin; default :func:`default_margin` on the training variants.
        split: the models to search on and to judge on; default a seeded random split.
        heldout_fraction: the share held out by the default split; 0 searches on every model given (a user who
            keeps their own held-out models passes only the training ones) and judges on none.
    Returns:
        The subset record (see :func:`subset_record`) with ``random_heldout_tau_mean`` / ``_std`` (None where
        nothing is held out).
    """
    table = matrix.table(metric)
    split = split or Split.random(len(table), settings.seed, heldout_fraction)
    margin = default_margin(table[split.train]) if margin is None else margin
    found = flasheval_search(table, split, margin, settings, progress)
    judged = heldout_tau(table, split, found, margin) if split.heldout else None
    record = subset_record(matrix, metric, found, split, margin, judged, settings)
    record["random_heldout_tau_mean"] = record["random_heldout_tau_std"] = None
    if split.heldout:
        randoms = [heldout_tau(table, split, s, margin)
                   for s in random_subsets(table.shape[1], settings.size, RANDOM_DRAWS, settings.seed + 1)]
        record["random_heldout_tau_mean"], record["random_heldout_tau_std"] = float(np.mean(randoms)), float(np.std(randoms))
    return record
