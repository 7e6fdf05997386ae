"""Bad input, table-driven: every case is one command line that must end in exit code 2 with one line on
stderr, no traceback and nothing written, before any model is loaded. A new command adds its cases here."""
import copy
import json
import sys
from pathlib import Path

import pytest
import torch

import effigy
from effigy import cli
from effigy.errors import CheckpointError

NAN_INF = ("nan", "inf", "-inf")
PACKAGE = Path(effigy.__file__).resolve().parent


def _reliability_fixtures(tmp):
    """The third reliability pass's fixture files (fx/ in the issue): images in foreign formats and of absurd
    sizes, damaged score files and subsets, a half-written KITTI root, a damaged zoo folder."""
    import numpy as np

    from effigy.evaluate.flasheval.matrix import ScoreMatrix
    from effigy.worlds.kitti import export_kitti
    from effigy.worlds.lidar import simulate_frame
    from tests.images import eps_bytes, other_format, strip_png

    fx = tmp / "fx"
    fx.mkdir(exist_ok=True)
    (fx / "eps_as.png").write_bytes(eps_bytes())
    for kind in ("TIFF", "GIF", "ICO"):
        (fx / f"{kind.lower()}_as.png").write_bytes(other_format(kind))
    (fx / "strip.png").write_bytes(strip_png(40_000_000, 1))
    (fx / "huge.png").write_bytes(strip_png(9000, 9000))
    (fx / "blank_line.csv").write_text("model,p1,p2\n\na,1,2\nb,3,4\nc,5,6\n")
    (fx / "twice.csv").write_text("model,prompt,score\na,1,0.5\na,1,0.6\n")
    (fx / "split_strangers.json").write_text(json.dumps({"train": ["nobody", "nothing"]}))
    (fx / "train_id.pth").write_bytes(b"not a torch file")
    (fx / "subset_lines.jsonl").write_text("no ids here\n")
    (fx / "binary.csv").write_bytes(b"model,p1,p2\n\x00\xff\xfe" * 20)
    np.savez(fx / "objects.npz", scores=np.ones((3, 4)), models=np.array([{"a": 1}, 2, 3], dtype=object))
    rng = np.random.default_rng(0)
    matrix = ScoreMatrix({"adherence": rng.random((4, 6))}, [{"name": f"v{i}"} for i in range(4)],
                         [{"id": str(i)} for i in range(6)], {"prompt_set": {"count": 6, "split": "heldout", "seed": 0}})
    matrix.save(fx / "matrix.json")
    meta = json.loads((fx / "matrix.json").read_text())
    for key in ("metrics", "provenance"):
        (fx / f"no_{key}.json").write_text(json.dumps({k: v for k, v in meta.items() if k != key}))
        (fx / f"no_{key}.safetensors").write_bytes((fx / "matrix.safetensors").read_bytes())
    (fx / "unnamed.json").write_text(json.dumps({**meta, "variants": [{"id": 1}] * 4}))
    (fx / "unnamed.safetensors").write_bytes((fx / "matrix.safetensors").read_bytes())
    (fx / "no_table.json").write_text(json.dumps({**meta, "metrics": ["adherence", "clip_score"]}))
    (fx / "no_table.safetensors").write_bytes((fx / "matrix.safetensors").read_bytes())
    subset = {"format": "effigy-flasheval-subset/1", "metric": "adherence", "prompt_indices": [0, 2],
              "prompt_set": {"count": 6, "split": "heldout", "seed": 0}}
    broken = {"count_text": {"prompt_set": {"count": "6", "split": "heldout", "seed": 0}},
              "bool_indices": {"prompt_indices": [True, False]},
              "empty_set": {"prompt_set": {}}, "prompts_text": {"prompts": "a prompt"},
              "short_weights": {"weights": [1.0]}, "text_weights": {"weights": ["1", "2"]},
              "huge_count": {"prompt_set": {"count": 10**12, "split": "heldout", "seed": 0}},
              "no_metric": {"metric": None}, "bogus_metric": {"metric": "beauty"}}
    for name, change in broken.items():
        (fx / f"subset_{name}.json").write_text(json.dumps({**subset, **change}))
    interrupted = export_kitti([simulate_frame(s) for s in (1, 2, 3)], fx / "kitti")
    (interrupted / "label_2" / "000002.txt").unlink()
    (interrupted / "ImageSets" / "train.txt").unlink()
    nan_root = export_kitti([simulate_frame(1)], fx / "kitti_nan", split="val")
    points = np.fromfile(nan_root / "velodyne" / "000000.bin", np.float32)
    points[3::4] = np.nan
    points.tofile(nan_root / "velodyne" / "000000.bin")
    empty = export_kitti([simulate_frame(1)], fx / "kitti_empty", split="val")
    (empty / "label_2" / "000000.txt").write_text("")
    (fx / "zoo").mkdir()
    (fx / "zoo" / "MANIFEST.json").write_bytes(bytes(range(256)))
    (fx / "same").mkdir()
    (fx / "same" / "a.png").write_bytes(strip_png(8, 8))
    (fx / "head.json").mkdir()
    (fx / "full").mkdir()
    (fx / "full" / "x").write_text("x")
    toy = {"Toy": {"FF-real": {"test": {"c23": {"v0": {"label": "FF-real", "frames": ["same/a.png"]}}}},
                   "FF-DF": {"test": {"c23": {"v1": {"label": "FF-DF", "frames": ["same/a.png"]}}}}}}
    (fx / "Toy.json").write_text(json.dumps(toy))  # a DeepfakeBench index with only the c23 level
    _team_layouts(fx, strip_png(8, 8))
    return fx


