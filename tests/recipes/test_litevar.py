"""LiteVAR's recipes on a tiny VAR: the blocks' linears are packed except the MLP's second one, generation
stays close to FP (narrower further), save / load is exact, and the attention numerics go with the recipe."""
import copy

import pytest
import torch

import effigy
from effigy.attention.litevar import apply_litevar
from effigy.attention.multiscale import LiteVARPlan
from effigy.errors import QuantizationError
from effigy.memory import held_bytes
from effigy.nn import QuantLinear
from effigy.recipes import LITEVAR_RECIPES, get_recipe, litevar_attention_quant
from tests.models.test_var import tiny_tokenizer, tiny_var

LABELS = torch.tensor([0, 3, 7, 9])


def _generate(model, tokenizer):
    return model.generate(tokenizer, LABELS, guidance_scale=2.0, top_k=1, seed=1)


@torch.no_grad()
@pytest.mark.parametrize("recipe", LITEVAR_RECIPES)
def test_litevar_recipes_pack_the_blocks_and_round_trip(recipe, tmp_path):
    fp, tokenizer = tiny_var(), tiny_tokenizer()
    model = effigy.quantize(copy.deepcopy(fp), get_recipe(recipe))
    quantized = {name for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    assert quantized and all(name.startswith("blocks.") and not name.endswith("ff.2") for name in quantized)
    assert {f"blocks.0.attn.{p}" for p in ("to_q", "to_k", "to_v", "to_out.0")} | {"blocks.0.ff.0", "blocks.0.ada.1"} \
        <= quantized
    assert held_bytes(model) < held_bytes(fp)
    apply_litevar(model, LiteVARPlan.full(model), litevar_attention_quant(recipe))
    images = _generate(model, tokenizer)
    assert torch.isfinite(images).all()
    effigy.save(model, tmp_path / "q")
    loaded = effigy.load(tmp_path / "q")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    apply_litevar(loaded, LiteVARPlan.full(loaded), litevar_attention_quant(recipe))
    assert torch.equal(_generate(loaded, tokenizer), images)


@torch.no_grad()
def test_narrower_litevar_recipes_move_further_from_fp():
    fp, tokenizer = tiny_var(), tiny_tokenizer()
    reference = fp.generate(tokenizer, LABELS, guidance_scale=2.0, seed=1, top_k=1)
    logits = {}
    inputs = tokenizer.teacher_forcing_inputs(tokenizer.encode(torch.rand(4, 1, 16, 16) * 2 - 1))
    fp_logits = fp(LABELS, inputs)
    for recipe in ("litevar-w8a8", "litevar-w4a8"):
        model = effigy.quantize(copy.deepcopy(fp), get_recipe(recipe))
        logits[recipe] = (model(LABELS, inputs) - fp_logits).norm() / fp_logits.norm()
    assert logits["litevar-w8a8"] < logits["litevar-w4a8"] < 0.5
    assert reference.shape == (4, 1, 16, 16)


def test_attention_numerics_follow_the_recipe_and_other_names_are_refused():
    assert litevar_attention_quant("litevar-w6a6").qk_bits == 6
    assert litevar_attention_quant("litevar-w4a8").qk_bits == 8
    with pytest.raises(QuantizationError, match="not a LiteVAR recipe"):
        litevar_attention_quant("vidit-q-w8a8")
