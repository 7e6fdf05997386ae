"""FlashEval's search on a synthetic matrix where a few prompts carry the ranking and the rest are noise."""
import numpy as np
import pytest

from effigy.errors import ScoreMatrixError
from effigy.evaluate.flasheval import search


def synthetic(seed=0, variants=40, informative=40, noisy=460):
    rng = np.random.default_rng(seed)
    quality = np.linspace(0, 1, variants)
    good = 5 * quality[:, None] + 0.05 * rng.standard_normal((variants, informative))  # discriminative prompts
    bad = quality[:, None] + 1.0 * rng.standard_normal((variants, noisy))  # every prompt ranks, most noisily
    return np.concatenate([good, bad], axis=1), set(range(informative))


def test_the_search_finds_the_informative_prompts_and_beats_random_on_held_out_variants():
    table, informative = synthetic()
    split = search.Split.halves(len(table), seed=0)
    margin = 0.0
    found = search.flasheval_search(table, split, margin, search.SearchSettings(size=10, rounds=6, subsets=500))
    assert len(set(found.prompts)) == 10
    assert len(set(found.prompts) & informative) >= 5  # informative prompts are 8% of the pool
    held = search.heldout_tau(table, split, found, margin)
    randoms = [search.heldout_tau(table, split, s, margin) for s in search.random_subsets(table.shape[1], 10, 100, 0)]
    assert held > np.mean(randoms) + 0.2
    assert found.history[-1]["pool"] < found.history[0]["pool"] == table.shape[1]


def test_the_search_is_determined_by_its_seed():
    table, _ = synthetic(1)
    split = search.Split.halves(len(table), seed=3)
    settings = search.SearchSettings(size=8, rounds=4, subsets=200, seed=5)
    first = search.flasheval_search(table, split, 0.0, settings)
    assert first.prompts == search.flasheval_search(table, split, 0.0, settings).prompts
    other = search.flasheval_search(table, split, 0.0, search.SearchSettings(size=8, rounds=4, subsets=200, seed=6))
    assert other.prompts != first.prompts


def test_the_held_out_variants_never_reach_the_search():
    table, _ = synthetic(2)
    split = search.Split.halves(len(table), seed=0)
    assert not set(split.train) & set(split.heldout) and len(split.train) + len(split.heldout) == len(table)
    settings = search.SearchSettings(size=8, rounds=4, subsets=200)
    scrambled = table.copy()
    scrambled[split.heldout] = np.random.default_rng(9).standard_normal(scrambled[split.heldout].shape)
    assert search.flasheval_search(table, split, 0.1, settings).prompts == \
        search.flasheval_search(scrambled, split, 0.1, settings).prompts
    anchors = search.anchor_points(table, split, 8)
    assert anchors.prompts == search.anchor_points(scrambled, split, 8).prompts


def test_stratified_subsets_keep_each_kinds_share():
    kinds = ["single"] * 50 + ["relation"] * 30 + ["count"] * 20
    for subset in search.stratified_subsets(kinds, 10, 20, seed=0):
        picked = [kinds[i] for i in subset.prompts]
        assert (picked.count("single"), picked.count("relation"), picked.count("count")) == (5, 3, 2)
        assert len(set(subset.prompts)) == 10


def test_anchor_points_are_medoids_weighted_by_their_clusters():
    table, informative = synthetic(3)
    split = search.Split.halves(len(table), seed=0)
    anchors = search.anchor_points(table, split, 12)
    assert len(set(anchors.prompts)) == 12 and sum(anchors.weights) == pytest.approx(table.shape[1])
    assert set(anchors.prompts) & informative  # the correlated block forms a cluster of its own


def test_bad_sizes_and_splits_are_one_clear_error():
    table, _ = synthetic()
    split = search.Split.halves(len(table))
    with pytest.raises(ScoreMatrixError, match="subset size"):
        search.flasheval_search(table, split, 0.0, search.SearchSettings(size=table.shape[1]))
    with pytest.raises(ScoreMatrixError, match="at least four"):
        search.Split.halves(3)


def test_subsets_are_drawn_in_bounded_chunks_from_the_same_stream(monkeypatch):
    """Chunked drawing (bounded memory for any --subsets) gives the very subsets one draw would."""
    from effigy.evaluate.flasheval import search

    pool = np.arange(40) * 3
    whole = search._draw(np.random.default_rng(5), pool, 50, 7)
    monkeypatch.setattr(search, "DRAW_FLOATS", 90)  # two rows of 40 keys at a time
    assert np.array_equal(search._draw(np.random.default_rng(5), pool, 50, 7), whole)
    assert all(len(set(row)) == 7 and set(row) <= set(pool) for row in whole)
    with pytest.raises(ScoreMatrixError, match="subsets per round"):
        search.flasheval_search(np.random.default_rng(0).random((6, 30)), search.Split.halves(6), 0.0,
                                search.SearchSettings(size=5, subsets=search.MAX_SUBSETS + 1))