def _team_layouts(fx, png: bytes) -> None:
    """A team's folders broken three ways: no train split, an image that does not decode, an empty class."""
    for name, bonafide, attack in (("df", "real", "fake/sbi"), ("fas", "live", "spoof/print")):
        layouts = {f"{name}_no_train": ("test", png, png), f"{name}_undecodable": ("train", b"not a png", png),
                   f"{name}_empty_class": ("train", png, None)}
        for folder, (split, first, second) in layouts.items():
            (fx / folder / split / bonafide).mkdir(parents=True)
            (fx / folder / split / attack).mkdir(parents=True)
            (fx / folder / split / bonafide / "a.png").write_bytes(first)
            if second is not None:
                (fx / folder / split / attack / "b.png").write_bytes(second)


def _reliability_cases(tmp, fx):
    package = str(PACKAGE / "subset.json")
    cases = [(["detect", "deepfake", "eval", "--data", str(fx / "Toy.json"), "--compression", "c40"], "--compression"),
             (["detect", "deepfake", "eval", "--data", str(fx / "Toy.json"), "--root", str(tmp / "nowhere")],
              "does not exist")]
    for group in ("deepfake", "fas"):
        prefix, out = ["detect", group, "train", "--data"], ["--out", str(tmp / "trained"), "--crops"]
        name = "df" if group == "deepfake" else "fas"
        cases += [(prefix + [str(fx / f"{name}_no_train")] + out, "no train/"),
                  (prefix + [str(fx / f"{name}_undecodable")] + out, "not a readable image"),
                  (prefix + [str(fx / f"{name}_empty_class")] + out, "holds no images"),
                  (prefix + [str(fx / f"{name}_no_train"), "--target-bpcer", "0.9"] + out, "--target-bpcer")]
    cases += [
        (["detect", "fas", "train", "--data", str(fx / "fas_no_train"), "--without", "phone"], "--without"),
        (["detect", "fas", "adapt", "--data", str(fx / "fas_no_train"), "--live", str(fx / "same"), "--out",
          str(tmp / "h.safetensors")], "give one of them"),
        (["detect", "fas", "adapt", "--data", str(fx / "fas_no_train"), "--out", str(tmp / "h.safetensors")],
         "no train/"),
        (["detect", "deepfake", "eval", "--data", str(fx / "Toy.json"), "--model", str(fx / "same"), "--crops"],
         "holds no MANIFEST.json"),
        (["detect", "deepfake", "train", "--data", str(fx / "Toy.json"), "--model", "xception"], "--model"),
        (["detect", "fas", "eval", "--data", str(fx / "fas_no_train"), "--split", "test", "--domains", "dslr"],
         "no capture domain 'dslr'"),
        (["detect", "fas", "train", "--data", str(fx / "fas_no_train"), "--domains", ",,", "--out", str(tmp / "t")],
         "--domains"),
    ]
    cases += [(["detect", "deepfake", str(fx / f"{kind}_as.png")], "not a readable image")
             for kind in ("eps", "tiff", "gif", "ico")]
    cases += [
        (["detect", "deepfake", str(fx / "strip.png")], "40000000x1 pixels"),
        (["detect", "deepfake", str(fx / "huge.png")], "9000x9000 pixels"),
        (["detect", "fas", "score", str(fx / "eps_as.png")], "not a readable image"),
        (["detect", "deepfake", str(fx / "eps_as.png"), "--threshold", "nan"], "--threshold"),
        (["serve", "--threshold", "nan"], "--threshold"),
        (["serve", "--host", ""], "--host"),
        (["serve", "--replicas", "2"], "--replicas"),
        (["serve", "--workers", "0"], "--workers"),
        (["serve", "--max-wait-ms", "nan"], "--max-wait-ms"),
        (["serve", "--max-batch", "0"], "--max-batch"),
        (["serve", "--host", "no such host!"], "--host"),
        (["serve", "--client-timeout", "0"], "--client-timeout"),
        (["serve", "--client-timeout", "nan"], "--client-timeout"),
        (["detect", "fas", "adapt", "--domain", ""], "--domain"),
        (["detect", "fas", "train", "--without", "", "--out", str(tmp / "z")], "--without"),
        (["detect", "fas", "eval", "--domains", ",,,"], "--domains"),
        (["detect", "robustness", "--domains", ","], "--domains"),
        (["detect", "fas", "adapt", "--live", str(fx / "same"), "--out", str(tmp / "x.pt")], ".safetensors"),
        (["detect", "fas", "adapt", "--live", str(fx / "same"), "--out", str(fx / "head.safetensors")], "is a folder"),
        (["detect", "fas", "adapt", "--live", str(fx / "same"), "--spoof", str(fx / "same"), "--out",
          str(tmp / "h.safetensors")], "same folder"),
        (["detect", "fas", "adapt", "--live", str(fx / "same"), "--out", str(tmp / "h.safetensors"), "--shots",
          "1000", "--domain", "nosuch"], "drop them"),
        (["detect", "fas", "score", str(fx / "same" / "a.png"), "--adapted", str(tmp / "none.safetensors")],
         "are needed"),
        # FlashEval: reads are checked, nothing is written before the search
        (["flasheval", "search", "--scores", str(fx / "blank_line.csv"), "--out", str(tmp / "s.json")],
         "at least two training models"),
        (["flasheval", "search", "--scores", str(fx / "binary.csv")], "not a readable score CSV"),
        (["flasheval", "search", "--scores", str(fx / "twice.csv")], "scored twice"),
        (["flasheval", "search", "--scores", str(fx / "matrix.json"), "--heldout-fraction", "0.95"],
         "--heldout-fraction"),
        (["flasheval", "search", "--scores", str(fx / "matrix.json"), "--split", str(fx / "split_strangers.json")],
         "0 training"),
        (["flasheval", "search", "--scores", str(fx / "matrix.json"), "--split", str(tmp / "none.json")], "none.json"),
        (["flasheval", "search", "--scores", str(fx / "matrix.json"), "--split", str(fx / "train_id.pth")],
         "configs/get_score.yaml"),
        (["flasheval", "search", "--scores", str(fx / "objects.npz")], "NPZ"),
        (["flasheval", "search", "--scores", str(fx / "no_metrics.json")], "'metrics' must be"),
        (["flasheval", "search", "--scores", str(fx / "no_provenance.json")], "'provenance' must be"),
        (["flasheval", "search", "--scores", str(fx / "unnamed.json")], "each with a 'name'"),
        (["flasheval", "search", "--scores", str(fx / "no_table.json")], "no table"),
        (["flasheval", "search", "--scores", str(fx / "matrix.json"), "--subsets", "999999999999"], "--subsets"),
        (["flasheval", "search", "--scores", str(fx / "matrix.json"), "--metric", "beauty"], "not in this matrix"),
        (["flasheval", "search", "--scores", str(fx / "matrix.json"), "--out", str(tmp)], "is a folder"),
        (["flasheval", "search", "--scores", str(fx / "matrix.json"), "--out", str(tmp / "a_file" / "s.json")],
         "is a file"),
        (["flasheval", "search", "--scores", str(fx / "matrix.json"), "--out", package], "inside the installed"),
        (["flasheval", "build", "--prompts", "4", "--out", str(tmp)], "is a folder"),
        (["flasheval", "build", "--prompts", "4", "--cache", str(tmp / "a_file"), "--out", str(tmp / "m.json")],
         "--cache"),
        (["flasheval", "apply", "--subset", str(fx / "subset_count_text.json")], "prompt_set.count"),
        (["flasheval", "apply", "--subset", str(fx / "subset_huge_count.json")], "prompt_set.count"),
        (["flasheval", "apply", "--subset", str(fx / "subset_bool_indices.json")], "prompt_indices"),
        (["flasheval", "apply", "--subset", str(fx / "subset_empty_set.json")], "prompt_set.count"),
        (["flasheval", "apply", "--subset", str(fx / "subset_prompts_text.json")], "prompts, where given"),
        (["flasheval", "apply", "--subset", str(fx / "subset_short_weights.json")], "weights"),
        (["flasheval", "apply", "--subset", str(fx / "subset_text_weights.json")], "weights"),
        (["flasheval", "apply", "--subset", str(fx / "subset_no_metric.json")], "metric must"),
        (["flasheval", "apply", "--subset", str(fx / "subset_bogus_metric.json"), "--scores", str(fx / "matrix.json")],
         "not in this matrix"),
        # lidar
        (["detect3d", "eval", "--kitti", str(fx / "kitti")], "label_2/000002.txt not found"),
        (["detect3d", "eval", "--kitti", str(fx / "kitti"), "--split", "train"], "ImageSets/train.txt not found"),
        (["detect3d", "eval", "--kitti", str(fx / "kitti_nan"), "--split", "val"], "NaN or infinite"),
        (["detect3d", "eval", "--kitti", str(fx / "kitti_empty"), "--split", "val"], "no frame has a labelled"),
        (["detect3d", "simulate", "--out", str(fx / "full")], "not empty"),
        # zoo, kvquant, the commands the first suite did not reach
        (["zoo", "train", "dit-digits", "--steps", "1", "--out", str(fx / "zoo")], "MANIFEST.json"),
        (["zoo", "train", "x" * 20000, "--out", str(tmp / "z")], "unknown zoo model"),
        (["zoo", "list", "--bogus"], "No such option"),
        (["kvquant", "generate", "--prompt", "caf\udce9"], "UTF-8"),
        (["kvquant", "bench", "--prompts", "9"], "--prompts"),
        (["select-widths", "--model", str(tmp / "none"), "--allocation", str(tmp / "none.json"), "--out",
          str(tmp / "sw")], "none"),
        (["bench", "t2i-scorers", "--guidance", "-1"], "--guidance"),
    ]
    return cases


