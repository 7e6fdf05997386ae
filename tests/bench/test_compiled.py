"""The shipped-model benches' compiled rows: FP and the chosen recipes through effigy.compile, checked against
their eager models and timed beside the eager FP; the crossover section's batches; dynamo's recompile limit."""
import copy

import torch

import effigy
from effigy.bench.compiled import compiled_rows, crossover, crossover_sentence
from effigy.bench.variants import Variant
from effigy.evaluate.measure import no_progress
from effigy.memory import held_bytes
from effigy.recipes import get_recipe
from tests.recipes.test_conformance import _dit


def _call(n: int) -> dict:
    g = torch.Generator().manual_seed(n)
    return {"hidden_states": torch.randn(n, 1, 8, 8, generator=g), "timestep": torch.full((n,), 500),
            "class_labels": torch.arange(n) % 10}


def _variants():
    torch.manual_seed(0)
    fp = _dit()
    w8a8 = effigy.quantize(copy.deepcopy(fp), get_recipe("vidit-q-w8a8"), calib_loop=lambda m: m(**_call(4)))
    return [Variant("fp32", fp), Variant("vidit-q-w8a8", w8a8, get_recipe("vidit-q-w8a8")),
            Variant("rtn-w4a8", fp)]


@torch.no_grad()
def test_compiled_rows_match_their_eager_models_and_leave_the_eager_rows_as_they_were():
    variants = _variants()
    eager_backend = {m.backend for m in variants[1].model.modules() if hasattr(m, "backend")}
    run = lambda model: model(**_call(4)).sample  # noqa: E731 (a "sampling run" of 4 images)
    rows = [v.row for v in compiled_rows(variants, ("vidit-q-w8a8",), {"latency_ms_per_image": run}, _call(2), 1,
                                         no_progress)]
    assert [r["variant"] for r in rows] == ["fp32 compiled", "vidit-q-w8a8 compiled"]  # rtn-w4a8 was not asked for
    fp_row, w8_row = rows
    assert fp_row["output_error_vs_eager"] < 1e-4 and w8_row["output_error_vs_eager"] < 2e-2
    assert w8_row["held_bytes"] == held_bytes(variants[1].model) < fp_row["held_bytes"]
    assert fp_row["backend"] == "float" and w8_row["backend"] in ("graph-int8", "reference", "int", "fbgemm")
    assert {m.backend for m in variants[1].model.modules() if hasattr(m, "backend")} == eager_backend
    assert fp_row["latency_ratio_vs_fp_compiled"] == 1.0
    for row in rows:
        assert row["compiled"] and row["first_call_s"] > 0 and row["latency_ms_per_image"] > 0
        assert row["latency_ratio_vs_fp"] > 0


@torch.no_grad()
def test_crossover_times_each_batch_and_splits_them_into_ahead_and_behind():
    fp, w8a8 = (v.model for v in _variants()[:2])
    section = crossover(fp, w8a8, _call, "vidit-q-w8a8", no_progress, batches=(1, 3), repeats=1)
    assert [r["images"] for r in section["rows"]] == [1, 3]
    assert sorted(section["at_least_fp_compiled_at_images"] + section["behind_at_images"]) == [1, 3]
    for row in section["rows"]:
        ratio = row["fp32 compiled ms"] / row["vidit-q-w8a8 compiled ms"]
        assert abs(row["speedup_vs_fp_compiled"] - ratio) < 1e-9
        assert (row["images"] in section["at_least_fp_compiled_at_images"]) == (ratio >= 1)


def test_crossover_sentence_names_the_batches_in_each_case():
    def section(ahead, behind):
        return {"variant": "w", "at_least_fp_compiled_at_images": ahead, "behind_at_images": behind}

    assert "at every batch measured (2, 8 images)" in crossover_sentence(section([2, 8], []))
    assert "behind compiled FP at every batch" in crossover_sentence(section([], [2, 8]))
    mixed = crossover_sentence(section([2], [8, 32]))
    assert "at 2 images per call and behind it at 8, 32" in mixed


@torch.no_grad()
def test_a_compiled_model_stays_compiled_past_dynamos_default_recompile_limit():
    """Dynamo compiles at most 8 graphs per code object by default and then silently runs eagerly; every model of
    a class shares one: a compiled model raises the limit during its calls."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    model = effigy.compile(torch.nn.Linear(4, 4), dynamic=False)
    counters.clear()
    for rows in range(1, 11):  # ten shapes: ten graphs
        model(torch.randn(rows, 4))
    assert counters["stats"]["unique_graphs"] == 10
