"""MixDQ: the per-part integer programs against brute force, the sweep and its refusals, the activation
programme with layers kept in floating point, the BOS-aware split, and a MixDQ config's save/load."""
import copy
import itertools
import random

import pytest
import torch
from torch import nn

import effigy
from effigy.errors import QuantizationError
from effigy.mixedprec import decoupled
from effigy.mixedprec.table import SensitivityTable
from effigy.nn import QuantConfig, QuantLinear
from effigy.nn.config import FLOAT_ACTIVATION_BITS
from effigy.nn.first_token import FirstTokenSplitLinear
from effigy.recipes import MIXDQ_GROUPS, get_recipe
from effigy.recipes.mixdq import CROSS_ATTENTION_KV, without_bos_handling
from effigy.recipes.mixed_precision import config_from_group_bits


def random_table(seed: int, content: int = 4, quality: int = 3) -> tuple[SensitivityTable, dict]:
    rng = random.Random(seed)
    scores, sizes, metric = {}, {}, {}
    for part, count, widths in (("content", content, (2, 4, 8)), ("quality", quality, (4, 8))):
        for i in range(count):
            name = f"{part}{i}"
            losses = sorted((rng.random() for _ in widths), reverse=True)  # fewer bits, more loss
            scores[name] = dict(zip(widths, losses))
            sizes[name] = rng.choice((16, 32, 64))
            metric[name] = part
    table = SensitivityTable(scores, sizes, metric)
    return table, {"content": [g for g in scores if g.startswith("c")], "quality": [g for g in scores if g.startswith("q")]}


