"""Every registered recipe, on a tiny DiT and a tiny PixArt wide enough for every kernel (128 channels):
quantizing keeps the output close, save/load is exact, and the config round-trips through its JSON.
Removable methods (DiTFastAttn) restore the model's outputs when removed."""
import copy

import pytest
import torch

import effigy
from effigy.attention import apply_ditfastattn, calibrate_plan, remove_ditfastattn
from effigy.models.generators.diffusion import sample_with_guidance, sampling_scheduler
from effigy.nn import QuantConfig, QuantLinear
from effigy.nn.first_token import FirstTokenSplitLinear
from effigy.recipes import LITEVAR_RECIPES, MIXED_PRECISION_RECIPES, RECIPES, fast_cpu_variant, get_recipe
from effigy.recipes.mixed_precision import config_from_group_bits


def _dit():
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=64, in_channels=1, out_channels=1,
                                 num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10,
                                 norm_num_groups=1).eval()


def _pixart():
    from diffusers import PixArtTransformer2DModel

    return PixArtTransformer2DModel(num_attention_heads=2, attention_head_dim=64, in_channels=3, out_channels=3,
                                    num_layers=2, cross_attention_dim=128, sample_size=8, patch_size=2,
                                    caption_channels=16, norm_num_groups=1, use_additional_conditions=False).eval()


def _sampler(model):
    """A seeded 3-step CFG run of ``model``: the calibration loop and the output the checks compare."""
    scheduler = sampling_scheduler(1000, "squaredcos_cap_v2")
    if model.config.get("num_embeds_ada_norm") == 10:
        labels = torch.tensor([1, 2])
        cond, uncond = {"class_labels": labels}, {"class_labels": torch.full_like(labels, 10)}
        shape = (2, 1, 8, 8)
    else:
        captions = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
        cond, uncond = {"encoder_hidden_states": captions}, {"encoder_hidden_states": torch.zeros_like(captions)}
        shape = (2, 3, 8, 8)
    return lambda m: sample_with_guidance(m, scheduler, shape, cond, uncond, 3, 3.0, seed=0)


MODELS = {"dit": _dit, "pixart": _pixart}


def _configs() -> list[QuantConfig]:
    configs = [get_recipe(name) for name in RECIPES if name not in LITEVAR_RECIPES]  # VAR recipes: test_litevar.py
    return configs + [fast_cpu_variant(c) for c in configs if c.activation is not None and c.activation.symmetric
                      and c.activation.granularity == "token" and c.weight.granularity != "group"]


def _relative_error(out, reference) -> float:
    return ((out - reference).norm() / reference.norm()).item()


@torch.no_grad()
@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("config", _configs(), ids=lambda c: c.name)
def test_every_recipe_quantizes_saves_and_loads_exactly(model_name, config, tmp_path):
    fp = MODELS[model_name]()
    run = _sampler(fp)
    reference = run(fp)
    model = effigy.quantize(copy.deepcopy(fp), config, run)
    assert any(isinstance(m, QuantLinear) for m in model.modules())
    out = run(model)
    assert torch.isfinite(out).all() and _relative_error(out, reference) < 0.5
    effigy.save(model, tmp_path / "ckpt")
    loaded = effigy.load(tmp_path / "ckpt")
    assert torch.equal(run(loaded), out)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert QuantConfig.from_dict(config.to_dict()) == config


@torch.no_grad()
@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("recipe", list(MIXED_PRECISION_RECIPES))
def test_every_mixed_precision_recipe_builds_per_layer_widths_that_load_exactly(model_name, recipe, tmp_path):
    fp = MODELS[model_name]()
    run = _sampler(fp)
    method = MIXED_PRECISION_RECIPES.get(recipe)
    base = get_recipe(method.base)
    layers = method.groups.of(fp, base, "layer")
    widths = {}
    for i, name in enumerate(layers):
        candidates = method.groups.candidates(name, (3, 4, 6, 8))
        widths[name] = candidates[i % len(candidates)]
    config = config_from_group_bits(fp, base, method.groups, widths, recipe)
    model = effigy.quantize(copy.deepcopy(fp), config, run)
    held_bits = {name.removesuffix(".quantized"): m.weight_spec.bits for name, m in model.named_modules()
                 if isinstance(m, QuantLinear)}  # a first-token split holds its quantized layer as .quantized
    assert held_bits == widths
    split = {name for name, m in model.named_modules() if isinstance(m, FirstTokenSplitLinear)}
    assert split == {name for name in layers if config.splits_first_token(name)}
    effigy.save(model, tmp_path / "ckpt")
    assert torch.equal(run(effigy.load(tmp_path / "ckpt")), run(model))
    assert QuantConfig.from_dict(config.to_dict()) == config


@torch.no_grad()
@pytest.mark.parametrize("model_name", MODELS)
def test_ditfastattn_removed_restores_the_outputs(model_name):
    fp = MODELS[model_name]()
    run = _sampler(fp)
    reference = run(fp)
    plan = calibrate_plan(fp, lambda: run(fp), threshold=0.5)
    apply_ditfastattn(fp, plan)
    run(fp)
    remove_ditfastattn(fp)
    assert torch.equal(run(fp), reference)


def test_one_recipe_list_flags_every_recipe_with_its_kind():
    """Every registered name, of every kind, is in RECIPE_KINDS with the kind it was registered with (never
    inferred from its name); unknown names and kinds are one clear error."""
    from effigy.errors import QuantizationError
    from effigy.recipes import RECIPE_KINDS, check_recipe_name, recipe_names, register_recipe

    assert set(RECIPE_KINDS) == set(RECIPES) | set(MIXED_PRECISION_RECIPES)
    assert recipe_names("litevar") == LITEVAR_RECIPES and recipe_names("mixed-precision") == tuple(MIXED_PRECISION_RECIPES)
    assert set(recipe_names("uniform")) == set(RECIPES) - set(LITEVAR_RECIPES)
    assert recipe_names() == tuple(RECIPE_KINDS)
    with pytest.raises(QuantizationError, match="LiteVAR recipe .*mixed-precision recipe"):
        check_recipe_name("w3a3-magic")
    with pytest.raises(QuantizationError, match="uniform or litevar"):
        register_recipe(get_recipe("vidit-q-w8a8"), kind="mixed-precision")
    with pytest.raises(QuantizationError, match="unknown recipe kind"):
        recipe_names("ternary")
