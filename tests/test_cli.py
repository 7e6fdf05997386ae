import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

import effigy
from effigy import cli
from effigy.core import kernels
from effigy.recipes import get_recipe
from effigy.recipes.vidit_q import fast_cpu_variant


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["effigy", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def test_zoo_list(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "zoo", "list", "--json")
    assert code == 0
    assert {row["name"] for row in json.loads(out)} >= {"dit-digits", "digits-classifier"}


def test_bad_recipe_is_one_clear_line_not_a_traceback(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "quantize", "--recipe", "w3a3-magic", "--out", str(tmp_path))
    assert code == 2
    assert "unknown recipe 'w3a3-magic'" in err and "vidit-q-w8a8" in err
    assert "Traceback" not in err


def test_fbgemm_backend_with_8bit_activations_on_a_cpu_without_vnni(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(kernels, "cpu_has_vnni", lambda: False)
    code, _, err = run_cli(monkeypatch, capsys, "quantize", "--recipe", "vidit-q-w8a8", "--backend", "fbgemm",
                           "--out", str(tmp_path))
    assert code == 2 and "7" in err and "VNNI" in err


def test_quantize_writes_a_loadable_checkpoint(monkeypatch, capsys, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "quantize", "--recipe", "vidit-q-w8a8", "--out", str(tmp_path), "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["ratio"] < 0.4  # per-block timestep/class embedders and the final layer stay fp32
    model = effigy.load(tmp_path)
    assert sum(isinstance(m, effigy.QuantLinear) for m in model.modules()) == 42
    x = torch.randn(2, 1, 16, 16)
    assert model(x, timestep=torch.tensor([1, 2]), class_labels=torch.tensor([0, 1])).sample.shape == x.shape


def test_bench_quant_writes_json_markdown_and_grid(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "bench", "quant", "--samples-per-class", "2", "--steps", "2",
                           "--sensitivity-steps", "1", "--mp-candidates", "4,8",
                           "--no-memory", "--bootstrap-resamples", "100", "--compiled", "vidit-q-w8a8",
                           "--crossover-batches", "2", "--out", str(tmp_path))
    assert code == 0
    result = json.loads((tmp_path / "quant/dit-digits/quant_dit_digits.json").read_text())
    names = [row["variant"] for row in result["rows"]]
    assert names[:3] == ["fp32", "naive-w8a8", "vidit-q-w8a8"] and names[3].endswith("-fbgemm")
    fast_w4 = fast_cpu_variant(get_recipe("vidit-q-w4a8")).name  # a7 without VNNI, a8 with it
    assert names[4:] == ["rtn-w4a8", "vidit-q-w4a8", fast_w4, "vidit-q-w4a8-ts", "vidit-q-w4a8-mp",
                         "fp32 compiled", "vidit-q-w8a8 compiled"]
    compiled = {row["variant"]: row for row in result["rows"] if row.get("compiled")}
    assert all(row["output_error_vs_eager"] < 2e-2 and row["latency_ratio_vs_fp"] > 0 for row in compiled.values())
    assert [r["images"] for r in result["crossover"]["rows"]] == [2]
    sentence = "Compiled vidit-q-w8a8 is " + ("at least as fast" if result["crossover"]["behind_at_images"] == []
                                             else "behind")
    assert sentence in err.replace("\n", " ")  # printed under the table
    allocation = json.loads((tmp_path / "quant/dit-digits/quant_dit_digits_allocation.json").read_text())
    assert sum(allocation["table"]["sizes"].values()) * 4 >= allocation["assignment"]["total_bits"]
    assert len(allocation["assignment"]["bits"]) == 42  # one width per linear layer (the default granularity)
    assert next(r for r in result["rows"] if r["variant"] == "vidit-q-w4a8-mp")["average_weight_bits"] <= 4.0 + 1e-9
    assert "effigy bench quant" in result["command"] and result["settings"]["seed"] == 0
    assert all(row["latency_ms_per_image"] > 0 for row in result["rows"])
    regions = [0.05, 0.1, 0.15, 0.2, 0.3, None]
    assert result["settings"]["mp_around"] == "float" and result["settings"]["mp_max_moved"] == regions
    validation = allocation["validation"]  # uniform W4 (trust region 0) and each region, at seed 1
    assert [row["max_moved"] for row in validation] == [0.0] + regions and validation[0]["moved_layers"] == 0
    allowed = [row for row in validation if row["class_accuracy"] >= validation[0]["class_accuracy"] - 0.01
               and row["psnr_vs_fp"] >= validation[0]["psnr_vs_fp"] - 0.1]
    picked = min(allowed, key=lambda row: row["mean_rank"])  # the first of equals: the smallest region
    assert allocation["max_moved"] == picked["max_moved"]
    moved = sum(allocation["table"]["sizes"][g] * abs(b - 4) for g, b in allocation["assignment"]["bits"].items())
    if picked["max_moved"] is not None:  # the picked trust region holds
        assert moved <= picked["max_moved"] * sum(allocation["table"]["sizes"].values()) + 1
    report = (tmp_path / "quant/dit-digits/quant_dit_digits.md").read_text()
    assert "## Mixed precision: trust region picked on a validation run" in report
    assert "| variant |" in report
    assert "rest in FP" in report
    pairs = {(c["variant"], c["baseline"]): c["differences"] for c in result["comparisons"]}
    assert all(c["resamples"] == 100 and c["items"] == 20 for c in result["comparisons"])
    assert set(pairs) == {("vidit-q-w4a8-mp", "vidit-q-w4a8"), ("vidit-q-w8a8", "fp32"), ("vidit-q-w4a8", "fp32")}
    mp = pairs[("vidit-q-w4a8-mp", "vidit-q-w4a8")]
    assert set(mp) == {"class_accuracy", "psnr_vs_fp", "ssim_vs_fp", "fid_features"}
    rows = {row["variant"]: row for row in result["rows"]}
    assert mp["psnr_vs_fp"]["difference"] == pytest.approx(rows["vidit-q-w4a8-mp"]["psnr_vs_fp"]
                                                           - rows["vidit-q-w4a8"]["psnr_vs_fp"], abs=1e-4)
    assert mp["fid_features"]["low"] <= mp["fid_features"]["difference"] <= mp["fid_features"]["high"]
    assert "## Paired differences" in (tmp_path / "quant/dit-digits/quant_dit_digits.md").read_text()
    assert (tmp_path / "quant/dit-digits/quant_dit_digits_grid.png").stat().st_size > 0


def test_demo_writes_grid_and_report(monkeypatch, capsys, tmp_path):
    code, _, _ = run_cli(monkeypatch, capsys, "demo", "--samples-per-class", "2", "--steps", "2", "--no-memory",
                         "--compiled", "none", "--crossover-batches", "none", "--out", str(tmp_path))
    assert code == 0
    assert (tmp_path / "grid.png").exists() and (tmp_path / "results.json").exists()
    assert "vidit-q-w8a8" in (tmp_path / "report.md").read_text()


def test_quantize_w4a8_with_channel_balancing_from_the_cli(monkeypatch, capsys, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "quantize", "--recipe", "vidit-q-w4a8", "--out", str(tmp_path), "--json")
    assert code == 0
    assert json.loads(out)["ratio"] < 0.3  # 4-bit packed weights
    model = effigy.load(tmp_path)
    layer = model.transformer_blocks[0].attn1.to_q
    assert layer.weight_spec.bits == 4 and layer.input_divisor is not None


def test_accelerate_calibrates_saves_and_reloads_a_plan(monkeypatch, capsys, tmp_path):
    plan = tmp_path / "plan.json"
    args = ("accelerate", "--threshold", "0.2", "--steps", "4", "--samples-per-class", "1", "--json")
    code, out, _ = run_cli(monkeypatch, capsys, *args, "--out", str(plan))
    assert code == 0 and plan.exists()
    first = json.loads(out)
    assert 0 < first["module_fraction"] < 1 and first["psnr_vs_no_plan"] > 10
    code, out, _ = run_cli(monkeypatch, capsys, *args, "--plan", str(plan))
    assert code == 0 and json.loads(out)["module_fraction"] == pytest.approx(first["module_fraction"])
    code, _, err = run_cli(monkeypatch, capsys, "accelerate", "--plan", str(plan), "--steps", "6",
                           "--samples-per-class", "1")
    assert code == 2 and "4-step run" in err and "Traceback" not in err


def test_accelerate_composes_with_quantization(monkeypatch, capsys, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "accelerate", "--recipe", "vidit-q-w8a8", "--threshold", "0.2",
                           "--steps", "3", "--samples-per-class", "1", "--out", str(tmp_path / "p.json"), "--json")
    summary = json.loads(out)
    assert code == 0 and summary["recipe"] == "vidit-q-w8a8" and summary["module_fraction"] < 1


def test_accelerate_var_designs_a_litevar_plan_quantizes_and_reloads(monkeypatch, capsys, tmp_path):
    plan = tmp_path / "litevar.json"
    args = ("accelerate", "--model", "var-digits", "--samples-per-class", "1", "--json")
    code, out, _ = run_cli(monkeypatch, capsys, *args, "--coverage", "0.8", "--asc-threshold", "0.3",
                           "--out", str(plan))
    assert code == 0 and plan.exists()
    first = json.loads(out)
    assert first["core_fraction"] < 1 and first["kept_pairs"] < 1 and first["psnr_vs_fp"] > 5
    code, out, _ = run_cli(monkeypatch, capsys, *args, "--plan", str(plan), "--recipe", "litevar-w8a8")
    summary = json.loads(out)
    assert code == 0 and summary["recipe"] == "litevar-w8a8"
    assert summary["core_fraction"] == pytest.approx(first["core_fraction"])
    assert summary["held_bytes"] < 0.5 * summary["held_bytes_fp"]


def test_bench_litevar_writes_tables_masks_and_grid(monkeypatch, capsys, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "bench", "litevar", "--coverages", "0.9", "--recipes", "litevar-w8a8",
                           "--fastvar-keep", "0.5", "--samples-per-class", "2", "--no-memory", "--no-compare-dit",
                           "--out", str(tmp_path), "--json")
    assert code == 0
    result = json.loads(out)
    families = [r["family"] for r in result["rows"]]
    assert families == ["fp", "mdwa", "asc", "mdwa+asc", "quant", "combined", "fastvar"]
    fp, mdwa = result["rows"][0], result["rows"][1]
    assert fp["attention_core_flops_fraction"] == 1 and fp["psnr_vs_fp"] is None
    assert mdwa["attention_kept_core_fraction"] < mdwa["attention_core_flops_fraction"] == 1  # masked: every pair
    files = {Path(p).name for p in result["files"].values()}
    assert {"litevar_var_digits.md", "litevar_var_digits_grid.png", "litevar_var_digits_masks_c0.9.png"} <= files
    assert "held-out digits" in (tmp_path / "litevar" / "var-digits" / "litevar_var_digits.md").read_text()


def test_bench_fastattn_writes_tables_and_pictures(monkeypatch, capsys, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "bench", "fastattn", "--thresholds", "0.05,0.5", "--steps", "3",
                           "--samples-per-class", "1", "--no-peers", "--out", str(tmp_path), "--json")
    assert code == 0
    rows = json.loads(out)["rows"]
    assert [r["family"] for r in rows] == ["fp", "ditfastattn", "ditfastattn", "vidit-q-w8a8 + ditfastattn"]
    assert rows[2]["attention_flops_fraction"] <= rows[1]["attention_flops_fraction"] < 1
    for suffix in (".json", ".md", "_grid.png", "_plans.png"):
        assert (tmp_path / f"fastattn/dit-digits/fastattn_dit_digits{suffix}").exists()
    assert "equal quality" in (tmp_path / "fastattn/dit-digits/fastattn_dit_digits.md").read_text()


def _mixed_allocation(tmp_path):
    """The shipped digits allocation file with its layers spread over 3/4/6/8 bits (the shipped one may be
    uniform W4: the bench keeps uniform when no allocation beats it on the validation run)."""
    from pathlib import Path

    results = Path(__file__).parents[1] / "benchmarks/results/quant/dit-digits"
    shipped = json.loads((results / "quant_dit_digits_allocation.json").read_text())
    layers = sorted(shipped["assignment"]["bits"])
    shipped["assignment"]["bits"] = {name: (3, 4, 6, 8)[i % 4] for i, name in enumerate(layers)}
    path = tmp_path / "allocation.json"
    path.write_text(json.dumps(shipped))
    return path


def test_quantize_mixed_precision_from_a_saved_allocation(monkeypatch, capsys, tmp_path):
    """--allocation reuses widths without a new search (the search itself: tests/workflows/test_quantize.py)."""
    allocation = _mixed_allocation(tmp_path)
    shipped = json.loads(allocation.read_text())
    code, out, _ = run_cli(monkeypatch, capsys, "quantize", "--recipe", "vidit-q-w4a8-mp", "--allocation",
                           str(allocation), "--out", str(tmp_path / "mp"), "--json")
    assert code == 0 and json.loads(out)["recipe"] == "vidit-q-w4a8-mp"
    loaded = effigy.load(tmp_path / "mp")
    widths = {name: m.weight_spec.bits for name, m in loaded.named_modules() if isinstance(m, effigy.QuantLinear)}
    assert widths == shipped["assignment"]["bits"]
    code, _, err = run_cli(monkeypatch, capsys, "quantize", "--recipe", "vidit-q-w4a8-mp", "--allocation",
                           str(tmp_path / "nope.json"), "--out", str(tmp_path / "x"))
    assert code == 2 and "no file at" in err


def test_multiwidth_checkpoint_then_select_widths(monkeypatch, capsys, tmp_path):
    allocation = _mixed_allocation(tmp_path)
    code, _, _ = run_cli(monkeypatch, capsys, "quantize", "--recipe", "vidit-q-w4a8", "--widths", "3,4,6,8",
                         "--out", str(tmp_path / "mw"))
    assert code == 0 and (tmp_path / "mw" / "multiwidth.safetensors").exists()
    code, _, _ = run_cli(monkeypatch, capsys, "select-widths", "--model", str(tmp_path / "mw"),
                         "--allocation", str(allocation), "--out", str(tmp_path / "sel"))
    assert code == 0
    chosen = effigy.load(tmp_path / "sel")
    bits = json.loads(allocation.read_text())["assignment"]["bits"]
    for group, width in bits.items():
        layer = next(m for n, m in chosen.named_modules() if n.startswith(group) and isinstance(m, effigy.QuantLinear))
        assert layer.weight_spec.bits == width
    code, _, err = run_cli(monkeypatch, capsys, "quantize", "--recipe", "vidit-q-w4a8", "--widths", "4,9",
                           "--out", str(tmp_path / "bad"))
    assert code == 2 and "--widths" in err


def test_kvquant_generate_refuses_a_bad_allocation_file(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "alloc.json"
    bad.write_text('{"widths": [4]}')
    code, _, err = run_cli(monkeypatch, capsys, "kvquant", "generate", "--prompt", "hi", "--allocation", str(bad))
    assert code == 2 and "effigy kvquant calibrate" in err and "Traceback" not in err


@pytest.mark.slow
def test_kvquant_calibrate_then_generate_on_smollm2(monkeypatch, capsys, tmp_path):
    plan = tmp_path / "alloc.json"
    code, _, _ = run_cli(monkeypatch, capsys, "kvquant", "calibrate", "--budget-mb", "3", "--target-length", "512",
                         "--sequences", "1", "--length", "64", "--out", str(plan))
    assert code == 0 and len(json.loads(plan.read_text())["allocation"]) == 30
    code, out, err = run_cli(monkeypatch, capsys, "kvquant", "generate", "--prompt", "Count to ten.",
                             "--budget-mb", "3", "--allocation", str(plan), "--max-new-tokens", "32")
    assert code == 0 and out.strip() and "KV bytes held" in err


def test_bench_quant_and_fastattn_on_the_text_to_image_model(monkeypatch, capsys, tmp_path):
    code, _, _ = run_cli(monkeypatch, capsys, "bench", "quant", "--model", "t2i-shapes", "--samples-per-class", "2",
                         "--steps", "2", "--sensitivity-steps", "1", "--mp-candidates", "4,8", "--no-memory",
                         "--mp-granularity", "block", "--sensitivity-metric", "propagated", "--mp-around", "base",
                         "--mp-max-moved", "inf", "--bootstrap-resamples", "100", "--compiled", "none",
                         "--out", str(tmp_path), "--json")
    assert code == 0
    result = json.loads((tmp_path / "quant/t2i-shapes/quant_t2i_shapes.json").read_text())
    assert result["settings"]["mp_max_moved"] == [None] and result["settings"]["sensitivity_metric"] == "propagated"
    assert result["allocation"]["validation"] is None  # one trust region: nothing to pick
    assert result["task_metric"] == "adherence" and all("clip_score" in row for row in result["rows"])
    assert {"adherence", "clip_score", "fid_features"} <= set(result["comparisons"][0]["differences"])
    groups = json.loads((tmp_path / "quant/t2i-shapes/quant_t2i_shapes_allocation.json").read_text())["table"]["metric"]
    assert {"visual", "alignment"} == set(groups.values())  # cross-attention is scored by text alignment
    assert len(groups) == 18 and all(g.endswith(("attn1", "attn2", "ff")) for g in groups)  # 6 blocks x 3 kinds
    code, _, err = run_cli(monkeypatch, capsys, "bench", "quant", "--mp-granularity", "head", "--out", str(tmp_path))
    assert code != 0 and "--mp-granularity" in err
    code, _, err = run_cli(monkeypatch, capsys, "bench", "quant", "--mp-around", "fp16", "--out", str(tmp_path))
    assert code != 0 and "--mp-around" in err
    for bad in ("0.1,wide", "-0.1"):
        code, _, err = run_cli(monkeypatch, capsys, "bench", "quant", f"--mp-max-moved={bad}", "--out", str(tmp_path))
        assert code == 2 and "--mp-max-moved" in err and "Traceback" not in err
    code, out, _ = run_cli(monkeypatch, capsys, "bench", "fastattn", "--model", "t2i-shapes", "--thresholds", "0.3",
                           "--steps", "3", "--samples-per-class", "1", "--no-peers", "--out", str(tmp_path), "--json")
    assert code == 0 and json.loads(out)["rows"][1]["attention_flops_fraction"] < 1


def test_detect3d_simulate_writes_frames_the_kitti_reader_takes_back(monkeypatch, capsys, tmp_path):
    from effigy.worlds.kitti import import_kitti

    code, out, _ = run_cli(monkeypatch, capsys, "detect3d", "simulate", "--split", "val", "--frames", "2",
                           "--out", str(tmp_path / "kitti"))
    assert code == 0, out
    frames = import_kitti(tmp_path / "kitti", split="val")
    assert len(frames) == 2 and all(len(f.points) > 1000 and f.labels for f in frames)


def test_zoo_list_names_the_lidar_models(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "zoo", "list", "--json")
    assert {"lidar-centerpoint", "lidar-ada3d"} <= {row["name"] for row in json.loads(out)}


def test_detect_fas_eval_adapt_and_score_on_the_shipped_models(monkeypatch, capsys, tmp_path):
    from PIL import Image

    from effigy.worlds.faces import real_faces, render_capture

    code, out, _ = run_cli(monkeypatch, capsys, "detect", "fas", "eval", "--domains", "phone", "--json")
    assert code == 0
    row = json.loads(out)["rows"][0]
    assert row["domain"] == "phone" and row["trained_on"] and row["auc"] > 0.9
    assert {"apcer_print", "apcer_replay", "apcer_mask"} <= row.keys()  # ISO/IEC 30107-3: APCER per species
    assert row["apcer_worst"] == max(row["apcer_print"], row["apcer_replay"], row["apcer_mask"])
    code, out, _ = run_cli(monkeypatch, capsys, "detect", "fas", "adapt", "--model", "fas-protonet-without-webcam",
                           "--domain", "webcam", "--adaptor", "geodesic-mixup", "--shots", "5", "--json")
    assert code == 0
    rows = json.loads(out)["rows"]
    assert [r["domain"] for r in rows] == ["webcam: no adaptation", "webcam: OT geodesic mixup classifier"]
    paths = []
    for kind in ("live", "print"):
        image = render_capture(real_faces()[0], 0, kind, "phone", 0)
        paths.append(tmp_path / f"{kind}.png")
        Image.fromarray((image.transpose(1, 2, 0) * 255).astype("uint8")).save(paths[-1])
    code, out, _ = run_cli(monkeypatch, capsys, "detect", "fas", "score", *map(str, paths), "--json")
    assert code == 0
    scores = [r["p_live"] for r in json.loads(out)["rows"]]
    assert scores[0] > scores[1]


def test_zoo_list_names_the_face_models(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "zoo", "list", "--json")
    assert {"fas-protonet", "fas-protonet-without-kiosk"} <= {row["name"] for row in json.loads(out)}


def test_detect_robustness_writes_apcer_per_attack_for_passive_and_active(monkeypatch, capsys, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "detect", "robustness", "--domains", "kiosk", "--out", str(tmp_path),
                           "--json")
    assert code == 0
    result = json.loads(out)
    rows = {r["attack"]: r for r in result["rows"]}
    assert rows["live"]["metric"] == "BPCER" and rows["pgd"]["metric"] == "APCER"
    assert rows["digital replay"]["challenge-response verifier"] <= 0.1 < rows["digital replay"]["no adaptation"]
    assert (tmp_path / "robustness" / "fas-protonet" / "robustness_fas_protonet.md").exists()


def test_detect_fas_adapts_to_your_own_crops_and_scores_with_them(monkeypatch, capsys, tmp_path):
    from PIL import Image

    from effigy.worlds.faces import real_faces, render_capture, split_identities

    identities = split_identities("dev")
    for kind, folder in (("live", "live"), ("print", "spoof"), ("replay", "spoof")):
        (tmp_path / folder).mkdir(exist_ok=True)
        for i in identities[:4]:
            image = render_capture(real_faces()[i], int(i), kind, "webcam", 0)
            Image.fromarray((image.transpose(1, 2, 0) * 255).astype("uint8")).save(tmp_path / folder / f"{kind}{i}.png")
    model = "fas-protonet-without-webcam"
    code, out, _ = run_cli(monkeypatch, capsys, "detect", "fas", "adapt", "--model", model, "--adaptor",
                           "geodesic-mixup", "--live", str(tmp_path / "live"), "--spoof", str(tmp_path / "spoof"),
                           "--out", str(tmp_path / "mine.safetensors"), "--json")
    assert code == 0
    rows = {r["crops"]: r for r in json.loads(out)["rows"]}
    assert rows["live"]["count"] == 4 and rows["attack"]["count"] == 8
    assert rows["live"]["after"] - rows["attack"]["after"] > rows["live"]["before"] - rows["attack"]["before"]
    code, out, _ = run_cli(monkeypatch, capsys, "detect", "fas", "score", str(tmp_path / "live" / f"live{identities[0]}.png"),
                           "--model", model, "--adapted", str(tmp_path / "mine.safetensors"), "--json")
    assert code == 0 and 0 <= json.loads(out)["rows"][0]["p_live"] <= 1
    code, _, err = run_cli(monkeypatch, capsys, "detect", "fas", "score", str(tmp_path / "live" / f"live{identities[0]}.png"),
                           "--adapted", str(tmp_path / "mine.safetensors"))
    assert code == 2 and model in err


def test_detect_deepfake_on_a_folder_writes_one_json_line_per_image(monkeypatch, capsys, tmp_path):
    from PIL import Image

    from effigy.worlds.deepfakes import render_forgery
    from effigy.worlds.faces import real_faces, split_identities

    identities = [int(i) for i in split_identities("test")]
    for family in ("real", "sbi", "swap"):
        image, _ = render_forgery(identities[0], real_faces()[identities[0]], family, "phone", 0, 0, identities)
        Image.fromarray((image.transpose(1, 2, 0) * 255).astype("uint8")).save(tmp_path / f"{family}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    code, out, _ = run_cli(monkeypatch, capsys, "detect", "deepfake", str(tmp_path), "--json")
    assert code == 0
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert [Path(r["image"]).name for r in lines] == ["real.png", "sbi.png", "swap.png"]
    assert all(0 <= r["p_fake"] <= 1 and r["verdict"] in ("real", "fake") and r["explanation"] for r in lines)


def test_detect_deepfake_finds_the_faces_of_photos_and_says_when_there_is_none(monkeypatch, capsys, tmp_path):
    from PIL import Image
    from skimage import data

    from tests.detect.test_faces import no_face_photo

    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    no_face_photo().save(tmp_path / "fields.jpg")
    code, out, _ = run_cli(monkeypatch, capsys, "detect", "deepfake", str(tmp_path), "--json")
    assert code == 0
    rows = {Path(r["image"]).name: r for r in map(json.loads, out.strip().splitlines())}
    face = rows["astronaut.png"]
    assert face["status"] == "scored" and face["box"]["side"] > 60 and 0 <= face["p_fake"] <= 1
    assert face["verdict"] == "real"  # issue 45: a real photograph's face passes the shipped detector's threshold
    assert rows["fields.jpg"] == {"image": str(tmp_path / "fields.jpg"), "face": None, "status": "no face found",
                                  "p_fake": None, "verdict": None, "explanation": None}
    code, out, _ = run_cli(monkeypatch, capsys, "detect", "fas", "score", str(tmp_path / "fields.jpg"), "--crops",
                           "--json")
    assert code == 0 and json.loads(out)["rows"][0]["box"] is None  # --crops: the whole image is the face


def test_detect_deepfake_eval_reports_deepfakebench_metrics_on_a_teams_folder_and_json(monkeypatch, capsys, tmp_path):
    from tests.detect.deepfake.test_datasets import _save

    for i in range(2):
        _save(tmp_path / "team" / "real" / f"r{i}.png", "real", i)
        _save(tmp_path / "team" / "fake" / "swap" / f"s{i}.png", "swap", i)
    index = {"Toy": {"Toy_real": {"test": {"v0": {"label": "Toy_real", "frames": ["team/real/r0.png", "team/real/r1.png"]}}},
                     "Toy_swap": {"test": {"v1": {"label": "Toy_swap", "frames": ["team/fake/swap/s0.png"]},
                                           "v2": {"label": "Toy_swap", "frames": ["team/fake/swap/s1.png"]}}}}}
    (tmp_path / "Toy.json").write_text(json.dumps(index))
    for data, extra in ((tmp_path / "team", []), (tmp_path / "Toy.json", ["--crops"])):
        code, out, _ = run_cli(monkeypatch, capsys, "detect", "deepfake", "eval", "--data", str(data), *extra, "--json")
        assert code == 0
        report = json.loads(out)
        assert report["frames"] == 4 and report["no_face_found"] == 0 and 0 <= report["all"]["frame_auc"] <= 1
        assert set(report["methods"]) == ({"swap"} if data.is_dir() else {"Toy_swap"})


def test_detect_deepfake_explain_answers_with_the_llm(monkeypatch, capsys, tmp_path):
    from PIL import Image

    from effigy.detect.deepfake.explain import verdict_of
    from effigy.worlds.deepfakes import render_forgery
    from effigy.worlds.faces import real_faces, split_identities

    identities = [int(i) for i in split_identities("test")]
    image, _ = render_forgery(identities[2], real_faces()[identities[2]], "swap", "webcam", 0, 0, identities)
    Image.fromarray((image.transpose(1, 2, 0) * 255).astype("uint8")).save(tmp_path / "swap.png")
    code, out, _ = run_cli(monkeypatch, capsys, "detect", "deepfake", str(tmp_path / "swap.png"), "--explain", "--json")
    assert code == 0
    row = json.loads(out)
    assert verdict_of(row["explanation"]) in ("real", "fake") and len(row["explanation"]) > 10  # always a verdict


def test_flasheval_without_out_never_writes_the_committed_results(monkeypatch, capsys, tmp_path):
    """`search` reads the committed matrix by default and writes its subset under runs/, not beside it."""
    import hashlib

    committed = Path(__file__).resolve().parents[1] / "benchmarks/results/flasheval/t2i-shapes"
    copy = tmp_path / "benchmarks/results/flasheval/t2i-shapes"
    shutil.copytree(committed, copy)
    before = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in copy.rglob("*") if p.is_file()}
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "flasheval", "search", "--subsets", "10", "--rounds", "1")
    assert code == 0, err
    assert {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in copy.rglob("*") if p.is_file()} == before
    written = sorted(p.name for p in (tmp_path / "runs").rglob("*.json"))
    assert written == ["subset_adherence_50.json", "subset_clip_score_50.json"]
    code, _, err = run_cli(monkeypatch, capsys, "flasheval", "search", "--subsets", "10", "--rounds", "1", "--out",
                           str(tmp_path / "mine.json"))
    assert code == 0 and sorted(p.name for p in tmp_path.glob("mine_*.json")) == [
        "mine_adherence.json", "mine_clip_score.json"]  # one file per metric, named from --out


def test_kvquant_generate_keeps_the_text_when_the_budget_runs_out(monkeypatch, capsys):
    from effigy.kvcache.progressive import PMKVQCache

    code, out, err = run_cli(monkeypatch, capsys, "kvquant", "generate", "--prompt", "hi", "--max-new-tokens", "2000")
    assert code == 2 and "it holds 1,152" in err and not out  # refused before generating
    monkeypatch.setattr(PMKVQCache, "check_fits", lambda self, length: None)  # as before the check: fails late
    code, out, err = run_cli(monkeypatch, capsys, "kvquant", "generate", "--prompt", "hi", "--max-new-tokens", "100",
                             "--budget-mb", "0.2", "--window", "8")
    assert code == 2 and "exceed its budget" in err and len(err.strip().splitlines()) == 1
    assert len(out.strip()) > 5  # what was generated before the budget ran out


def test_serve_refuses_a_busy_port_before_saying_it_runs(monkeypatch, capsys):
    from effigy.serve.app import bind

    busy = bind("127.0.0.1", 0)
    try:
        code, _, err = run_cli(monkeypatch, capsys, "serve", "--port", str(busy.getsockname()[1]))
    finally:
        busy.close()
    assert code == 2 and "cannot listen on 127.0.0.1" in err and "running" not in err and "http://" not in err