def _cases(tmp):
    a_file = tmp / "a_file"
    a_file.write_text("x")
    binary = tmp / "binary.json"
    binary.write_bytes(bytes(range(256)) * 40)
    (tmp / "empty").mkdir(exist_ok=True)
    cases = [
        # out of range, huge, wrong type
        (["bench", "quant", "--samples-per-class", "0"], "--samples-per-class"),
        (["bench", "quant", "--seed", "99999999999999999999"], "--seed"),
        (["bench", "quant", "--steps", "many"], "--steps"),
        (["bench", "quant", "--mp-candidates", "4,9"], "2..8"),
        (["bench", "quant", "--mp-max-moved", "-1"], "--mp-max-moved"),
        (["bench", "quant", "--mp-granularity", "head"], "--mp-granularity"),
        (["bench", "fastattn", "--thresholds", "0.1,x"], "--thresholds"),
        (["bench", "fastattn", "--samples-per-class", "100000"], "--samples-per-class"),
        (["bench", "kvquant", "--average-bits", "4,inf"], "finite"),
        (["bench", "kvquant", "--prompts", "9"], "--prompts"),
        (["bench", "scale", "--tokens", "", "--layer-tokens", "", "--kv-lengths", ""], "nothing to run"),
        (["bench", "scale", "--attention-tokens", "1000"], "--attention-tokens"),
        (["bench", "scale", "--attention-tokens", "10"], "--attention-tokens"),
        (["bench", "scale", "--attention-tokens", "1024", "--attention-blocks", "1"], "--attention-blocks"),
        (["bench", "scale", "--attention-tokens", "1024", "--attention-steps", "1"], "--attention-steps"),
        (["bench", "scale", "--var-depth", "1"], "--var-depth"),
        (["bench", "scale", "--kv-lengths", "0"], "--kv-lengths"),
        (["bench", "scale", "--architecture", "sd-xl"], "--architecture"),
        (["evaluate", "t2i", "--prompts", "99999999999"], "--prompts"),
        (["evaluate", "t2i", "--model", "dit-digits"], "--model"),
        (["kvquant", "generate", "--prompt", "hi", "--budget-mb", "0"], "above 0"),
        (["kvquant", "calibrate", "--budget-mb", "2", "--group-size", "0"], "--group-size"),
        (["quantize", "--recipe", "w3a3-magic", "--out", str(tmp / "q")], "unknown recipe"),
        (["quantize", "--recipe", "vidit-q-w8a8", "--widths", "4,9", "--out", str(tmp / "q")], "2..8"),
        (["quantize", "--recipe", "vidit-q-w8a8", "--widths", "8,8", "--out", str(tmp / "q")], "each bit-width once"),
        (["quantize", "--recipe", "vidit-q-w4a8-mp", "--average-bits", "9", "--out", str(tmp / "q")], "--average-bits"),
        (["quantize", "--recipe", "vidit-q-w4a8-mp", "--average-bits", "nan", "--out", str(tmp / "q")], "--average-bits"),
        (["accelerate", "--prompt-file", str(tmp / "none.txt"), "--out", str(tmp / "p.json")], "cannot read prompts"),
        (["quantize", "--recipe", "vidit-q-w8a8", "--prompt-file", str(tmp / "none.txt"), "--out", str(tmp / "q")],
         "cannot read prompts"),
        (["evaluate", "t2i", "--split", "bogus"], "--split"),
        (["zoo", "train", "dit-digits", "--steps", "0", "--out", str(tmp / "z")], "--steps"),
        (["zoo", "train", "nosuch", "--out", str(tmp / "z")], "unknown zoo model"),
        (["bench", "quant", "--average-bits", "1.5"], "outside the candidate widths"),
        (["bench", "mixdq", "--average-bits", "1.5"], "outside what the candidate widths reach"),
        (["bench", "mixdq", "--average-bits", "9"], "outside what the candidate widths reach"),
        (["bench", "mixdq", "--steps", "9"], "--steps"),
        (["bench", "lcm", "--prompts", "1"], "--prompts"),
        (["demo", "--compiled", "fp8"], "--compiled"),
        (["detect3d", "eval", "--model", "dit-digits"], "choose one of lidar-centerpoint, lidar-centerpoint-spbn"),
        (["bench", "ada3d", "--model", "lidar-centerpoint"], "choose one of lidar-ada3d, lidar-ada3d-spbn"),
        (["bench", "mixdq", "--compiled", "vidit-q-w8a8,nosuch"], "--compiled"),
        (["bench", "quant", "--crossover-batches", "0"], "--crossover-batches"),
        (["demo", "--crossover-batches", "two"], "--crossover-batches"),
        (["quantize", "--recipe", "vidit-q-w8a8", "--backend", "gpu", "--out", str(tmp / "q")], "--backend"),
        (["nosuch"], "No such command"),
        (["bench", "quant", "--bogus"], "No such option"),
        # unwritable or wrong-kind outputs
        (["quantize", "--recipe", "vidit-q-w8a8", "--out", str(a_file)], "is a file"),
        (["quantize", "--recipe", "vidit-q-w8a8", "--out", str(a_file / "sub")], "cannot be written"),
        (["bench", "kernels", "--out", str(a_file)], "cannot be written"),
        (["accelerate", "--out", str(tmp)], "is a folder"),
        (["kvquant", "calibrate", "--budget-mb", "2", "--out", str(tmp)], "is a folder"),
        (["demo", "--out", str(a_file)], "is a file"),
        (["quantize", "--recipe", "vidit-q-w8a8", "--out", str(PACKAGE / "models" / "weights")], "inside the installed"),
        (["bench", "kernels", "--out", str(PACKAGE)], "inside the installed"),
        # malformed input files
        (["quantize", "--recipe", "vidit-q-w4a8-mp", "--allocation", str(binary), "--out", str(tmp / "q")],
         "not an allocation"),
        (["kvquant", "generate", "--prompt", "hi", "--allocation", str(binary)], "allocation"),
        # FlashEval
        (["flasheval", "build", "--executor", "dask", "--out", str(tmp / "m.json")], "--executor"),
        (["flasheval", "build", "--prompts", "1", "--out", str(tmp / "m.json")], "--prompts"),
        (["flasheval", "build", "--variants", str(binary), "--out", str(tmp / "m.json")], "variant definitions"),
        (["flasheval", "search", "--scores", str(tmp / "none.csv")], "no score file"),
        (["flasheval", "search", "--scores", str(binary)], "score matrix"),
        (["flasheval", "search", "--scores", str(a_file)], "unknown score file type"),
        (["flasheval", "apply", "--subset", str(binary)], "subset"),
        (["flasheval", "apply", "--subset", str(tmp / "none.json")], "no file"),
        (["bench", "quant", "--model", "t2i-shapes", "--subset", str(tmp / "none.json")], "subset"),
        (["bench", "fastattn", "--model", "t2i-shapes", "--subset", str(binary)], "subset"),
        (["bench", "flasheval", "--scores", str(tmp / "none.json")], "no score file"),
        (["bench", "flasheval", "--scores", str(tmp / "fx" / "matrix.json"), "--metric", "no-such-metric"],
         "no-such-metric"),
        (["bench", "flasheval", "--sizes", "0"], "--sizes"),
        (["bench", "flasheval", "--scores", str(tmp / "fx" / "matrix.json"), "--subset",
          str(tmp / "fx" / "subset_lines.jsonl")], "a subset is one JSON prompt"),
        (["bench", "flasheval", "--scores", str(tmp / "fx" / "matrix.json"), "--split",
          str(tmp / "fx" / "split_strangers.json")], "0 training"),
        (["bench", "flasheval", "--splits", "0"], "--splits"),
        # LiteVAR
        (["bench", "litevar", "--recipes", "vidit-q-w8a8"], "--recipes"),
        (["bench", "litevar", "--coverages", "1.5"], "--coverages"),
        (["bench", "litevar", "--fastvar-keep", "0"], "--fastvar-keep"),
        (["accelerate", "--model", "var-digits", "--recipe", "vidit-q-w8a8", "--out", str(tmp / "p.json")], "--recipe"),
        (["accelerate", "--model", "var-digits", "--plan", str(binary), "--out", str(tmp / "p.json")], "plan"),
        (["accelerate", "--model", "var-digits", "--coverage", "0", "--out", str(tmp / "p.json")], "--coverage"),
        (["detect", "deepfake", "eval", "--data", str(tmp / "no_such_folder")], "neither"),
        (["detect", "deepfake", "eval", "--data", str(tmp), "--split", "dev"], "split"),
        (["detect", "deepfake", "eval", "--data", str(tmp)], "real/ and a fake/"),
        (["detect", "fas", "eval", "--data", str(tmp / "no_such_folder")], "live/ and spoof/"),
        (["detect", "fas", "eval", "--data", str(tmp), "--split", "dev"], "split"),
        (["detect", "deepfake", "export", "--onnx", str(tmp / "model.txt")], ".onnx"),
        (["detect", "fas", "export", "--onnx", str(tmp)], ".onnx"),
        # lidar / Ada3D
        (["bench", "ada3d", "--keeps", "0.6"], "--keeps"),
        (["bench", "ada3d", "--keeps", "0.6/1.5"], "--keeps"),
        (["bench", "ada3d", "--sweep-3d", "0,0.5"], "--sweep-3d"),
        (["bench", "ada3d", "--sweep-2d", "0.3,x"], "--sweep-2d"),
        (["bench", "ada3d", "--val-frames", "1"], "--val-frames"),
        (["detect3d", "eval", "--model", "lidar-ada3d", "--keep-2d", "0"], "--keep-2d"),
        (["detect3d", "eval", "--model", "pointpillars"], "--model"),
        (["detect3d", "eval", "--kitti", str(tmp)], "velodyne"),
        (["detect3d", "eval", "--kitti", str(tmp), "--split", "val"], "velodyne"),
        (["detect3d", "simulate", "--split", "dev", "--out", str(tmp / "k")], "--split"),
        (["zoo", "train", "lidar-ada3d", "--steps", "3", "--out", str(tmp / "z")], "--steps"),
        # face anti-spoofing
        (["detect", "fas", "eval", "--domains", "phone,dslr"], "--domains"),
        (["detect", "fas", "eval", "--model", "resnet50"], "--model"),
        (["detect", "fas", "adapt", "--adaptor", "magic"], "--adaptor"),
        (["detect", "fas", "adapt", "--domain", "dslr"], "--domain"),
        (["detect", "fas", "adapt", "--shots", "100"], "1 to 45"),
        (["bench", "fas", "--shots", "5,46"], "1 to 45"),
        (["detect", "fas", "train", "--without", "dslr", "--out", str(tmp / "z")], "--without"),
        (["bench", "fas", "--shots", "0"], "--shots"),
        (["detect", "fas", "score", str(binary)], "not a readable image"),
        (["detect", "fas", "score", str(tmp / "none.png")], "does not exist"),
        (["detect", "robustness", "--domains", "dslr"], "--domains"),
        (["bench", "robustness", "--domains", "dslr"], "--domains"),
        (["detect", "fas", "adapt", "--live", str(tmp / "none"), "--out", str(tmp / "p.safetensors")], "not a folder"),
        (["detect", "fas", "adapt", "--live", str(tmp)], "--out"),
        (["detect", "fas", "adapt", "--spoof", str(tmp), "--out", str(tmp / "p.safetensors")], "--live"),
        (["detect", "fas", "score", str(binary), "--adapted", str(tmp / "none.safetensors")], "not a readable image"),
        (["bench", "fas", "--shots", "5,x"], "--shots"),
        # deepfake detection
        (["detect", "deepfake", str(tmp / "none.png")], "does not exist"),
        (["detect", "deepfake", "score", str(tmp / "none.png")], "does not exist"),
        (["detect", "deepfake", str(binary)], "not a readable image"),
        (["detect", "deepfake", str(tmp / "empty")], "holds no images"),
        (["detect", "deepfake", str(binary), "--model", "xception"], "--model"),
        (["detect", "deepfake", str(binary), "--threshold", "2"], "--threshold"),
        (["detect", "deepfake", str(binary), "--model", "deepfake-ce", "--explain"], "--explain"),
        (["serve", "--model", "xception"], "--model"),
        (["serve", "--model", "deepfake-clip", "--explain"], "--explain"),
        (["serve", "--port", "0"], "--port"),
        (["serve", "--max-mb", "0"], "--max-mb"),
        (["serve", "--out", str(a_file)], "--out"),
    ]
    cases += _reliability_cases(tmp, _reliability_fixtures(tmp))
    for bad in NAN_INF:
        cases += [(["bench", "quant", f"--average-bits={bad}"], "finite"),
                  (["bench", "mixdq", f"--bits={bad}"], "finite"),
                  (["bench", "t2i-scorers", f"--guidance={bad}"], "--guidance"),
                  (["accelerate", f"--threshold={bad}", "--out", str(tmp / "p.json")], "--threshold"),
                  (["bench", "litevar", f"--asc-threshold={bad}"], "--asc-threshold"),
                  (["detect", "robustness", f"--epsilon={bad}"], "--epsilon"),
                  (["bench", "deepfake", f"--epsilon={bad}"], "--epsilon"),
                  (["kvquant", "generate", "--prompt", "hi", f"--budget-mb={bad}"], "--budget-mb")]
    return cases


