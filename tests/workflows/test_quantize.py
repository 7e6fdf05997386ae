"""``effigy quantize --model DIR`` on local diffusers folders written here: whole pipelines (their
transformer quantized, calibrated by running the pipeline) and bare transformer folders."""
import json

import pytest
import torch

import effigy
from effigy.nn import QuantLinear
from effigy.workflows.quantize import EVERYDAY_CAPTIONS, quantization_source
from tests.test_cli import run_cli


def _quantize_cli(monkeypatch, capsys, *args):
    return run_cli(monkeypatch, capsys, "quantize", *args, "--json")


def _balanced(model) -> bool:
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    return bool(layers) and all(m.input_divisor is not None and not torch.equal(m.input_divisor, torch.ones_like(
        m.input_divisor)) for m in layers)


@pytest.mark.parametrize("folder", ["dit_pipeline_folder", "pixart_pipeline_folder"])
def test_quantize_a_pipeline_folder_calibrates_by_running_the_pipeline(request, folder, monkeypatch, capsys, tmp_path):
    path = request.getfixturevalue(folder)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\nblue square on the left\n" if "pixart" in folder else "3\n7\n")
    code, out, err = _quantize_cli(monkeypatch, capsys, "--model", str(path), "--recipe", "vidit-q-w4a8",
                                   "--prompt-file", str(prompts), "--out", str(tmp_path / "q"))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["held_bytes"] < summary["fp32_held_bytes"]
    loaded = effigy.load(tmp_path / "q")
    assert type(loaded).__name__ == json.loads((path / "transformer" / "config.json").read_text())["_class_name"]
    assert _balanced(loaded)  # channel-balancing divisors came from the pipeline's calibration runs


def test_pipeline_calibration_runs_the_given_prompts_and_puts_the_transformer_back(pixart_pipeline_folder):
    source = quantization_source(str(pixart_pipeline_folder), ["a red circle", "blue square", "green triangle"], steps=2)
    seen = []
    original = source.pipeline.transformer
    stand_in = type(original).from_config(original.config).eval()
    stand_in.register_forward_pre_hook(lambda module, args, kwargs: seen.append(args[0].shape[0]),
                                       with_kwargs=True)
    source.calibrate(stand_in)
    assert seen == [6, 6]  # one run (3 prompts, batches of 4) of 2 steps; classifier-free guidance doubles the batch
    assert source.pipeline.transformer is original
    default = quantization_source(str(pixart_pipeline_folder), None, steps=2)
    seen.clear()
    default.calibrate(stand_in)
    assert sum(seen) == 2 * 2 * len(EVERYDAY_CAPTIONS)  # every built-in caption, 2 steps, CFG


def test_a_bare_text_transformer_folder_names_the_remedy(pixart_pipeline_folder, monkeypatch, capsys, tmp_path):
    args = ("--model", str(pixart_pipeline_folder / "transformer"), "--out", str(tmp_path / "q"))
    code, _, err = _quantize_cli(monkeypatch, capsys, *args, "--recipe", "vidit-q-w4a8")
    assert code == 2 and "pass the pipeline folder" in err and "Traceback" not in err
    code, out, _ = _quantize_cli(monkeypatch, capsys, *args, "--recipe", "vidit-q-w8a8")  # needs no calibration
    assert code == 0 and json.loads(out)["recipe"] == "vidit-q-w8a8"


