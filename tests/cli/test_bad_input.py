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
        (["bench", "scale", "--tokens", ""], "--tokens"),
        (["bench", "scale", "--kv-lengths", "0"], "--kv-lengths"),
        (["evaluate", "t2i", "--prompts", "99999999999"], "--prompts"),
        (["evaluate", "t2i", "--model", "dit-digits"], "--model"),
        (["kvquant", "generate", "--prompt", "hi", "--budget-mb", "0"], "above 0"),
        (["kvquant", "calibrate", "--budget-mb", "2", "--group-size", "0"], "--group-size"),
        (["quantize", "--recipe", "w3a3-magic", "--out", str(tmp / "q")], "unknown recipe"),
        (["quantize", "--recipe", "vidit-q-w8a8", "--widths", "4,9", "--out", str(tmp / "q")], "2..8"),
        (["quantize", "--recipe", "vidit-q-w8a8", "--widths", "8,8", "--out", str(tmp / "q")], "each bit-width once"),
        (["quantize", "--recipe", "vidit-q-w8a8", "--prompts", str(tmp / "none.txt"), "--out", str(tmp / "q")],
         "cannot read prompts"),
        (["evaluate", "t2i", "--split", "bogus"], "--split"),
        (["zoo", "train", "dit-digits", "--steps", "0", "--out", str(tmp / "z")], "--steps"),
        (["zoo", "train", "nosuch", "--out", str(tmp / "z")], "unknown zoo model"),
        (["bench", "quant", "--mp-bits", "1.5"], "outside the candidate widths"),
        (["bench", "mixdq", "--bits", "1.5"], "outside what the candidate widths reach"),
        (["bench", "mixdq", "--bits", "9"], "outside what the candidate widths reach"),
        (["bench", "mixdq", "--steps", "9"], "--steps"),
        (["bench", "lcm", "--prompts", "1"], "--prompts"),
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
        (["bench", "quant", "--model", "t2i-shapes", "--prompts", "all"], "subset:FILE"),
        (["bench", "fastattn", "--model", "t2i-shapes", "--prompts", f"subset:{binary}"], "subset"),
        (["bench", "flasheval", "--matrix", str(tmp / "none.json")], "no file"),
        (["bench", "flasheval", "--sizes", "0"], "--sizes"),
        # LiteVAR
        (["bench", "litevar", "--recipes", "vidit-q-w8a8"], "--recipes"),
        (["bench", "litevar", "--coverages", "1.5"], "--coverages"),
        (["bench", "litevar", "--fastvar-keep", "0"], "--fastvar-keep"),
        (["accelerate", "--model", "var-digits", "--recipe", "vidit-q-w8a8", "--out", str(tmp / "p.json")], "--recipe"),
        (["accelerate", "--model", "var-digits", "--plan", str(binary), "--out", str(tmp / "p.json")], "plan"),
        (["accelerate", "--model", "var-digits", "--coverage", "0", "--out", str(tmp / "p.json")], "--coverage"),
        # lidar / Ada3D
        (["bench", "ada3d", "--keeps", "0.6"], "--keeps"),
        (["bench", "ada3d", "--keeps", "0.6/1.5"], "--keeps"),
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
        (["detect", "fas", "score", str(tmp / "none.png")], "not a file"),
        (["detect", "robustness", "--domains", "dslr"], "--domains"),
        (["detect", "fas", "adapt", "--live", str(tmp / "none"), "--save", str(tmp / "p.safetensors")], "not a folder"),
        (["detect", "fas", "adapt", "--live", str(tmp)], "--save"),
        (["detect", "fas", "adapt", "--spoof", str(tmp), "--save", str(tmp / "p.safetensors")], "--live"),
        (["detect", "fas", "score", str(binary), "--adapted", str(tmp / "none.safetensors")], "not a readable image"),
        (["bench", "fas", "--shots", "5,x"], "--shots"),
        # deepfake detection
        (["detect", "deepfake", str(tmp / "none.png")], "does not exist"),
        (["detect", "deepfake", str(binary)], "not a readable image"),
        (["detect", "deepfake", str(tmp / "empty")], "holds no images"),
        (["detect", "deepfake", str(binary), "--model", "xception"], "--model"),
        (["detect", "deepfake", str(binary), "--threshold", "2"], "--threshold"),
        (["detect", "deepfake", str(binary), "--model", "deepfake-ce", "--explain"], "--explain"),
        (["serve", "--model", "xception"], "--model"),
        (["serve", "--model", "deepfake-clip", "--explain"], "--explain"),
        (["serve", "--port", "0"], "--port"),
        (["serve", "--max-mb", "0"], "--max-mb"),
        (["serve", "--save-dir", str(a_file)], "--save-dir"),
    ]
    for bad in NAN_INF:
        cases += [(["bench", "quant", f"--mp-bits={bad}"], "finite"),
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
        before = sorted(p.name for p in out.iterdir())
        monkeypatch.setattr(sys, "argv", ["effigy", *args])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        err = capsys.readouterr().err.strip()
        lines = err.splitlines()
        ok = (exit_info.value.code == 2 and len(lines) == 1 and expected in err and "Traceback" not in err
              and len(err) < 400 and sorted(p.name for p in out.iterdir()) == before
              and not (tmp_path / "runs").exists())
        if not ok:
            failures.append(f"{' '.join(args)} -> exit {exit_info.value.code}: {err[:300]!r}")
    assert not failures, "\n".join(failures)


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