def test_every_bad_input_is_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys):
    out = tmp_path / "work"
    out.mkdir()
    monkeypatch.chdir(tmp_path)  # a default output folder would appear here
    failures = []
    for args, expected in _cases(out):
        before = _snapshot(out)
        monkeypatch.setattr(sys, "argv", ["effigy", *args])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        err = capsys.readouterr().err.strip()
        lines = err.splitlines()
        ok = (exit_info.value.code == 2 and len(lines) == 1 and expected in err and "Traceback" not in err
              and len(err) < 400 and _snapshot(out) == before
              and not (tmp_path / "runs").exists())
        if not ok:
            failures.append(f"{' '.join(args)} -> exit {exit_info.value.code}: {err[:300]!r}")
    assert not failures, "\n".join(failures)


def _snapshot(folder):
    """Every file and folder under ``folder`` with its size and time: nothing is written, changed or left."""
    return sorted((str(p.relative_to(folder)), *((p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else ()))
                  for p in folder.rglob("*"))


def _leaf_commands():
    """Every command path that `effigy --help` and its groups list (e.g. ("detect", "fas", "adapt"))."""
    import typer

    def leaves(command, path=()):
        children = getattr(command, "commands", None)
        if not children:
            yield path
            return
        for name, child in children.items():
            yield from leaves(child, (*path, name))
    return set(leaves(typer.main.get_command(cli.app)))


def test_every_command_in_effigy_help_has_bad_input_cases(tmp_path):
    """A new command fails this test until its bad input is in the table above."""
    covered = {tuple(args[: len(path)]) for args, _ in _cases(tmp_path) for path in _leaf_commands()}
    missing = sorted(" ".join(path) for path in _leaf_commands() if path not in covered)
    assert len(_leaf_commands()) >= 35 and not missing, f"commands without bad-input cases: {missing}"


def _saved(tiny_dit, folder):
    from effigy.recipes import get_recipe

    effigy.save(effigy.quantize(copy.deepcopy(tiny_dit), get_recipe("vidit-q-w8a8")), folder)
    return folder


def _redigest(folder):
    from effigy.checkpoint.integrity import write_digest

    write_digest(folder, [p.name for p in folder.iterdir() if p.name != "checkpoint_digest.json"])


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "quantization_config.json"])
def test_a_flipped_byte_in_any_checkpoint_file_is_refused(tiny_dit, tmp_path, name):
    folder = _saved(tiny_dit, tmp_path / "ckpt")
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the checkpoint's digest"):
        effigy.load(folder)