def brute_force_in_band(table: SensitivityTable, average: float, band: float):
    groups = table.groups
    best = None
    size = sum(table.sizes.values())
    for widths in itertools.product(*(sorted(table.scores[g]) for g in groups)):
        mean = sum(table.sizes[g] * b for g, b in zip(groups, widths)) / size
        if abs(mean - average) <= band + 1e-9:
            loss = sum(table.scores[g][b] for g, b in zip(groups, widths))
            if best is None or loss < best[0] - 1e-12:
                best = (loss, dict(zip(groups, widths)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_the_part_program_matches_brute_force(seed):
    table, parts = random_table(seed)
    for part, average, band in (("content", 4.0, 0.3), ("content", 3.2, 0.2), ("quality", 6.0, 0.7)):
        sub = decoupled.sub_table(table, parts[part])
        expected = brute_force_in_band(sub, average, band)
        if expected is None:
            with pytest.raises(QuantizationError):
                decoupled.allocate_in_band(sub, average, band)
            continue
        got = decoupled.allocate_in_band(sub, average, band)
        assert got.sensitivity == pytest.approx(expected[0])
        mean = sum(sub.sizes[g] * b for g, b in got.bits.items()) / sum(sub.sizes.values())
        assert abs(mean - average) <= band + 1e-9


@pytest.mark.parametrize("seed", range(4))
def test_the_activation_program_keeps_the_most_sensitive_layer_of_each_part_in_float(seed):
    table, parts = random_table(seed, content=5, quality=4)
    table = SensitivityTable({g: {b: s for b, s in row.items() if b in (4, 8)} for g, row in table.scores.items()},
                             table.sizes, table.metric)
    widths = decoupled.allocate_activations(table, parts, 6.0, fp_fraction=0.01, band=1.0)
    for groups in parts.values():
        most = max(groups, key=lambda g: table.scores[g][8])
        assert widths[most] is None and sum(widths[g] is None for g in groups) == 1
        rest = decoupled.sub_table(table, [g for g in groups if g != most])
        expected = brute_force_in_band(rest, 6.0, 1.0)
        assert sum(rest.scores[g][widths[g]] for g in rest.groups) == pytest.approx(expected[0])


def test_the_sweep_lands_the_overall_mean_in_its_band_and_refuses_unreachable_targets():
    table, parts = random_table(0, content=6, quality=4)
    points = decoupled.sweep(table, parts, "content", "quality", 5.0, band=0.2)
    assert points and len({tuple(sorted(p.bits.items())) for p in points}) == len(points)
    total = sum(table.sizes.values())
    for point in points:
        overall = sum(table.sizes[g] * b for g, b in point.bits.items()) / total
        assert abs(overall - 5.0) <= 0.2 + 1e-9
        shares = {part: sum(table.sizes[g] * point.bits[g] for g in groups) / sum(table.sizes[g] for g in groups)
                  for part, groups in parts.items()}
        assert min(abs(shares[p] - point.part_targets[p]) for p in parts) <= max(decoupled.SHARE_BANDS) + 1e-9
        content, quality = point.part_targets["content"], point.part_targets["quality"]
        assert content / quality == pytest.approx(point.ratio)
    low, high = decoupled.reachable_range(table)
    for bad in (low - 0.1, high + 0.5):
        with pytest.raises(QuantizationError, match="outside what the candidate widths reach"):
            decoupled.sweep(table, parts, "content", "quality", bad)


def _kv_outputs(model, run):
    seen = {}
    hooks = [m.register_forward_hook(lambda _m, _a, out, n=n: seen.setdefault(n, out.detach().clone()))
             for n, m in model.named_modules() if n.endswith(("attn2.to_k", "attn2.to_v", "attn1.to_k"))]
    run(model)
    for hook in hooks:
        hook.remove()
    return seen


@torch.no_grad()
def test_bos_handling_changes_only_the_first_tokens_kv_path(tiny_pixart):
    text = torch.randn(2, 5, 12)
    text[:, 0] *= 6  # a [CLS] outlier
    inputs = dict(hidden_states=torch.randn(2, 3, 8, 8), encoder_hidden_states=text, timestep=torch.tensor([10, 500]))
    run = lambda m: m(**inputs).sample
    base = get_recipe("rtn-w4a8")
    aware = effigy.quantize(copy.deepcopy(tiny_pixart), QuantConfig(**{**base.__dict__, "fp_first_token": CROSS_ATTENTION_KV}))
    plain = effigy.quantize(copy.deepcopy(tiny_pixart), base)
    fp, ours, theirs = (_kv_outputs(m, run) for m in (tiny_pixart, aware, plain))
    for name in fp:
        if "attn2" in name:
            assert isinstance(aware.get_submodule(name), FirstTokenSplitLinear)
            torch.testing.assert_close(ours[name][:, 1:], theirs[name][:, 1:], rtol=0, atol=0)
            torch.testing.assert_close(ours[name][:, 0], fp[name][:, 0], atol=2e-2, rtol=1e-2)  # fp16 weights
            assert (theirs[name][:, 0] - fp[name][:, 0]).abs().max() > (ours[name][:, 0] - fp[name][:, 0]).abs().max()
        elif name.startswith("transformer_blocks.0."):  # self-attention before any cross-attention: untouched
            torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=0)
    assert effigy.nn.quantize.weight_nbytes(aware) > effigy.nn.quantize.weight_nbytes(plain)  # the fp16 path is held
    assert without_bos_handling(aware.effigy_quant_config).fp_first_token == ()


@torch.no_grad()
def test_a_mixdq_config_with_float_activation_layers_saves_and_loads_exactly(tiny_pixart, tmp_path):
    base = get_recipe("mixdq-base-a8")
    layers = list(MIXDQ_GROUPS.of(tiny_pixart, base))
    bits = {name: MIXDQ_GROUPS.candidates(name, ())[i % 2] for i, name in enumerate(layers)}
    config = config_from_group_bits(tiny_pixart, base, MIXDQ_GROUPS, bits, "mixdq-test")
    config = QuantConfig(**{**config.__dict__, "layer_activation_bits": {layers[0]: FLOAT_ACTIVATION_BITS,
                                                                         layers[1]: 4}})
    inputs = dict(hidden_states=torch.randn(2, 3, 8, 8), encoder_hidden_states=torch.randn(2, 5, 12),
                  timestep=torch.tensor([10, 500]))
    model = effigy.quantize(copy.deepcopy(tiny_pixart), config)
    first = model.get_submodule(layers[0])
    first = first.quantized if isinstance(first, FirstTokenSplitLinear) else first
    assert isinstance(first, QuantLinear) and first.act_spec is None
    effigy.save(model, tmp_path / "q")
    loaded = effigy.load(tmp_path / "q")
    assert torch.equal(loaded(**inputs).sample, model(**inputs).sample)
    assert QuantConfig.from_dict(config.to_dict()) == config
    with pytest.raises(QuantizationError, match="weight-only"):
        QuantConfig(activation=None, layer_activation_bits={layers[0]: 4})
    with pytest.raises(QuantizationError, match="layer_activation_bits names layers"):
        effigy.quantize(copy.deepcopy(tiny_pixart), QuantConfig(layer_activation_bits={"nope": 4}))


def test_the_first_token_split_refuses_inputs_without_a_token_axis():
    split = FirstTokenSplitLinear.from_linear(nn.Linear(4, 3), QuantLinear.from_linear(
        nn.Linear(4, 3), get_recipe("rtn-w4a8").weight, None))
    with pytest.raises(QuantizationError, match="tokens"):
        split(torch.randn(2, 4))


def test_at_the_widest_candidate_the_sweep_has_one_point_every_layer_at_it():
    table, parts = random_table(2, content=6, quality=4)
    points = decoupled.sweep(table, parts, "content", "quality", 8.0)
    assert len(points) == 1 and set(points[0].bits.values()) == {8}


def test_with_one_part_the_sweep_is_one_program_at_the_target():
    table, parts = random_table(1, content=6, quality=4)
    single = {"quality": parts["content"] + parts["quality"]}
    points = decoupled.sweep(table, single, "content", "quality", 5.0, band=0.2)
    assert len(points) == 1 and points[0].ratio == 1.0 and set(points[0].part_targets) == {"quality"}


def test_the_first_token_outlier_ratio_sees_an_outlier_and_a_token_like_the_others():
    from effigy.nn.first_token import first_token_outlier_ratio

    model = nn.Sequential(nn.Linear(8, 8))
    text = torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(0))
    outlier = text.clone()
    outlier[:, 0] *= 10
    assert first_token_outlier_ratio(model, ["0"], lambda m: m(outlier)) > 5
    assert first_token_outlier_ratio(model, ["0"], lambda m: m(text)) < 2
    with pytest.raises(QuantizationError, match="never reached"):
        first_token_outlier_ratio(model, ["0"], lambda m: m(text[:, 0]))