def test_pickled_pipeline_components_and_empty_prompt_files_are_refused(pixart_pipeline_folder, monkeypatch, capsys,
                                                                        tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    code, _, err = _quantize_cli(monkeypatch, capsys, "--model", str(pixart_pipeline_folder), "--recipe",
                                 "vidit-q-w8a8", "--prompt-file", str(empty), "--out", str(tmp_path / "q"))
    assert code == 2 and "holds no prompts" in err
    vae = pixart_pipeline_folder / "vae"
    for weights in vae.glob("*.safetensors"):
        weights.unlink()
    (vae / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04not really")
    code, _, err = _quantize_cli(monkeypatch, capsys, "--model", str(pixart_pipeline_folder), "--recipe",
                                 "vidit-q-w8a8", "--out", str(tmp_path / "q"))
    assert code == 2 and "refuses pickles" in err


@torch.no_grad()
def test_the_shipped_text_to_image_model_quantizes_calibrated_and_loads_back_exactly(monkeypatch, capsys, tmp_path):
    from effigy.recipes import get_recipe
    from effigy.workflows.quantize import calibration_loop

    code, out, err = _quantize_cli(monkeypatch, capsys, "--model", "t2i-shapes", "--recipe", "vidit-q-w8a8", "--out",
                                   str(tmp_path / "q"))
    assert code == 0, err
    loaded = effigy.load(tmp_path / "q")  # PixArtWithPooledText: effigy's own registered model class
    source = quantization_source("t2i-shapes")
    quantized = effigy.quantize(source.model, get_recipe("vidit-q-w8a8"))
    g = torch.Generator().manual_seed(0)
    call = dict(hidden_states=torch.randn(2, 3, 16, 16, generator=g), encoder_hidden_states=torch.randn(2, 5, 384,
                generator=g), timestep=torch.tensor([10, 700]), added_cond_kwargs={"resolution": None,
                                                                                    "aspect_ratio": None})
    assert torch.equal(loaded(**call).sample, quantized(**call).sample)
    assert calibration_loop(source, get_recipe("vidit-q-w4a8")) is source.calibrate  # its suite's own prompts


def test_a_pipeline_whose_component_cannot_load_is_one_clear_error(pixart_pipeline_folder, monkeypatch, capsys,
                                                                     tmp_path):
    (pixart_pipeline_folder / "tokenizer" / "tokenizer.json").write_text('{"model": {"type": "Unigram", "vocab": 3}}')
    code, _, err = _quantize_cli(monkeypatch, capsys, "--model", str(pixart_pipeline_folder), "--recipe",
                                 "vidit-q-w8a8", "--out", str(tmp_path / "q"))
    assert code == 2 and "could not load the pipeline" in err and "Traceback" not in err
    assert "Loading pipeline components" not in err  # no third-party progress bar in the output


@pytest.mark.parametrize("recipe, average", [("vidit-q-w4a8-mp", 4.0), ("mixdq-w4a8", 4.0)])
def test_a_mixed_precision_recipe_searches_the_widths_on_a_pipeline_folder(pixart_pipeline_folder, recipe, average,
                                                                           monkeypatch, capsys, tmp_path):
    from effigy.recipes.mixed_precision import MIXED_PRECISION_RECIPES, config_from_allocation_file

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\nblue square on the left\ngreen triangle\na blue circle right of a red square\n")
    code, out, err = _quantize_cli(monkeypatch, capsys, "--model", str(pixart_pipeline_folder), "--recipe", recipe,
                                   "--prompt-file", str(prompts), "--out", str(tmp_path / "q"))
    assert code == 0, err
    search = json.loads(out)["search"]
    groups = MIXED_PRECISION_RECIPES.get(recipe).groups
    record = json.loads((tmp_path / "q" / "allocation.json").read_text())
    if "mixdq" in recipe:  # the sweep tried several allocations and kept the one nearest FP on the validation run
        assert len({tuple(sorted(p["bits"].items())) for p in record["sweep"]}) > 1
        assert record["sweep"][record["chosen"]]["mse_vs_fp"] == min(p["mse_vs_fp"] for p in record["sweep"])
    else:  # trust regions: mixed candidates beside the uniform base, judged on the validation run
        assert record["validation"][0]["moved_layers"] == 0 and max(r["moved_layers"] for r in record["validation"]) > 0
    assert all(b in groups.candidates(n, (3, 4, 6, 8)) for n, b in search["layer_bits"].items())
    assert search["average_bits"] == pytest.approx(average, abs=0.05)
    assert set(search["metric_per_group"].values()) == ({"content", "quality"} if "mixdq" in recipe
                                                        else {"visual", "alignment"})
    assert search["measured"]["chosen"]
    loaded = effigy.load(tmp_path / "q")
    widths = {n: m.weight_spec.bits for n, m in loaded.named_modules() if isinstance(m, QuantLinear)}
    assert widths == search["layer_bits"]
    # the record beside the checkpoint rebuilds the same widths with no new search (effigy quantize --allocation)
    float_model = quantization_source(str(pixart_pipeline_folder)).model
    again = config_from_allocation_file(float_model, recipe, tmp_path / "q" / "allocation.json")
    assert again.layer_bits == search["layer_bits"]


def test_the_search_needs_the_pipeline_not_a_bare_transformer(pixart_pipeline_folder, monkeypatch, capsys, tmp_path):
    code, _, err = _quantize_cli(monkeypatch, capsys, "--model", str(pixart_pipeline_folder / "transformer"),
                                 "--recipe", "vidit-q-w4a8-mp", "--out", str(tmp_path / "q"))
    assert code == 2 and "without its pipeline" in err and "Traceback" not in err


def test_the_old_prompts_spelling_still_works_with_one_deprecation_line(pixart_pipeline_folder, monkeypatch, capsys,
                                                                        tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    code, out, err = _quantize_cli(monkeypatch, capsys, "--model", str(pixart_pipeline_folder), "--recipe",
                                   "vidit-q-w4a8", "--prompts", str(prompts), "--out", str(tmp_path / "q"))
    assert code == 0 and json.loads(out)["recipe"] == "vidit-q-w4a8"
    assert err.count("deprecated") == 1 and "--prompt-file" in err


def test_a_recipe_that_cannot_fit_the_model_is_one_clear_line(pixart_pipeline_folder, monkeypatch, capsys, tmp_path):
    # mixdq-w3.66a16 quantizes weights in groups of 128 input channels; the tiny pipeline's layers have 16
    code, _, err = _quantize_cli(monkeypatch, capsys, "--model", str(pixart_pipeline_folder), "--recipe",
                                 "mixdq-w3.66a16", "--out", str(tmp_path / "q"))
    assert code == 2 and "group_size=128 does not divide in_features=16" in err and len(err.splitlines()) == 1