def _rewrite_weights(folder, change):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "model.safetensors"))
    _redigest(folder)


def test_damage_behind_a_matching_digest_is_still_refused(tiny_dit, tmp_path):
    folder = _saved(tiny_dit, tmp_path / "ckpt")
    key = next(k for k in effigy.load(folder).state_dict() if k.endswith("weight_scale"))
    _rewrite_weights(folder, lambda t: t[key].view(-1)[0].fill_(float("nan")))
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        effigy.load(folder)
    folder = _saved(tiny_dit, tmp_path / "ckpt2")
    packed = next(k for k in effigy.load(folder).state_dict() if k.endswith("weight_packed"))
    _rewrite_weights(folder, lambda t: t.update({packed: t[packed].float() * 300}))
    with pytest.raises(CheckpointError, match="wrong dtype"):
        effigy.load(folder)


def test_a_binary_or_non_object_checkpoint_json_is_called_damaged(tiny_dit, tmp_path):
    folder = _saved(tiny_dit, tmp_path / "ckpt")
    for content, message in ((bytes(range(256)), "unreadable as JSON"), (b"[1, 2]", "not an object")):
        (folder / "quantization_config.json").write_bytes(content)
        _redigest(folder)
        with pytest.raises(CheckpointError, match=message):
            effigy.load(folder)


def test_a_config_asking_for_a_huge_model_is_refused_before_it_is_built(tiny_dit, tmp_path):
    import resource
    import time

    folder = _saved(tiny_dit, tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    config.update(num_layers=100, attention_head_dim=256)  # 1.3 GB of float weights, were it built for real
    (folder / "config.json").write_text(json.dumps(config))
    _redigest(folder)
    start, peak = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="missing"):
        effigy.load(folder)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000  # KiB: built on the meta device
    assert time.perf_counter() - start < 60


def test_effigys_own_float_checkpoint_is_a_model_folder_for_quantize(tiny_dit, tmp_path, monkeypatch, capsys):
    effigy.save(tiny_dit, tmp_path / "float")
    monkeypatch.setattr(sys, "argv", ["effigy", "quantize", "--model", str(tmp_path / "float"), "--recipe",
                                      "vidit-q-w8a8", "--out", str(tmp_path / "q"), "--json"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    assert (exit_info.value.code or 0) == 0, captured.err
    assert torch.isfinite(next(iter(effigy.load(tmp_path / "q").state_dict().values())).float()).all()