class _TextReader(nn.Module):
    """A stand-in denoiser that takes its text mask as the ``encoder_attention_mask`` keyword, as PixArt does."""

    def __init__(self) -> None:
        super().__init__()
        self.to_k = nn.Linear(8, 8)

    def forward(self, text: torch.Tensor, encoder_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.to_k(text)


def test_the_first_token_outlier_ratio_leaves_padding_out():
    from effigy.nn.first_token import first_token_outlier_ratio

    model = _TextReader()
    text = torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(0))
    text[:, 3:] *= 0.01  # padding positions: near-zero states masked out of attention
    mask = torch.ones(4, 6)
    mask[:, 3:] = 0
    unmasked = first_token_outlier_ratio(model, ["to_k"], lambda m: m(text))
    masked = first_token_outlier_ratio(model, ["to_k"], lambda m: m(text, encoder_attention_mask=mask))
    assert unmasked > 5 and masked < 2  # an "outlier" only against the padding


def test_the_fbgemm_run_of_a_mixed_activation_recipe_narrows_every_quantized_width(monkeypatch):
    from dataclasses import replace

    from effigy.core import kernels
    from effigy.nn.config import FLOAT_ACTIVATION_BITS
    from effigy.recipes import fast_cpu_variant, get_recipe

    monkeypatch.setattr(kernels, "fbgemm_max_activation_bits", lambda: 7)  # a CPU without VNNI
    config = replace(get_recipe("mixdq-base-a8"), layer_activation_bits={"a": 8, "b": 4, "c": FLOAT_ACTIVATION_BITS})
    fast = fast_cpu_variant(config)
    assert fast.layer_activation_bits == {"a": 7, "b": 4, "c": FLOAT_ACTIVATION_BITS}
    assert fast.activation.bits == 7 and fast.name.endswith("a7-fbgemm")
